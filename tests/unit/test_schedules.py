"""Cron schedules with a frozen clock: slots in time zones, missed slots skipped, a first sight runs nothing."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from aitbc_operator.schedules import check, due_slot, next_slot, previous_slot


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("schedule", "zone", "now", "previous", "following"), [
    ("0 2 * * *", "UTC", "2026-12-01 12:00", "2026-12-01 02:00", "2026-12-02 02:00"),
    ("0 2 * * *", "UTC", "2026-12-01 02:00", "2026-12-01 02:00", "2026-12-02 02:00"),  # a slot exactly now is due
    ("0 2 * * *", "Europe/Berlin", "2026-12-01 12:00", "2026-12-01 01:00", "2026-12-02 01:00"),  # CET = UTC+1
    ("0 2 * * *", "Europe/Berlin", "2026-07-01 12:00", "2026-07-01 00:00", "2026-07-02 00:00"),  # CEST = UTC+2
    ("*/15 * * * *", "UTC", "2026-12-01 10:07", "2026-12-01 10:00", "2026-12-01 10:15"),
    ("30 4 1 * *", "UTC", "2026-12-01 10:07", "2026-12-01 04:30", "2027-01-01 04:30"),
    ("@daily", "UTC", "2026-12-01 10:07", "2026-12-01 00:00", "2026-12-02 00:00"),  # CronJob's macros
    ("@hourly", "UTC", "2026-12-01 10:07", "2026-12-01 10:00", "2026-12-01 11:00"),
    ("@weekly", "UTC", "2026-12-01 10:07", "2026-11-29 00:00", "2026-12-06 00:00"),  # Sundays
])
def test_slots(schedule: str, zone: str, now: str, previous: str, following: str) -> None:
    assert previous_slot(schedule, zone, at(now)) == at(previous)
    assert next_slot(schedule, zone, at(now)) == at(following)


def test_the_night_berlin_skips_two_oclock_runs_at_three() -> None:
    """2026-03-29: clocks go from 02:00 to 03:00 CET->CEST; cronsim runs the 02:00 job at the first time after."""
    assert next_slot("0 2 * * *", "Europe/Berlin", at("2026-03-28 12:00")) == at("2026-03-29 01:00")


@pytest.mark.parametrize(("last", "now", "due"), [
    (None, "2026-12-01 12:00", None),  # first sight: the schedule starts now, nothing runs
    ("2026-12-01 02:00", "2026-12-01 12:00", None),  # today's slot ran
    ("2026-11-30 02:00", "2026-12-01 12:00", "2026-12-01 02:00"),  # today's slot is due
    ("2026-11-27 02:00", "2026-12-01 12:00", "2026-12-01 02:00"),  # three missed: only the latest runs
])
def test_due_slot_skips_missed_slots(last: str | None, now: str, due: str | None) -> None:
    assert due_slot("0 2 * * *", "UTC", at(last) if last else None, at(now)) == (at(due) if due else None)


@pytest.mark.parametrize("schedule", ["61 * * * *", "* * * *", "@fortnightly", "0 0 30 2 *x"])
def test_schedules_cronsim_refuses_name_the_schedule(schedule: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"schedule '{schedule}'")):
        check(schedule)
