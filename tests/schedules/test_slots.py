"""A schedule's slots: crontabs evaluated in their own time zone, once per wall-clock time across daylight-saving
changes (or at every real hour for a crontab that runs every hour), and intervals."""
from datetime import UTC, datetime, timedelta

import pytest

from apps.schedules.slots import Crontab, Interval


def walk(crontab: Crontab, start: datetime, count: int) -> list[str]:
    """The next `count` slots after `start`, as wall-clock times with their offset in the crontab's zone."""
    slots, moment = [], start
    for _ in range(count):
        moment = crontab.next_after(moment)
        slots.append(moment.astimezone(crontab.zone).strftime("%m-%d %H:%M%z"))
    return slots


def test_a_daily_time_the_spring_forward_skips_runs_once_at_the_jump():
    # Europe/Paris jumps from 02:00 CET to 03:00 CEST on 2026-03-29: 02:30 does not exist that night
    crontab = Crontab.parse(minute="30", hour="2", zone="Europe/Paris")
    assert walk(crontab, datetime(2026, 3, 27, 12, tzinfo=UTC), 4) == [
        "03-28 02:30+0100", "03-29 03:00+0200", "03-30 02:30+0200", "03-31 02:30+0200"]


def test_a_daily_time_the_fall_back_repeats_runs_once_at_its_first_occurrence():
    # 2026-10-25: 03:00 CEST becomes 02:00 CET, so 02:30 happens twice
    crontab = Crontab.parse(minute="30", hour="2", zone="Europe/Paris")
    assert walk(crontab, datetime(2026, 10, 23, 12, tzinfo=UTC), 3) == [
        "10-24 02:30+0200", "10-25 02:30+0200", "10-26 02:30+0100"]


def test_an_every_hour_crontab_keeps_its_real_time_pace_through_both_changes():
    crontab = Crontab.parse(minute="0", zone="America/New_York")
    # 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:00 happens twice and both are a real hour apart
    assert walk(crontab, datetime(2026, 11, 1, 4, 30, tzinfo=UTC), 4) == [
        "11-01 01:00-0400", "11-01 01:00-0500", "11-01 02:00-0500", "11-01 03:00-0500"]
    # 2026-03-08: 02:00 EST becomes 03:00 EDT; no 02:00, and nothing is missed in real time
    assert walk(crontab, datetime(2026, 3, 8, 5, 30, tzinfo=UTC), 3) == [
        "03-08 01:00-0500", "03-08 03:00-0400", "03-08 04:00-0400"]


def test_days_of_week_and_month_are_those_of_the_crontabs_zone():
    # Mondays at 00:15 in Tokyo are Sundays at 15:15 UTC
    crontab = Crontab.parse(minute="15", hour="0", day_of_week="mon", zone="Asia/Tokyo")
    slot = crontab.next_after(datetime(2026, 12, 1, tzinfo=UTC))
    assert slot == datetime(2026, 12, 6, 15, 15, tzinfo=UTC)
    assert Crontab.parse(minute="0", hour="0", day_of_month="29", month_of_year="2", zone="UTC").next_after(
        datetime(2026, 3, 1, tzinfo=UTC)) == datetime(2028, 2, 29, tzinfo=UTC)


def test_the_previous_slot_is_the_latest_at_or_before_a_moment():
    crontab = Crontab.parse(minute="*/15", zone="Europe/Paris")
    assert crontab.previous_at(datetime(2026, 3, 29, 0, 59, tzinfo=UTC)) == datetime(2026, 3, 29, 0, 45, tzinfo=UTC)
    assert crontab.previous_at(datetime(2026, 3, 29, 1, 0, tzinfo=UTC)) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


def test_a_crontab_field_celery_cannot_read_is_refused():
    with pytest.raises(ValueError):
        Crontab.parse(minute="61")


def test_an_intervals_slots_count_from_its_start():
    interval = Interval(start=datetime(2026, 1, 1, tzinfo=UTC), period=timedelta(seconds=7))
    assert interval.next_after(datetime(2025, 1, 1, tzinfo=UTC)) == interval.start
    assert interval.next_after(datetime(2026, 1, 1, 0, 0, 7, tzinfo=UTC)) == datetime(2026, 1, 1, 0, 0, 14, tzinfo=UTC)
    assert interval.previous_at(datetime(2026, 1, 1, 0, 0, 13, tzinfo=UTC)) == datetime(2026, 1, 1, 0, 0, 7,
                                                                                          tzinfo=UTC)
    assert interval.previous_at(datetime(2025, 12, 31, tzinfo=UTC)) is None
