"""Schedule expressions: when the ticks of a schedule fall, as instants in UTC.

Three forms, as in EventBridge Scheduler:

- ``cron(M H DOM MON DOW [YEAR])`` — a cron line evaluated in the schedule's time zone.
  Five fields (minute, hour, day of month, month, day of week) as in crontab, or six with
  EventBridge's year field; ``?`` is read as ``*``. A bare five-field line works too.
- ``rate(N minutes|hours|days)`` — every N units of elapsed time, counted from the
  schedule's start (a day is 24 hours, whatever the clocks do).
- ``at(YYYY-MM-DDTHH:MM[:SS])`` — once, at that local time in the schedule's time zone.

Daylight saving time: a local time that does not exist (the hour the clocks skip) fires
once, at the same distance past the transition (02:30 becomes 03:30); a local time that
happens twice (the hour the clocks repeat) fires once, at its first occurrence.

The cron parser is cadenza's own, about 150 lines: it has no dependency, reads
EventBridge's six-field form, and follows the DST rules above, which a general-purpose
cron library would leave to its caller.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cadenza.errors import ConfigurationError

__all__ = ["CronExpression", "Expression", "OneTime", "Rate", "parse_expression", "zone"]

_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
_CRON_EXAMPLE = "cron(0 9 * * MON-FRI)"
#: How far ahead a cron line is searched for its next tick; past that it never fires.
_HORIZON_YEARS = 30


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; ConfigurationError when there is none by that name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        if name != "UTC" and not available_timezones():
            raise ConfigurationError(
                f"time zone {name!r}: this machine has no time zone database; install one"
                " ('pip install tzdata', or the system's tzdata package)"
            ) from None
        raise ConfigurationError(
            f"time zone {name!r} is not an IANA time zone; use a name such as"
            " 'Europe/Lisbon', 'America/New_York' or 'UTC'"
        ) from None


def _utc(local: datetime, tz: ZoneInfo) -> datetime:
    """The instant of wall time ``local`` in ``tz``: fold 0 takes the first of a repeated
    time, and for a skipped time the offset in force before the jump (so it lands after)."""
    return local.replace(tzinfo=tz, fold=0).astimezone(UTC)


class Expression(ABC):
    """When a schedule's ticks fall."""

    text: str

    @abstractmethod
    def next_after(self, after: datetime, *, tz: ZoneInfo, anchor: datetime) -> datetime | None:
        """The first tick strictly after ``after`` (UTC), or None when there is no more.
        ``anchor`` is where a rate counts from."""


@dataclass(frozen=True, slots=True)
class Rate(Expression):
    text: str
    every: timedelta

    def next_after(self, after: datetime, *, tz: ZoneInfo, anchor: datetime) -> datetime | None:
        if after < anchor:
            return anchor
        periods = (after - anchor) // self.every + 1
        return anchor + periods * self.every


@dataclass(frozen=True, slots=True)
class OneTime(Expression):
    text: str
    local: datetime  # naive wall time in the schedule's zone

    def next_after(self, after: datetime, *, tz: ZoneInfo, anchor: datetime) -> datetime | None:
        instant = _utc(self.local, tz)
        return instant if instant > after else None


@dataclass(frozen=True, slots=True)
class CronExpression(Expression):
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    years: frozenset[int] | None
    # crontab's rule: when both day fields are restricted, a day matching either counts.
    days_restricted: bool
    weekdays_restricted: bool

    def _day_matches(self, day: date) -> bool:
        if day.month not in self.months or (self.years is not None and day.year not in self.years):
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_month or in_week
        return in_month and in_week

    def next_after(self, after: datetime, *, tz: ZoneInfo, anchor: datetime) -> datetime | None:
        # Walk wall times forward from the local time of ``after``. Around a DST change the
        # instants are not in wall-time order (a skipped time maps past the jump, a repeated
        # one to its first occurrence), so a candidate counts only if it lies after ``after``.
        local = after.astimezone(tz).replace(tzinfo=None, second=0, microsecond=0)
        day = local.date()
        start: time | None = local.time()
        hours = sorted(self.hours)
        minutes = sorted(self.minutes)
        last_day = date(min(day.year + _HORIZON_YEARS, 9999), 12, 31)
        while day <= last_day:
            if self._day_matches(day):
                for hour in hours:
                    if start is not None and hour < start.hour:
                        continue
                    for minute in minutes:
                        if start is not None and (hour, minute) <= (start.hour, start.minute):
                            continue
                        instant = _utc(datetime.combine(day, time(hour, minute)), tz)
                        if instant > after:
                            return instant
            start = None
            day = self._next_day(day)
        return None

    def _next_day(self, day: date) -> date:
        following = day + timedelta(days=1)
        if following.month not in self.months:  # jump to the first day of a month that fits
            month, year = following.month, following.year
            for _ in range(12):
                month += 1
                if month > 12:
                    month, year = 1, year + 1
                if month in self.months:
                    break
            return date(year, month, 1) if year <= 9999 else date.max
        return following


_RATE = re.compile(r"^(\d+)\s+(minute|minutes|hour|hours|day|days)$")
_UNITS = {"minute": 60, "hour": 3600, "day": 86400}


def parse_expression(text: str) -> Expression:
    """Parse ``cron(...)``, ``rate(...)``, ``at(...)`` or a bare five-field cron line;
    ConfigurationError, saying what is wrong and showing a correct form, otherwise."""
    stripped = " ".join(text.split())
    match = re.fullmatch(r"(cron|rate|at)\((.*)\)", stripped)
    if match is None:
        if len(stripped.split(" ")) == 5 and "(" not in stripped:
            return _cron(stripped, stripped)
        raise ConfigurationError(
            f"schedule expression {text!r} is not cron(...), rate(...) or at(...); e.g."
            f" {_CRON_EXAMPLE}, rate(15 minutes) or at(2026-12-01T09:00:00)"
        )
    kind, body = match.group(1), match.group(2).strip()
    if kind == "rate":
        rate = _RATE.fullmatch(body)
        if rate is None or int(rate.group(1)) <= 0:
            raise ConfigurationError(
                f"rate expression {text!r}: use rate(N minutes|hours|days) with N > 0,"
                " e.g. rate(15 minutes)"
            )
        seconds = int(rate.group(1)) * _UNITS[rate.group(2).rstrip("s")]
        return Rate(stripped, timedelta(seconds=seconds))
    if kind == "at":
        try:
            local = datetime.fromisoformat(body)
        except ValueError:
            local = None
        if local is None or local.tzinfo is not None:
            raise ConfigurationError(
                f"at expression {text!r}: use a local date and time without an offset, e.g."
                " at(2026-12-01T09:00:00); the schedule's time zone says where"
            )
        return OneTime(stripped, local.replace(microsecond=0))
    return _cron(body, stripped)


def _cron(body: str, text: str) -> CronExpression:
    fields = body.split(" ")
    if len(fields) not in (5, 6):
        raise ConfigurationError(
            f"cron expression {text!r} has {len(fields)} fields; give five (minute hour"
            " day-of-month month day-of-week) or six (… year), e.g. " + _CRON_EXAMPLE
        )
    minute, hour, dom, month, dow = fields[:5]
    years = _field(fields[5], "year", 1970, 2199, text) if len(fields) == 6 else None
    if years is not None and fields[5] in ("*", "?"):
        years = None
    expression = CronExpression(
        text=text,
        minutes=_field(minute, "minute", 0, 59, text),
        hours=_field(hour, "hour", 0, 23, text),
        days=_field(dom, "day-of-month", 1, 31, text),
        months=_field(month, "month", 1, 12, text, names=_MONTHS),
        weekdays=frozenset(d % 7 for d in _field(dow, "day-of-week", 0, 7, text, names=_DAYS)),
        years=years,
        days_restricted=dom not in ("*", "?"),
        weekdays_restricted=dow not in ("*", "?"),
    )
    # A line that names no date that exists (30 February) would otherwise search 30 years
    # on every look; refuse it when it is defined.
    probe = datetime(1999, 12, 31, 23, 59, tzinfo=UTC) if years else datetime.now(UTC)
    if expression.next_after(probe, tz=ZoneInfo("UTC"), anchor=probe) is None:
        raise ConfigurationError(f"cron expression {text!r} names no date that exists")
    return expression


def _field(
    spec: str, what: str, low: int, high: int, text: str, *, names: list[str] | None = None
) -> frozenset[int]:
    values: set[int] = set()
    for part in spec.split(","):
        try:
            values.update(_part(part, low, high, names))
        except ValueError as exc:
            raise ConfigurationError(
                f"cron expression {text!r}: {what} field {spec!r} is not valid ({exc});"
                f" use numbers {low}-{high}"
                + (f" or names such as {names[1]}" if names else "")
                + ", with *, lists (1,15), ranges (1-5) and steps (*/10)"
            ) from None
    return frozenset(values)


def _part(part: str, low: int, high: int, names: list[str] | None) -> range:
    if part in ("*", "?"):
        return range(low, high + 1)
    step = 1
    if "/" in part:
        part, step_text = part.split("/", 1)
        step = int(step_text)
        if step <= 0:
            raise ValueError("a step must be positive")
    if part in ("*", "?"):
        first, last = low, high
    elif "-" in part:
        a, b = part.split("-", 1)
        first, last = _value(a, names), _value(b, names)
    else:
        first = _value(part, names)
        last = high if step != 1 else first  # "5/15" means from 5 on, every 15
    if not low <= first <= last <= high:
        raise ValueError(f"{first}-{last} is outside {low}-{high} or backwards")
    return range(first, last + 1, step)


def _value(text: str, names: list[str] | None) -> int:
    upper = text.upper()
    if names is not None and upper in names:
        return names.index(upper) + (1 if len(names) == 12 else 0)
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a number")
    return int(text)
