"""Recurring tasks: when the occurrences of a schedule fall, and which missed ones to run.

Pure: no database, no sleeping, and no clock of its own. Every function takes the times it
works from; where a default "now" is needed, the caller passes it (or a ``clock``).
Everything here is immutable or a pure function, so any thread may use it; the one shared
state, the cache of a zone's offset changes, is an ``lru_cache`` (safe across threads).

Two kinds of rule:

- ``every`` (``90s``, ``5m``, ``1h30m``, ``1d``): real time, start + k x interval. Time
  zones and daylight saving never move it.
- ``cron`` (5 fields, or ``@hourly`` ...): local wall-clock times in an IANA zone. The
  grammar and the matching of wall-clock times are cronsim's; what happens when the
  zone's clock jumps is decided here, the way Debian's cron decides it (cron.c, which
  classifies every jump of the clock). cronsim's own handling of jumps is not used: it
  differs from Debian's for half-hour shifts, for jumps of three hours or more, and for
  jumps of under five minutes (see tests/unit/test_recurrence.py, which checks this module
  against a minute-by-minute model of Debian's loop).

Debian's rules, in terms of the jump (``d`` = new UTC offset - old):

- A job is *fixed* unless its minute or hour field starts with ``*`` (``@hourly`` counts as
  ``0 * * * *``); ``0-59/15 2 * * *`` is fixed, as in Debian.
- Forward jump (``d > 0``, wall times skipped): under 5 minutes, every job that would have
  run in the skipped wall times runs right after the jump; from 5 minutes to under 3 hours
  (daylight saving), fixed jobs do, wildcard jobs do not; 3 hours or more is taken as a
  correction of the clock: nothing skipped runs.
- Backward jump (wall times repeated): wildcard jobs run in both copies; fixed jobs run
  only in the first copy, unless the clock went back more than 181 minutes (a correction
  again), when they run in both.
- Several skipped wall times of one schedule run once, together, right after the jump
  (Debian would start the job once per skipped time; an occurrence here is an instant).
"""

from __future__ import annotations

import difflib
import re
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from functools import lru_cache
from typing import Any, NamedTuple

from cronsim import CronSim, CronSimError

from fizzbuzz_cli.errors import BadInput
from fizzbuzz_cli.tasks import MAX_TASK_ID, TaskType, choices, format_time, parse_time

UTC = timezone.utc

EVERY_MIN = timedelta(seconds=1)  # the finest rhythm a worker keeps to the millisecond
EVERY_MAX = timedelta(days=3650)  # past ten years an interval is surely a typo
MAX_CATCH_UP_LIMIT = 10_000  # --max-catch-up at most: each is a task inserted at once
DEFAULT_MAX_CATCH_UP = 100  # the default for --catch-up all
COUNT_LIMIT = 10_000  # skipped occurrences are counted up to this many, then "more than"
SHORT_JUMP = timedelta(minutes=5)  # Debian: a forward jump shorter than this runs every job
CLOCK_SET_FORWARD = timedelta(minutes=180)  # Debian: a jump this far forward is a correction
CLOCK_SET_BACKWARD = timedelta(minutes=182)  # ... this far back (its timeDiff is < -180 min)
_SAMPLE = timedelta(hours=6)  # offset changes in tzdata are at least 4 days apart

TZ_HELP = "use an IANA name such as Europe/Paris, America/New_York or UTC"
EVERY_HELP = "use a duration such as 90s, 5m, 1h30m or 1d (units w, d, h, m, s; at least 1s)"
CRON_HELP = ("use 5 fields (minute hour day-of-month month day-of-week) such as '30 2 * * *' "
             "or '*/15 * * * MON-FRI', or one of @hourly, @daily, @weekly, @monthly, @yearly")


# ---------------------------------------------------------------------------- rules


class RuleKind(str, Enum):
    EVERY = "every"
    CRON = "cron"


class CatchUp(str, Enum):
    """What to do with the occurrences whose time passed while no one materialised them."""

    LATEST = "latest"  # run the most recent one once, skip the others
    ALL = "all"  # run them all, in order (the most recent max_catch_up of them)
    NONE = "none"  # skip them all

    @classmethod
    def parse(cls, text: str) -> CatchUp:
        for policy in cls:
            if policy.value == str(text).strip().lower():
                return policy
        raise BadInput(f"unknown catch-up policy {_shown(text)}: use one of {choices(cls)}")


_MACROS = {
    "@hourly": "0 * * * *",  # Debian marks @hourly as a wildcard-hour job, as this is
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_FIELD_HELP = {
    "minute": "0-59",
    "hour": "0-23",
    "day-of-month": "1-31",
    "month": "1-12 or JAN-DEC",
    "day-of-week": "0-7 (0 and 7 are Sunday) or SUN-SAT",
}
_CRON_FIELD = re.compile(r"[0-9A-Za-z*,/-]+")
_CRON_NAME = re.compile(r"[A-Za-z]+")
_NAMES = {
    "month": {"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"},
    "day-of-week": {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"},
}
# Each part takes the spaces that follow it, so that no two quantifiers compete for the same
# spaces: the match takes linear time, whatever the text (adjacent \s* would backtrack
# polynomially on a line of spaces).
_EVERY = re.compile(r"(?:(\d+)\s*w\s*)?(?:(\d+)\s*d\s*)?(?:(\d+)\s*h\s*)?(?:(\d+)\s*m\s*)?"
                    r"(?:(\d+)\s*s)?")
MAX_RULE_LENGTH = 1000  # characters of a rule, a zone or a policy: beyond, surely not one
_EVERY_UNITS = (604800, 86400, 3600, 60, 1)


@dataclass(frozen=True, slots=True)
class Rule:
    """A parsed rule: ``every`` with its interval, or ``cron`` with its 5 fields."""

    kind: RuleKind
    text: str  # the canonical spelling, as stored and shown: '1h30m', '30 2 * * *', '@daily'
    interval: timedelta | None = None  # every
    fields: str | None = None  # cron: the 5 fields (macros expanded), upper case
    wildcard: bool = False  # cron: minute or hour starts with '*' (Debian's MIN_STAR/HR_STAR)

    @classmethod
    def parse(cls, kind: RuleKind | str, text: str) -> Rule:
        kind = RuleKind(kind)
        return parse_every(text) if kind is RuleKind.EVERY else parse_cron(text)

    def describe(self) -> str:
        return f"every {self.text}" if self.kind is RuleKind.EVERY else f"cron '{self.text}'"


def parse_every(text: str) -> Rule:
    """``90s``, ``5m``, ``1h30m``, ``1d``, ``2w``: whole units, largest first, at least 1 s."""
    raw = str(text).strip().lower()
    if len(raw) > 40:  # '9999w 9999d 9999h 9999m 9999s' is 29
        raise BadInput(f"invalid interval {_shown(text)}: {EVERY_HELP}")
    match = _EVERY.fullmatch(raw) if raw else None
    if match is None or not any(match.groups()):
        raise BadInput(f"invalid interval {text!r}: {EVERY_HELP}")
    seconds = sum(int(n) * unit for n, unit in zip(match.groups(), _EVERY_UNITS, strict=True) if n)
    if not EVERY_MIN.total_seconds() <= seconds <= EVERY_MAX.total_seconds():
        raise BadInput(f"invalid interval {text!r}: it must be from 1s to "
                       f"{EVERY_MAX.days}d")
    return Rule(RuleKind.EVERY, format_interval(seconds), interval=timedelta(seconds=seconds))


def _shown(text: str) -> str:
    """A text for an error message: as it is, or its start and its length if it is long."""
    text = str(text)
    return repr(text) if len(text) <= 60 else f"{text[:30]!r}... ({len(text)} characters)"


def format_interval(seconds: int) -> str:
    """The canonical spelling of an interval: 5400 -> '1h30m', 90 -> '1m30s', 86400 -> '1d'."""
    parts = []
    for unit, name in ((86400, "d"), (3600, "h"), (60, "m"), (1, "s")):
        count, seconds = divmod(seconds, unit)
        if count:
            parts.append(f"{count}{name}")
    return "".join(parts) or "0s"


def parse_cron(text: str) -> Rule:
    """Debian's 5-field grammar: numbers, names (JAN, MON), ranges, lists, steps, and the
    @ macros; cronsim reads it and tells which field is wrong."""
    if len(str(text)) > MAX_RULE_LENGTH:
        raise BadInput(f"invalid cron expression {_shown(text)}: {CRON_HELP}")
    raw = " ".join(str(text).split())
    if not raw:
        raise BadInput(f"empty cron expression: {CRON_HELP}")
    if raw.startswith("@"):
        fields = _MACROS.get(raw.lower())
        if fields is None:
            raise BadInput(f"invalid cron expression {text!r}: unknown macro {raw!r}: "
                           f"use one of @hourly, @daily, @weekly, @monthly, @yearly")
        canonical = raw.lower()
    else:
        parts = raw.split(" ")
        if len(parts) != 5:
            raise BadInput(f"invalid cron expression {text!r}: it has {len(parts)} "
                           f"field{'s' if len(parts) != 1 else ''}, not 5: {CRON_HELP}")
        for name, part in zip(_FIELDS, parts, strict=True):
            _check_field(text, name, part)
        fields = canonical = raw.upper()
    try:
        CronSim(fields, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise BadInput(_cron_error(text, fields, str(exc))) from None
    minute, hour = fields.split(" ")[:2]
    return Rule(RuleKind.CRON, canonical, fields=fields,
                wildcard=minute.startswith("*") or hour.startswith("*"))


def _check_field(text: str, name: str, part: str) -> None:
    """What cronsim accepts beyond Debian's grammar (L, W, #, ?) is refused here, and names
    only where Debian has them, so that a rule means the same in fizz and in crontab."""
    bad = not _CRON_FIELD.fullmatch(part) or any(
        word.upper() not in _NAMES.get(name, ()) for word in _CRON_NAME.findall(part))
    if bad:
        raise BadInput(f"invalid cron expression {text!r}: bad {name} field {part!r}: "
                       f"use {_FIELD_HELP[name]}, with ranges (1-5), lists (1,15) and "
                       f"steps (*/10)")


def _cron_error(text: str, fields: str, message: str) -> str:
    """One line from cronsim's 'Bad <field>', naming the field, its text and what is valid."""
    parts = fields.split(" ")
    for index, name in enumerate(_FIELDS):
        if message.lower() != f"bad {name}":
            continue
        if name == "day-of-month" and _day_field_alone_is_valid(parts[2]):
            return (f"invalid cron expression {text!r}: day-of-month {parts[2]!r} never "
                    f"occurs in month {parts[3]!r}")
        return (f"invalid cron expression {text!r}: bad {name} field {parts[index]!r}: use "
                f"{_FIELD_HELP[name]}, with ranges (1-5), lists (1,15) and steps (*/10)")
    return f"invalid cron expression {text!r}: {message}: {CRON_HELP}"


def _day_field_alone_is_valid(part: str) -> bool:
    try:
        CronSim(f"0 0 {part} * *", datetime(2000, 1, 1))
    except CronSimError:
        return False
    return True


# ---------------------------------------------------------------------------- zones


_HOST_ZONES = {"localtime", "posixrules"}  # files in zoneinfo folders, not IANA zones
_VARIANT_FOLDERS = {"posix", "right"}  # folders of copies of the zones in some tz packages


def parse_zone(name: str) -> zoneinfo.ZoneInfo:
    """An IANA time zone by name; unknown names get one line, with a suggestion."""
    raw = str(name).strip()
    if not raw:
        raise BadInput(f"empty time zone: {TZ_HELP}")
    if len(raw) > 100:  # the longest IANA name has 32 characters
        raise BadInput(f"unknown time zone {_shown(raw)}: {TZ_HELP}")
    if raw.lower() in _HOST_ZONES:
        raise BadInput(f"time zone {raw!r} means whatever each host is set to: {TZ_HELP}")
    variant, _, plain = raw.partition("/")
    if variant.lower() in _VARIANT_FOLDERS and plain:
        # posix/ repeats the zones; right/ counts leap seconds, which zoneinfo cannot read.
        # Neither exists where zones come from the tzdata package: other hosts could not read
        # the schedule.
        raise BadInput(f"time zone {raw!r} is a copy kept by this host's tz files: use "
                       f"{plain!r}")
    try:
        return zoneinfo.ZoneInfo(raw)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError, UnicodeError):
        pass
    known = _known_zones()
    by_lower = {key.lower(): key for key in known}
    if raw.lower() in by_lower:  # 'europe/paris' on a case-sensitive file system
        return zoneinfo.ZoneInfo(by_lower[raw.lower()])
    close = difflib.get_close_matches(raw, known, n=1, cutoff=0.8)
    hint = f": did you mean {close[0]!r}?" if close else f": {TZ_HELP}"
    raise BadInput(f"unknown time zone {raw!r}{hint}")


@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    """Every zone name this host knows; read once (a walk of the zoneinfo folders, some
    10 to 30 ms: fizz serve answers a misspelt zone without paying it each time)."""
    return frozenset(zoneinfo.available_timezones())


class Jump(NamedTuple):
    """A change of a zone's UTC offset: from `at` on, `after` applies instead of `before`."""

    at: datetime  # UTC
    before: timedelta
    after: timedelta

    @property
    def size(self) -> timedelta:
        return self.after - self.before


def _offset(zone: zoneinfo.ZoneInfo, instant: datetime) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None
    return offset


@lru_cache(maxsize=4096)
def _jumps_in_year(zone: zoneinfo.ZoneInfo, year: int) -> tuple[Jump, ...]:
    """Every offset change of a zone in one UTC year, to the second. zoneinfo has no public
    list of transitions, so the offset is sampled every 6 hours (changes in tzdata are at
    least 4 days apart, so none is missed) and each change is found by bisection."""
    if year >= 9999:  # no room to sample past the last representable year
        return ()
    start, end = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    jumps = []
    low, low_offset = start, _offset(zone, start)
    while low < end:
        high = min(low + _SAMPLE, end)
        high_offset = _offset(zone, high)
        if high_offset != low_offset:
            a, b = low, high  # offset(a) == low_offset != offset(b)
            while b - a > timedelta(seconds=1):
                mid = a + (b - a) / 2
                mid = mid.replace(microsecond=0)
                if _offset(zone, mid) == low_offset:
                    a = mid
                else:
                    b = mid
            jumps.append(Jump(b, low_offset, high_offset))
        low, low_offset = high, high_offset
    return tuple(jumps)


def _jumps(zone: zoneinfo.ZoneInfo, after: datetime, until: datetime) -> Iterator[Jump]:
    """Offset changes at instants in (after, until], in order."""
    for year in range(after.year, until.year + 1):
        for jump in _jumps_in_year(zone, year):
            if after < jump.at <= until:
                yield jump


def _last_jump(zone: zoneinfo.ZoneInfo, instant: datetime) -> Jump | None:
    """The latest offset change at or before `instant`, if within the last two days (a
    change matters to the present only that long: no jump is bigger than a day)."""
    found = None
    for year in range((instant - timedelta(days=2)).year, instant.year + 1):
        for jump in _jumps_in_year(zone, year):
            if instant - timedelta(days=2) < jump.at <= instant:
                found = jump
    return found


# ---------------------------------------------------------------------------- occurrences


def _naive(instant: datetime, offset: timedelta) -> datetime:
    """The wall-clock time at `instant` under `offset`, without a zone."""
    return (instant + offset).replace(tzinfo=None)


def _instant(wall: datetime, offset: timedelta) -> datetime:
    return (wall - offset).replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Recurrence:
    """A rule in a zone, from `start` (inclusive) to `end` (inclusive, optional).

    Occurrences are aware UTC datetimes. ``every`` gives start + k x interval; ``cron`` gives
    the instants at which Debian's cron, running in `zone` from `start` on, would start the
    job (see the module docstring)."""

    rule: Rule
    zone: zoneinfo.ZoneInfo
    start: datetime
    end: datetime | None = None

    def next_after(self, when: datetime, inclusive: bool = False) -> datetime | None:
        """The first occurrence after `when` (or at it, with inclusive); None past the end."""
        if when < self.start:
            when, inclusive = self.start, True
        try:
            if self.rule.kind is RuleKind.EVERY:
                found = self._every_after(when, inclusive)
            else:
                found = self._cron_after(when - timedelta(microseconds=1) if inclusive else when)
        except OverflowError:  # past the year 9999
            return None
        if found is None or (self.end is not None and found > self.end):
            return None
        return found

    def iter_from(self, when: datetime, inclusive: bool = False) -> Iterator[datetime]:
        """Occurrences after `when` (or from it, with inclusive), in order, to the end."""
        found = self.next_after(when, inclusive)
        while found is not None:
            yield found
            found = self.next_after(found)

    def upcoming(self, count: int, now: datetime) -> list[datetime]:
        """The next `count` occurrences at or after `now` (for `fizz schedule show --next`)."""
        found = []
        for when in self.iter_from(now, inclusive=True):
            if len(found) == count:
                break
            found.append(when)
        return found

    def between(self, low: datetime, high: datetime, limit: int | None = None) -> list[datetime]:
        """Occurrences in [low, high), in order; at most `limit` of them."""
        found = []
        for when in self.iter_from(low, inclusive=True):
            if when >= high or (limit is not None and len(found) >= limit):
                break
            found.append(when)
        return found

    def catch_up(self, since: datetime, now: datetime, policy: CatchUp,
                 cap: int = DEFAULT_MAX_CATCH_UP) -> CatchUpPlan:
        """Which of the occurrences in [since, now) to run, under `policy`: the most recent
        one (latest), the most recent `cap` in order (all), or none. `since` is the first
        occurrence no one materialised."""
        keep = {CatchUp.LATEST: 1, CatchUp.ALL: cap, CatchUp.NONE: 0}[policy]
        run = self._last_before(now, keep, since) if keep else []
        skip_until = run[0] if run else now
        skipped, exact = self._count(since, skip_until)
        first = self.next_after(since, inclusive=True) if skipped else None
        last = self._last_before(skip_until, 1, since)[0] if skipped else None
        return CatchUpPlan(run, skipped, exact, first, last)

    # -------------------------------------------------------------- every

    def _every_after(self, when: datetime, inclusive: bool) -> datetime:
        interval = self.rule.interval
        assert interval is not None
        steps, rest = divmod(when - self.start, interval)
        if rest or not inclusive:
            steps += 1
        return self.start + steps * interval

    # -------------------------------------------------------------- cron

    def _cron_after(self, when: datetime) -> datetime | None:
        """The first instant > `when` at which Debian's cron would run this rule.

        Real time is walked one offset period at a time: within a period the wall clock is
        the instant plus one offset, so cronsim's next wall-clock match maps to exactly one
        instant. At a jump between periods, Debian's rules decide about the wall times that
        the jump skipped or repeated."""
        when = when.astimezone(UTC)
        offset = _offset(self.zone, when)
        period_from = when  # the current period holds from here (exclusive) on
        floor = _naive(when, offset) + timedelta(microseconds=1)  # earliest wall time wanted
        came_by = _last_jump(self.zone, when)  # the jump that began the current period
        while True:
            if came_by is not None:
                floor = max(floor, self._repeat_floor(came_by))
            match = self._match(floor)
            if match is None:
                return None
            candidate = _instant(match, offset)
            jump = next(_jumps(self.zone, period_from, candidate), None)
            if jump is None:
                return candidate
            # The period ends at the jump, before the candidate: on into the next period.
            if self._runs_at_jump(jump):
                return jump.at
            came_by, offset, period_from = jump, jump.after, jump.at
            floor = _naive(jump.at, jump.after)

    def _repeat_floor(self, jump: Jump) -> datetime:
        """After a backward jump, fixed jobs skip the repeated wall times (unless the clock
        went back more than Debian's 181 minutes): the first wall time they may run at."""
        if jump.size >= timedelta(0) or self.rule.wildcard or -jump.size >= CLOCK_SET_BACKWARD:
            return datetime.min
        return _naive(jump.at, jump.before)

    def _runs_at_jump(self, jump: Jump) -> bool:
        """Whether wall times skipped by a forward jump hold a match that runs at the jump."""
        size = jump.size
        if size <= timedelta(0) or size >= CLOCK_SET_FORWARD:
            return False
        if size >= SHORT_JUMP and self.rule.wildcard:
            return False
        match = self._match(_naive(jump.at, jump.before))
        return match is not None and match < _naive(jump.at, jump.after)

    def _match(self, wall: datetime) -> datetime | None:
        """cronsim's first wall-clock match at or after `wall` (cronsim itself starts one
        second after the whole second it is given)."""
        assert self.rule.fields is not None
        try:
            return next(CronSim(self.rule.fields, wall - timedelta(microseconds=1)))
        except StopIteration:  # no match within cronsim's 50 years
            return None

    # -------------------------------------------------------------- catching up

    def _last_before(self, high: datetime, count: int, low: datetime) -> list[datetime]:
        """The last `count` occurrences in [low, high), in order."""
        if self.rule.kind is RuleKind.EVERY:
            interval = self.rule.interval
            assert interval is not None
            first = self.next_after(max(low, high - count * interval), inclusive=True)
            return self.between(first, high) if first is not None else []
        window = timedelta(hours=1)
        while True:
            begin = max(low, high - window)
            found = self.between(begin, high)
            if len(found) >= count or begin == low:
                return found[-count:]
            window *= 8

    def _count(self, low: datetime, high: datetime) -> tuple[int, bool]:
        """How many occurrences in [low, high), and whether that is exact (counting stops at
        COUNT_LIMIT)."""
        if high <= low:
            return 0, True
        if self.rule.kind is RuleKind.EVERY:
            first = self.next_after(low, inclusive=True)
            if first is None or first >= high:
                return 0, True
            last = high if self.end is None else min(high, self.end + timedelta(microseconds=1))
            interval = self.rule.interval
            assert interval is not None
            return -((first - last) // interval), True
        found = self.between(low, high, limit=COUNT_LIMIT + 1)
        return min(len(found), COUNT_LIMIT), len(found) <= COUNT_LIMIT


@dataclass(frozen=True, slots=True)
class CatchUpPlan:
    run: list[datetime]  # missed occurrences to run now, in order
    skipped: int  # missed occurrences not run (at least this many, unless exact)
    exact: bool  # False when there were more than COUNT_LIMIT to count
    first_skipped: datetime | None
    last_skipped: datetime | None

    def describe_skipped(self) -> str:
        if not self.skipped:
            return "none skipped"
        count = f"{self.skipped:,}" if self.exact else f"more than {COUNT_LIMIT:,}"
        span = (format_time(self.first_skipped) if self.first_skipped == self.last_skipped
                else f"{format_time(self.first_skipped)} to {format_time(self.last_skipped)}")  # type: ignore[arg-type]
        return f"{count} skipped ({span})"


# ---------------------------------------------------------------------------- schedules


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """What a user asks for when adding a schedule, read and checked."""

    task_type: TaskType
    rule: Rule
    zone: zoneinfo.ZoneInfo
    start: datetime
    end: datetime | None = None
    catch_up: CatchUp = CatchUp.LATEST
    max_catch_up: int = DEFAULT_MAX_CATCH_UP

    @property
    def recurrence(self) -> Recurrence:
        return Recurrence(self.rule, self.zone, self.start, self.end)


def parse_schedule_id(text: str) -> int:
    """A schedule id as people and URLs write it: ASCII digits, 1 to 2^31 - 1 (int4)."""
    raw = str(text)
    if not re.fullmatch(r"[0-9]{1,10}", raw) or not 1 <= int(raw) <= MAX_TASK_ID:
        raise BadInput(f"invalid schedule id {_shown(raw)}: use a whole number from 1 to "
                       f"{MAX_TASK_ID}")
    return int(raw)


def parse_max_catch_up(value: Any) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"[0-9]{1,6}", text) or not (
            1 <= int(text) <= MAX_CATCH_UP_LIMIT):
        shown = (_shown(value) if isinstance(value, str) else text if len(text) <= 30
                 else f"{text[:30]}... ({len(text)} digits)")
        raise BadInput(f"invalid max catch-up {shown}: use a whole number from 1 to "
                       f"{MAX_CATCH_UP_LIMIT}")
    return int(text)


def parse_schedule_spec(
    task_type: str,
    *,
    every: str | None = None,
    cron: str | None = None,
    tz: str | None = None,
    start: str | None = None,
    end: str | None = None,
    catch_up: str | None = None,
    max_catch_up: Any = None,
    now: datetime | None = None,
    clock: Callable[[], datetime] | None = None,
) -> ScheduleSpec:
    """The one reader of a new schedule, for the CLI (options) and the HTTP API (a JSON
    body, through parse_schedule_record). Times as `fizz add` reads them: RFC 3339 (no
    offset means UTC), 'now', or relative; `start` defaults to now."""
    if now is None:
        now = clock() if clock is not None else datetime.now(UTC)
    kind = TaskType.parse(task_type)
    if (every is None) == (cron is None):
        raise BadInput("give exactly one rule: every (such as 5m) or cron (such as "
                       "'30 2 * * *')")
    rule = parse_every(every) if every is not None else parse_cron(cron)  # type: ignore[arg-type]
    zone = parse_zone(tz) if tz is not None else zoneinfo.ZoneInfo("UTC")
    begin = _read_time("start", start, now) if start is not None else now
    finish = _read_time("end", end, now) if end is not None else None
    if finish is not None and finish < begin:
        raise BadInput(f"end {format_time(finish)} is before start {format_time(begin)}")
    policy = CatchUp.parse(catch_up) if catch_up is not None else CatchUp.LATEST
    cap = parse_max_catch_up(max_catch_up) if max_catch_up is not None else DEFAULT_MAX_CATCH_UP
    return ScheduleSpec(kind, rule, zone, begin, finish, policy, cap)


_RECORD_KEYS = ("type", "every", "cron", "tz", "start", "end", "catch_up", "max_catch_up")


def parse_schedule_record(record: Any, *, now: datetime | None = None) -> ScheduleSpec:
    """A new schedule from a JSON object (the HTTP API): {"type": "Fizz", "every": "5m"} or
    {"type": "Buzz", "cron": "30 2 * * *", "tz": "Europe/Paris", "catch_up": "all", ...}."""
    if not isinstance(record, dict):
        raise BadInput('expected an object such as {"type": "Fizz", "every": "5m"}')
    unknown = sorted(set(record) - set(_RECORD_KEYS))
    if unknown:
        raise BadInput(f"unknown field {unknown[0]!r}: use {', '.join(_RECORD_KEYS)}")
    if "type" not in record:
        raise BadInput('missing "type": one of Fizz, Buzz, FizzBuzz')
    for key in _RECORD_KEYS:
        value = record.get(key)
        if key != "max_catch_up" and value is not None and not isinstance(value, str):
            raise BadInput(f'"{key}" must be a string')
    max_catch_up = record.get("max_catch_up")
    if max_catch_up is not None and (isinstance(max_catch_up, bool)
                                     or not isinstance(max_catch_up, int)):
        raise BadInput('"max_catch_up" must be a whole number')
    return parse_schedule_spec(
        record["type"], every=record.get("every"), cron=record.get("cron"),
        tz=record.get("tz"), start=record.get("start"), end=record.get("end"),
        catch_up=record.get("catch_up"), max_catch_up=max_catch_up, now=now)


def _read_time(name: str, text: str, now: datetime) -> datetime:
    try:
        return parse_time(text, now)
    except BadInput as exc:
        raise BadInput(f"{name}: {exc}") from None


def format_local(instant: datetime, zone: zoneinfo.ZoneInfo) -> str:
    """A time as the zone's people read it: '2025-03-09 03:00:00 EDT (-04:00)'."""
    local = instant.astimezone(zone)
    offset = local.strftime("%z")
    offset = f"{offset[:3]}:{offset[3:5]}" + (f":{offset[5:]}" if len(offset) > 5 else "")
    return f"{local.strftime('%Y-%m-%d %H:%M:%S')} {local.tzname()} ({offset})"
