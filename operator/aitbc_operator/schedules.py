"""Cron schedules as the operator runs them (no CronJob): pure, with ``now`` passed in.

A schedule is read in its time zone (zoneinfo; cronsim handles the days a zone skips or repeats an hour) and every
slot is handled in UTC. Missed slots are skipped, not caught up in a burst: :func:`due_slot` is the latest slot that
has come and is later than the last one handled, so an operator that was down for three slots runs one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

#: The macros CronJob accepts (robfig/cron's table), which cronsim does not read.
MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
          "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}


def _cron(schedule: str, start: datetime, *, reverse: bool = False) -> CronSim:
    return CronSim(MACROS.get(schedule, schedule), start, reverse=reverse)


def check(schedule: str) -> str:
    """``schedule`` itself, or ValueError naming what cronsim found wrong in it."""
    try:
        _cron(schedule, datetime(2026, 1, 1))
    except CronSimError as exc:
        raise ValueError(f"schedule {schedule!r}: {exc}") from None
    return schedule


def _local(now: datetime, time_zone: str) -> datetime:
    return now.astimezone(ZoneInfo(time_zone)).replace(microsecond=0)


def next_slot(schedule: str, time_zone: str, now: datetime) -> datetime:
    """The first slot after ``now`` (UTC)."""
    return next(iter(_cron(schedule, _local(now, time_zone)))).astimezone(UTC)


def previous_slot(schedule: str, time_zone: str, now: datetime) -> datetime:
    """The latest slot at or before ``now`` (UTC). cronsim's reverse iteration starts strictly before its start
    time, and slots fall on whole minutes: one second later includes a slot at exactly ``now``."""
    return next(iter(_cron(schedule, _local(now, time_zone) + timedelta(seconds=1), reverse=True))).astimezone(UTC)


def due_slot(schedule: str, time_zone: str, last: datetime | None, now: datetime) -> datetime | None:
    """The slot to run now, if any: the latest one at or before ``now`` that is later than ``last``.

    ``last`` None (a schedule seen for the first time) runs nothing: the schedule starts from now.
    """
    if last is None:
        return None
    slot = previous_slot(schedule, time_zone, now)
    return slot if slot > last else None

