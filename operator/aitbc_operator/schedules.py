"""Cron schedules as the operator runs them (no CronJob): pure, with ``now`` passed in.

A schedule is read in its time zone (zoneinfo; cronsim handles the days a zone skips or repeats an hour) and every
slot is handled in UTC. Missed slots are skipped, not caught up in a burst: :func:`due_slot` is the latest slot that
has come and is later than the last one handled, so an operator that was down for three slots runs one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim


def _local(now: datetime, time_zone: str) -> datetime:
    return now.astimezone(ZoneInfo(time_zone)).replace(microsecond=0)


def next_slot(schedule: str, time_zone: str, now: datetime) -> datetime:
    """The first slot after ``now`` (UTC)."""
    return next(iter(CronSim(schedule, _local(now, time_zone)))).astimezone(UTC)


def previous_slot(schedule: str, time_zone: str, now: datetime) -> datetime:
    """The latest slot at or before ``now`` (UTC). cronsim's reverse iteration starts strictly before its start
    time, and slots fall on whole minutes: one second later includes a slot at exactly ``now``."""
    return next(iter(CronSim(schedule, _local(now, time_zone) + timedelta(seconds=1), reverse=True))).astimezone(UTC)


def due_slot(schedule: str, time_zone: str, last: datetime | None, now: datetime) -> datetime | None:
    """The slot to run now, if any: the latest one at or before ``now`` that is later than ``last``.

    ``last`` None (a schedule seen for the first time) runs nothing: the schedule starts from now.
    """
    if last is None:
        return None
    slot = previous_slot(schedule, time_zone, now)
    return slot if slot > last else None

