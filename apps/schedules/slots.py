"""When a schedule is due: its slots, the instants it should make a job at.

An interval's slots are its start plus whole multiples of its period. A crontab names wall-clock times in its
own time zone, and is evaluated there, day by day, with one rule for the hour a daylight-saving change takes or
repeats (the rule of Vixie cron, which most operators know):
- a time the clock skips (02:30 on a spring-forward night) runs once, at the moment of the jump, unless the
  crontab runs every hour, whose skipped times are simply not there (nothing was missed in real time);
- a time the clock shows twice (02:30 on a fall-back night) runs once, at its first occurrence, unless the
  crontab runs every hour, which keeps its pace through the repeated hour (both occurrences run).
So "30 2 * * *" runs exactly once each day, and "*/15 * * * *" every 15 minutes of real time, all year.
Celery's crontab arithmetic (and with it beat's) works on naive offsets and runs such jobs twice, or not at all,
across a change (django-celery-beat's long-open complaint); nothing of it is used here but its field parser.
"""
import bisect
import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from celery.schedules import crontab as celery_crontab

# How far a crontab is searched for its next or previous slot ("0 0 29 2 1" falls on a Monday every few years).
SEARCH_DAYS = 366 * 8


@dataclass(frozen=True)
class Crontab:
    """A crontab's fields as sets of values (day_of_week: 0 is Sunday), and its time zone."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]
    zone: ZoneInfo

    @classmethod
    def parse(cls, *, minute: str = "*", hour: str = "*", day_of_month: str = "*", month_of_year: str = "*",
              day_of_week: str = "*", zone: str | ZoneInfo = "UTC") -> "Crontab":
        """From crontab fields as django-celery-beat stores them (Celery's syntax); ValueError if one is wrong.
        Like Celery, a day must match both day_of_month and day_of_week."""
        parsed = celery_crontab(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year,
                                day_of_week=day_of_week)
        return cls(frozenset(parsed.minute), frozenset(parsed.hour), frozenset(parsed.day_of_month),
                   frozenset(parsed.month_of_year), frozenset(parsed.day_of_week),
                   zone if isinstance(zone, ZoneInfo) else ZoneInfo(str(zone)))

    def next_after(self, moment: datetime) -> datetime | None:
        """The first slot strictly after `moment` (aware), in UTC; None if there is none within SEARCH_DAYS."""
        day = moment.astimezone(self.zone).date() - timedelta(days=1)
        for offset in range(SEARCH_DAYS):
            slots = _day_slots(self, day + timedelta(days=offset))
            index = bisect.bisect_right(slots, moment)
            if index < len(slots):
                return slots[index]
        return None

    def previous_at(self, moment: datetime) -> datetime | None:
        """The last slot at or before `moment` (aware), in UTC; None if there is none within SEARCH_DAYS."""
        day = moment.astimezone(self.zone).date() + timedelta(days=1)
        for offset in range(SEARCH_DAYS):
            slots = _day_slots(self, day - timedelta(days=offset))
            index = bisect.bisect_right(slots, moment)
            if index > 0:
                return slots[index - 1]
        return None


@functools.lru_cache(maxsize=512)
def _day_slots(crontab: Crontab, day: date) -> tuple[datetime, ...]:
    """The slots of one local day, as UTC instants, ascending. Cached: a crontab firing every minute reads the
    same day's list 1,440 times."""
    if (day.month not in crontab.months or day.day not in crontab.days_of_month
            or (day.weekday() + 1) % 7 not in crontab.days_of_week):
        return ()
    every_hour = len(crontab.hours) == 24
    instants = set()
    for hour in crontab.hours:
        for minute in crontab.minutes:
            instants.update(_instants(datetime.combine(day, time(hour, minute)), crontab.zone, every_hour=every_hour))
    return tuple(sorted(instants))


def _instants(wall: datetime, zone: ZoneInfo, *, every_hour: bool) -> list[datetime]:
    """The instants (UTC) at which wall-clock time `wall` (naive) runs in `zone`, by the rule of the module."""
    first, second = wall.replace(tzinfo=zone, fold=0), wall.replace(tzinfo=zone, fold=1)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wall:  # skipped by a spring-forward
        return [] if every_hour else [_jump(second.astimezone(UTC), first.astimezone(UTC), zone)]
    if first.utcoffset() != second.utcoffset():  # shown twice by a fall-back
        return [first.astimezone(UTC), second.astimezone(UTC)] if every_hour else [first.astimezone(UTC)]
    return [first.astimezone(UTC)]


def _jump(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """The instant between `before` and `after` (UTC) at which `zone`'s clock jumped forward, to the second."""
    offset = after.astimezone(zone).utcoffset()
    low, high = int(before.timestamp()), int(after.timestamp())
    while low < high:  # the first second with the offset after the jump
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == offset:
            high = middle
        else:
            low = middle + 1
    return datetime.fromtimestamp(low, UTC)


@dataclass(frozen=True)
class Interval:
    """Slots every `period` from `start`."""

    start: datetime
    period: timedelta

    def next_after(self, moment: datetime) -> datetime:
        if moment < self.start:
            return self.start
        return self.start + ((moment - self.start) // self.period + 1) * self.period

    def previous_at(self, moment: datetime) -> datetime | None:
        if moment < self.start:
            return None
        return self.start + ((moment - self.start) // self.period) * self.period
