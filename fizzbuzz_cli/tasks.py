"""The task model: task types and what they do, statuses, and how times are read and shown."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

from fizzbuzz_cli.errors import BadInput

UTC = timezone.utc
MAX_TASK_ID = 2**31 - 1  # tasks.id is a SERIAL (int4)


class TaskType(str, Enum):
    """The three kinds of task; the value is how the database stores the name."""

    FIZZ = "Fizz"
    BUZZ = "Buzz"
    FIZZBUZZ = "FizzBuzz"

    @property
    def duration(self) -> float:
        """Seconds between the start of a task and the line it prints."""
        return _DURATIONS[self]

    def output(self, task_id: int, now: datetime) -> str:
        """The line a worker prints when the task finishes."""
        if self is TaskType.FIZZBUZZ:
            return f"FizzBuzz {format_time(now, micro=True)}"
        return f"{self.value} {task_id}"

    @classmethod
    def parse(cls, text: str) -> TaskType:
        """Any casing of a type name: fizz, FIZZ, FizzBuzz..."""
        found = _TYPES_BY_LOWER.get(str(text).lower())
        if found is None:
            raise BadInput(f"unknown task type {text!r}: use one of {choices(cls)}")
        return found


_DURATIONS = {TaskType.FIZZ: 3.0, TaskType.BUZZ: 5.0, TaskType.FIZZBUZZ: 0.0}
TYPES_BY_NAME = {t.value: t for t in TaskType}  # exact names, as stored and as the API takes
_TYPES_BY_LOWER = {t.value.lower(): t for t in TaskType}


class Status(str, Enum):
    WAITING = "Waiting"
    CLAIMED = "Claimed"
    COMPLETE = "Complete"

    @classmethod
    def parse(cls, text: str) -> Status:
        for status in cls:
            if status.value.lower() == str(text).lower():
                return status
        raise BadInput(f"unknown status {text!r}: use one of {choices(cls)}")


STATUSES_BY_NAME = {s.value: s for s in Status}  # as stored


_ASCII_ID = re.compile(r"[0-9]{1,10}")


def parse_task_id(text: str) -> int:
    """A task id as people and URLs write it: ASCII digits only (no sign, no spaces, no
    other scripts' digits, which int() would take), from 1 to 2^31 - 1 (tasks.id is int4)."""
    raw = str(text)
    if not _ASCII_ID.fullmatch(raw) or not 1 <= int(raw) <= MAX_TASK_ID:
        raise BadInput(f"invalid task id {raw!r}: use a whole number from 1 to {MAX_TASK_ID}")
    return int(raw)


def parse_task_record(
    record: Any,
    *,
    now: datetime | None = None,
    exact_type: bool = False,
    time_required: bool = False,
    relative: bool = True,
) -> tuple[TaskType, datetime]:
    """(type, time) from one task object: {"type": "Fizz", "time": "..."} (the original
    project's "typ" is taken for "type"). The one reader shared by `fizz add --file` and
    the HTTP API; the HTTP API asks for the original's rules: an exact type name, a time
    that is given, and RFC 3339 only."""
    if not isinstance(record, dict):
        raise BadInput('expected an object such as {"type": "Fizz", "time": '
                       '"2023-03-28T11:59:59Z"}')
    kind = record.get("type", record.get("typ"))
    if kind is None:
        raise BadInput('missing "type": one of Fizz, Buzz, FizzBuzz')
    if exact_type:
        if not isinstance(kind, str) or kind not in TYPES_BY_NAME:
            raise BadInput(f'invalid "type" {kind!r}: use Fizz, Buzz or FizzBuzz '
                           "(case-sensitive)")
        task_type = TYPES_BY_NAME[kind]
    elif not isinstance(kind, str):
        raise BadInput(f'invalid "type" {kind!r}: use one of {choices(TaskType)}')
    else:
        task_type = TaskType.parse(kind)
    when = record.get("time")
    if when is not None and not isinstance(when, str):
        raise BadInput('"time" must be a string such as "2023-03-28T11:59:59Z"')
    if when is None or not when.strip():
        if time_required:
            raise BadInput('missing "time": an RFC 3339 time such as "2023-03-28T11:59:59Z"')
        when = "now"  # the rule everywhere but the HTTP API: no time means now
    if not relative:
        try:
            return task_type, parse_absolute(when)
        except BadInput:
            raise BadInput(f'invalid "time" {when!r}: use RFC 3339 such as '
                           '"2023-03-28T11:59:59Z"') from None
    return task_type, parse_time(when, now)


def choices(enum: type[Enum]) -> str:
    return ", ".join(member.value.lower() for member in enum)


@dataclass(frozen=True, slots=True)
class Task:
    id: int
    type: TaskType
    status: Status
    time: datetime
    created_at: datetime | None = None
    claimed_at: datetime | None = None
    completed_at: datetime | None = None
    worker: str | None = None
    attempts: int = 0
    schedule_id: int | None = None  # the schedule it came from (fizz schedule), if any
    occurrence: datetime | None = None  # ... and the occurrence of that schedule it is

    def to_json(self) -> dict[str, Any]:
        """The JSON shape shared by the CLI and the HTTP API (`typ` is the original's name)."""
        return {
            "id": self.id,
            "type": self.type.value,
            "typ": self.type.value,
            "status": self.status.value,
            "time": format_time(self.time),
            "created_at": _maybe_time(self.created_at),
            "claimed_at": _maybe_time(self.claimed_at),
            "completed_at": _maybe_time(self.completed_at),
            "worker": self.worker,
            "attempts": self.attempts,
            "schedule_id": self.schedule_id,
            "occurrence": _maybe_time(self.occurrence),
        }


def _maybe_time(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


# ---------------------------------------------------------------------------- times

TIME_HELP = (
    "RFC 3339 such as 2023-03-28T11:59:59Z (no offset means UTC), 'now', "
    "or relative such as +30s, +5m, +2h, -1d, 'in 10 minutes', '5 minutes ago'"
)

_UNITS = {
    "ms": 0.001, "msec": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}  # fmt: skip
_PART = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]+)\s*")  # ASCII digits, as ids
_RELATIVE = re.compile(
    r"^(?:(?P<sign>[+-])|in\s+)(?P<body>.+?)(?P<ago>\s+ago)?$"  # +5m, -1d, in 10 minutes
    r"|^(?P<body2>.+?)\s+ago$"  # 5 minutes ago
)


_MAX_TIME_LENGTH = 100
_LEAP_SECOND = re.compile(r"[Tt ]\d\d:\d\d:(60)")


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """Read a task time from the command line or a file; return aware UTC. No time (an empty
    or blank text, as a CSV row `Buzz,` has) means now, as a missing one does."""
    raw = str(text).strip()
    if len(raw) > _MAX_TIME_LENGTH:  # no valid time is this long; spare the regexes
        raise BadInput(f"invalid time {raw[:30]!r}... ({len(raw)} characters): use {TIME_HELP}")
    lowered = raw.lower()
    if lowered in ("", "now"):
        return now or datetime.now(UTC)
    relative = _parse_relative(lowered)
    if relative is not None:
        try:
            return (now or datetime.now(UTC)) + relative
        except OverflowError:
            raise _out_of_range(raw) from None
    return parse_absolute(raw)


def parse_absolute(raw: str) -> datetime:
    """RFC 3339 / ISO 8601; a time without an offset is UTC."""
    try:
        value = datetime.fromisoformat(raw)  # fast path: covers RFC 3339 on Python 3.11+
    except ValueError:
        from dateutil.parser import isoparse  # the rarer ISO 8601 forms only

        try:
            value = isoparse(raw)
        except (ValueError, OverflowError):
            leap = _LEAP_SECOND.search(raw)
            if leap is None:
                raise BadInput(f"invalid time {raw!r}: use {TIME_HELP}") from None
            # RFC 3339 allows a leap second (23:59:60); Python does not: take the next second.
            value = parse_absolute(raw[:leap.start(1)] + "59" + raw[leap.end(1):])
            try:
                return value + timedelta(seconds=1)
            except OverflowError:
                raise _out_of_range(raw) from None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise _out_of_range(raw) from None


def _out_of_range(raw: str) -> BadInput:
    return BadInput(f"time {raw!r} is out of range (years 1 to 9999)")


def _parse_relative(text: str) -> timedelta | None:
    match = _RELATIVE.match(text)
    if match is None:
        return None
    body = match.group("body") or match.group("body2")
    seconds = 0.0
    pos = 0
    while pos < len(body):
        part = _PART.match(body, pos)
        if part is None or part.group(2) not in _UNITS:
            return None
        seconds += float(part.group(1)) * _UNITS[part.group(2)]
        pos = part.end()
    if match.group("sign") == "-" or match.group("ago") or match.group("body2"):
        seconds = -seconds
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise _out_of_range(text) from None


def format_epoch(seconds: float) -> str:
    """Epoch seconds (as the database's extract(epoch ...) gives them) in RFC 3339."""
    return format_time(datetime.fromtimestamp(seconds, UTC))


def format_time(value: datetime, micro: bool = False) -> str:
    """RFC 3339 in UTC with a Z; fractions only when present (always with micro=True).
    (Called for every time of every listed task: a time already in UTC, as PostgreSQL
    sends them to a session in UTC, is not converted again.)"""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    spec = "microseconds" if micro or value.microsecond else "seconds"
    return value.isoformat(timespec=spec)[:-6] + "Z"  # '+00:00' -> 'Z'
