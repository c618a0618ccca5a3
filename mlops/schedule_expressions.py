"""AWS schedule expressions: ``at()``, ``rate()`` and the 6-field ``cron()`` of EventBridge Scheduler and
Application Auto Scaling, in an IANA ``Timezone``, evaluated with ``croniter``.

croniter (maintained by Pallets-Eco, time-zone and DST aware; the packages written for AWS's dialect,
pyawscron and aws-croniter, are little used) gets AWS's fields after this conversion
(:func:`croniter_expression`): the fields are checked (ranges, names, ``? L W #``, exactly one of
Day-of-month and Day-of-week is ``?``); Day-of-week numbers go from AWS's 1-7 (Sunday = 1) to cron's 0-6;
``?`` becomes ``*``, ``6L`` ``L5``, a Day-of-week ``L`` ``6`` (Saturday) and ``3#2`` ``2#2``; the fields are
laid out in croniter's ``min hour dom month dow second year`` with second 0. ``LW`` and years after 2099 are
refused (croniter has neither). croniter keeps to the zone's wall clock across DST: a time skipped by a
spring-forward runs at the first minute after the gap, and one repeated by a fall-back runs twice.

Shared by the config (a schedule is checked when the config loads), ``mlops schedule`` and the local
autoscaling engine; it imports nothing of either side.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter


class ScheduleError(ValueError):
    """A schedule expression or time zone that AWS would refuse; the message names it and ``why``."""

    def __init__(self, message: str, why: str | None = None):
        super().__init__(message)
        self.why = why or message


_AT = re.compile(r"at\((\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\)")
_RATE = re.compile(r"rate\((\d+) +(minute|minutes|hour|hours|day|days)\)")
_CRON = re.compile(r"cron\((.*)\)")
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}
_DAYS = {d: i + 1 for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}  # AWS: 1 is Sunday
# AWS's fields: (name, lowest, highest, names); the special characters are handled per field below.
_CRON_FIELDS = (
    ("Minutes", 0, 59, {}),
    ("Hours", 0, 23, {}),
    ("Day-of-month", 1, 31, {}),
    ("Month", 1, 12, _MONTHS),
    ("Day-of-week", 1, 7, _DAYS),
    ("Year", 1970, 2199, {}),
)
_CRONITER_MAX_YEAR = 2099


def _invalid_schedule(expression: str, why: str) -> ScheduleError:
    return ScheduleError(f"Invalid schedule expression {expression!r}: {why}", why)


def _cron_value(token: str, name: str, low: int, high: int, names: dict[str, int], expression: str) -> int:
    value = names.get(token.upper()) if names and not token.isdigit() else None
    if value is None:
        if not token.isdigit():
            raise _invalid_schedule(expression, f"{name} value {token!r} is not valid")
        value = int(token)
    if not low <= value <= high:
        raise _invalid_schedule(expression, f"{name} value {token!r} is outside {low}-{high}")
    return value


def _cron_item(item: str, spec: tuple, expression: str, convert: Callable[[int], int]) -> str:
    """One comma-separated item of a plain field (``*``, ``a``, ``a-b``, with an optional ``/step``)."""
    name, low, high, names = spec
    base, _, step = item.partition("/")
    if step and (not step.isdigit() or int(step) < 1):
        raise _invalid_schedule(expression, f"{name} step {step!r} is not a positive integer")
    if base == "*":
        out = "*"
    elif "-" in base:
        first, _, last = base.partition("-")
        a = convert(_cron_value(first, name, low, high, names, expression))
        b = convert(_cron_value(last, name, low, high, names, expression))
        out = f"{a}-{b}"
    else:
        out = str(convert(_cron_value(base, name, low, high, names, expression)))
    return f"{out}/{step}" if step else out


def _cron_field(text: str, index: int, expression: str) -> str:
    """One AWS cron field as croniter writes it (see the module docstring for the conversion)."""
    spec = _CRON_FIELDS[index]
    name, low, high, names = spec
    convert = (lambda day: day - 1) if index == 4 else (lambda value: value)
    upper = text.upper()
    if index in (2, 4) and upper == "?":
        return "*"
    if index == 2:
        if upper == "L":
            return "L"
        if upper == "LW":
            raise _invalid_schedule(expression, "Day-of-month 'LW' is not supported locally")
        if m := re.fullmatch(r"(\d{1,2})W", upper):
            return f"{_cron_value(m[1], name, low, high, names, expression)}W"
    if index == 4:
        if upper == "L":
            return "6"  # the last day of the week: Saturday
        if m := re.fullmatch(r"(\w+)L", upper):
            return f"L{convert(_cron_value(m[1], name, low, high, names, expression))}"
        if m := re.fullmatch(r"(\w+)#(\d)", upper):
            if not 1 <= int(m[2]) <= 5:
                raise _invalid_schedule(expression, f"Day-of-week {text!r}: the week of the month is 1-5")
            return f"{convert(_cron_value(m[1], name, low, high, names, expression))}#{m[2]}"
    if not text or any(not item for item in text.split(",")):
        raise _invalid_schedule(expression, f"{name} field {text!r} is not valid")
    return ",".join(_cron_item(item, spec, expression, convert) for item in text.split(","))


def croniter_expression(fields: str, expression: str | None = None) -> str:
    """AWS's ``Minutes Hours Day-of-month Month Day-of-week Year`` as croniter's 7-field expression."""
    expression = expression or f"cron({fields})"
    parts = fields.split()
    if len(parts) != 6:
        raise _invalid_schedule(expression, f"a cron expression has 6 fields, not {len(parts)}")
    if (parts[2] == "?") == (parts[4] == "?"):
        raise _invalid_schedule(expression, "exactly one of Day-of-month and Day-of-week must be '?'")
    converted = [_cron_field(text, i, expression) for i, text in enumerate(parts)]
    years = [int(y) for y in re.findall(r"\d+", converted[5])]
    if any(y > _CRONITER_MAX_YEAR for y in years):
        raise _invalid_schedule(expression, f"years after {_CRONITER_MAX_YEAR} are not supported locally")
    minute, hour, dom, month, dow, year = converted
    out = f"{minute} {hour} {dom} {month} {dow} 0 {year}"
    try:
        croniter(out, datetime(2000, 1, 1))
    except (CroniterError, ValueError) as err:
        raise _invalid_schedule(expression, str(err)) from None
    return out


def zone(name: str | None) -> ZoneInfo:
    """The IANA time zone of a scheduled action (UTC when none is given)."""
    if not name:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"Invalid Timezone {name!r}: not an IANA time zone name") from None


@dataclass(frozen=True)
class Schedule:
    """A scheduled action's ``Schedule`` in its ``Timezone``: when it runs."""

    expression: str
    tz: ZoneInfo
    at: datetime | None = None
    every: timedelta | None = None
    cron: str | None = None

    def latest(
        self,
        after: datetime,
        now: datetime,
        *,
        anchor: datetime,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> datetime | None:
        """The latest occurrence in ``(after, now]`` that lies within ``[start, end]``, or None.
        ``anchor``: where a rate counts from (its StartTime, else when the action was put)."""
        until = min(now, end) if end is not None else now
        found = self._latest_until(until, anchor, start is not None)
        if found is None or found <= after or (start is not None and found < start):
            return None
        return found

    def _latest_until(self, until: datetime, anchor: datetime, from_start: bool) -> datetime | None:
        if self.at is not None:
            return self.at if self.at <= until else None
        if self.every is not None:
            steps = math.floor((until - anchor) / self.every)
            if steps < (0 if from_start else 1):
                return None
            return anchor + steps * self.every
        assert self.cron is not None
        base = until.astimezone(self.tz).replace(microsecond=0) + timedelta(seconds=1)
        try:
            itr = croniter(self.cron, base)
            for _ in range(2):  # ``base`` is up to a second past ``until``
                found = itr.get_prev(datetime).astimezone(UTC)
                if found <= until:
                    return found
        except CroniterError:  # no occurrence (any more): a year that has passed
            return None
        return None


def parse_schedule(expression: Any, timezone_name: str | None = None) -> Schedule:
    """Check a ``Schedule`` (and ``Timezone``); a ScheduleError names what is wrong."""
    tz = zone(timezone_name)
    if not isinstance(expression, str):
        raise ScheduleError(f"Invalid schedule expression {expression!r}")
    if m := _AT.fullmatch(expression):
        try:
            local = datetime(*(int(g) for g in m.groups()))
        except ValueError as err:
            raise _invalid_schedule(expression, str(err)) from None
        return Schedule(expression, tz, at=local.replace(tzinfo=tz).astimezone(UTC))
    if m := _RATE.fullmatch(expression):
        value, unit = int(m[1]), m[2].rstrip("s")
        if value < 1:
            raise _invalid_schedule(expression, "the rate's value must be a positive integer")
        return Schedule(expression, tz, every=timedelta(seconds=value * _RATE_UNITS[unit]))
    if m := _CRON.fullmatch(expression):
        return Schedule(expression, tz, cron=croniter_expression(m[1], expression))
    raise _invalid_schedule(expression, "expected at(yyyy-mm-ddThh:mm:ss), rate(value unit) or cron(fields)")


def occurrences(
    schedule: Schedule, after: datetime, count: int, *, anchor: datetime | None = None
) -> list[datetime]:
    """The next ``count`` times (UTC) ``schedule`` runs after ``after``; a rate counts from ``anchor``
    (default ``after``: when it was created)."""
    out: list[datetime] = []
    if schedule.at is not None:
        return [schedule.at] if schedule.at > after else []
    if schedule.every is not None:
        start = anchor or after
        steps = max(0, math.floor((after - start) / schedule.every)) + 1
        return [start + (steps + i) * schedule.every for i in range(count)]
    assert schedule.cron is not None
    try:
        itr = croniter(schedule.cron, after.astimezone(schedule.tz))
        for _ in range(count):
            out.append(itr.get_next(datetime).astimezone(UTC))
    except CroniterError:  # no more occurrences (a year that has passed)
        pass
    return out
