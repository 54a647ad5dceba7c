"""Timer schedules as the Functions timer trigger reads them.

A schedule is either an NCRONTAB expression with six fields (`second minute hour day month
day-of-week`) or a TimeSpan (`hh:mm:ss`, a constant interval), like the host's `TimerSchedule.Create`.
Field syntax follows the NCrontab library: `*`, numbers, ranges `a-b`, steps `*/n`, `a-b/n` and `a/n`,
comma lists, and month / day names (`JAN`, `MON`, case-insensitive, three letters or in full). Days of
week run 0-6 from Sunday. When both day of month and day of week are restricted, an occurrence must
match both (NCrontab's rule, unlike Vixie cron). Times are UTC (`WEBSITE_TIME_ZONE` is not honoured).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from bisect import bisect_left
from dataclasses import dataclass

from local.host.hostconfig import HostConfigError, parse_timespan

_MONTHS = [m.lower() for m in calendar.month_name[1:]]
_DAYS = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"]


class ScheduleError(ValueError):
    """The schedule is neither a valid NCRONTAB expression nor a TimeSpan."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_base: int = 0


_FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day", 1, 31),
    _Field("month", 1, 12, tuple(_MONTHS), 1),
    _Field("day of week", 0, 6, tuple(_DAYS), 0),
)


def _value(token: str, spec: _Field, expression: str) -> int:
    if token.isdigit():
        number = int(token)
    else:
        lowered = token.lower()
        matches = [i for i, n in enumerate(spec.names) if lowered in (n, n[:3])]
        if not matches:
            raise ScheduleError(f"{expression!r}: {token!r} is not a valid {spec.name}")
        number = matches[0] + spec.name_base
    if not spec.low <= number <= spec.high:
        raise ScheduleError(f"{expression!r}: {spec.name} {number} is outside {spec.low}-{spec.high}")
    return number


def _parse_field(text: str, spec: _Field, expression: str) -> tuple[int, ...]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise ScheduleError(f"{expression!r}: empty list item in the {spec.name} field")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"{expression!r}: bad step {step_text!r} in the {spec.name} field")
            step = int(step_text)
        if base == "*":
            start, end = spec.low, spec.high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _value(first, spec, expression), _value(last, spec, expression)
            if start > end:
                raise ScheduleError(f"{expression!r}: range {base!r} in the {spec.name} field runs backwards")
        else:
            start = _value(base, spec, expression)
            # `a/n` means from a to the field's end in steps of n.
            end = spec.high if step_text else start
        values.update(range(start, end + 1, step))
    return tuple(sorted(values))


class Schedule:
    """A timer schedule; `next_after(t)` is the first occurrence strictly after t (aware UTC datetimes)."""

    expression: str
    adjust_for_dst: bool = True

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        raise NotImplementedError

    def next_occurrences(self, moment: dt.datetime, count: int) -> list[dt.datetime]:
        found: list[dt.datetime] = []
        for _ in range(count):
            moment = self.next_after(moment)
            found.append(moment)
        return found

    def min_interval(self, moment: dt.datetime) -> dt.timedelta:
        """The shortest gap between the next few occurrences (the host disables the schedule monitor
        below one minute)."""
        times = self.next_occurrences(moment, 5)
        return min(b - a for a, b in zip(times, times[1:], strict=False))


class CronSchedule(Schedule):
    def __init__(self, expression: str) -> None:
        fields = expression.split()
        if len(fields) != 6:
            raise ScheduleError(
                f"{expression!r} has {len(fields)} fields; NCRONTAB schedules need six "
                "(second minute hour day month day-of-week)"
            )
        self.expression = expression
        parsed = [_parse_field(f, spec, expression) for f, spec in zip(fields, _FIELDS, strict=True)]
        self.seconds, self.minutes, self.hours, self.days, self.months, self.weekdays = parsed
        self._weekday_set = set(self.weekdays)
        self._day_set = set(self.days)
        self._check_satisfiable()

    def _check_satisfiable(self) -> None:
        longest = max(calendar.monthrange(2000, m)[1] for m in self.months)
        if min(self.days) > longest:
            raise ScheduleError(f"{self.expression!r} never occurs (no such day in the chosen months)")

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r})"

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        tz = moment.tzinfo or dt.UTC
        t = moment.astimezone(dt.UTC).replace(microsecond=0, tzinfo=None) + dt.timedelta(seconds=1)
        horizon = t.year + 30
        while t.year <= horizon:
            if t.month not in self.months:
                t = self._next_month(t)
                continue
            if t.day not in self._day_set or (t.weekday() + 1) % 7 not in self._weekday_set:
                t = dt.datetime(t.year, t.month, t.day) + dt.timedelta(days=1)
                continue
            if t.hour not in self.hours:
                nxt = _next_in(self.hours, t.hour)
                t = (t.replace(hour=nxt, minute=0, second=0) if nxt is not None
                     else dt.datetime(t.year, t.month, t.day) + dt.timedelta(days=1))
                continue
            if t.minute not in self.minutes:
                nxt = _next_in(self.minutes, t.minute)
                t = (t.replace(minute=nxt, second=0) if nxt is not None
                     else t.replace(minute=0, second=0) + dt.timedelta(hours=1))
                continue
            if t.second not in self.seconds:
                nxt = _next_in(self.seconds, t.second)
                t = t.replace(second=nxt) if nxt is not None else t.replace(second=0) + dt.timedelta(minutes=1)
                continue
            return t.replace(tzinfo=dt.UTC).astimezone(tz)
        raise ScheduleError(f"{self.expression!r} has no occurrence within 30 years")

    def _next_month(self, t: dt.datetime) -> dt.datetime:
        nxt = _next_in(self.months, t.month)
        if nxt is None:
            return dt.datetime(t.year + 1, self.months[0], 1)
        return dt.datetime(t.year, nxt, 1)


class IntervalSchedule(Schedule):
    """A TimeSpan schedule: every `interval` from the previous occurrence (the host's ConstantSchedule)."""

    adjust_for_dst = False

    def __init__(self, expression: str, seconds: float) -> None:
        if seconds <= 0:
            raise ScheduleError(f"{expression!r}: the interval must be positive")
        self.expression = expression
        self.interval = dt.timedelta(seconds=seconds)

    def __repr__(self) -> str:
        return f"IntervalSchedule({self.expression!r})"

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        return moment + self.interval


def _next_in(values: tuple[int, ...], current: int) -> int | None:
    """The first value above current, or None."""
    index = bisect_left(values, current + 1)
    return values[index] if index < len(values) else None


def parse_schedule(expression: str) -> Schedule:
    """An NCRONTAB expression, else a TimeSpan, else ScheduleError (the host's order)."""
    text = expression.strip()
    if len(text.split()) == 6:
        return CronSchedule(text)
    if re.fullmatch(r"[\d.:]+", text) and ":" in text:
        try:
            return IntervalSchedule(text, parse_timespan(text))
        except HostConfigError as exc:
            raise ScheduleError(str(exc)) from exc
    if len(text.split()) > 1:
        return CronSchedule(text)  # raises with the field count
    raise ScheduleError(f"The schedule expression {expression!r} was not recognized as a valid cron expression "
                        "or timespan string.")
