"""A model of Debian cron's main loop (cron.c), for checking fizzbuzz_cli.recurrence.

Written from the loop's logic, independently of cronsim: a small matcher for the 5 fields
and a minute-by-minute simulation of how cron's virtual clock follows the wall clock,
including its four kinds of wake-up (normal; a short jump forward: every job of each
skipped minute; a daylight-saving jump forward of up to 3 hours: fixed jobs of each
skipped minute; a jump back of up to 3 hours: wildcard jobs only, fixed jobs wait until
the clock is past where it was; anything larger: the clock was set, run what matches now).
Returns the set of instants (UTC, whole minutes) at which the job starts.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def _field(text: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for term in text.split(","):
        base, _, step = term.partition("/")
        if base == "*":
            first, last = low, high
        elif "-" in base:
            first, last = (int(x) for x in base.split("-"))
        else:
            first = int(base)
            last = high if step else first
        values.update(range(first, last + 1, int(step) if step else 1))
    return values


class Job:
    def __init__(self, expr: str) -> None:
        parts = expr.split()
        self.sets = [_field(p, lo, hi) for p, (lo, hi) in zip(parts, _RANGES, strict=True)]
        if 7 in self.sets[4]:
            self.sets[4].add(0)
        self.wild = parts[0].startswith("*") or parts[1].startswith("*")
        self.day_and = parts[2].startswith("*") or parts[4].startswith("*")

    def matches(self, wall: datetime) -> bool:
        minute, hour, dom, month, dow = self.sets
        if wall.minute not in minute or wall.hour not in hour or wall.month not in month:
            return False
        day, week = wall.day in dom, (wall.isoweekday() % 7) in dow
        return (day and week) if self.day_and else (day or week)


def simulate(expr: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """Instants in (start, end] at which Debian's cron, running from `start`, starts the job."""
    job, tz = Job(expr), ZoneInfo(zone)

    def clock(instant: datetime) -> int:  # cron's clockTime: local minutes since the epoch
        offset = instant.astimezone(tz).utcoffset()
        assert offset is not None
        return int(((instant - _EPOCH) + offset).total_seconds() // 60)

    runs: set[datetime] = set()

    def find(virtual: int, now: datetime, wild: bool, fixed: bool) -> None:
        wanted = (job.wild and wild) or (not job.wild and fixed)
        if wanted and job.matches(datetime(1970, 1, 1) + timedelta(minutes=virtual)):
            runs.add(now)

    now = start
    virtual = clock(now)
    while now < end:
        now += timedelta(minutes=1)
        running = clock(now)
        diff = running - virtual
        if diff == 1 or diff > 180 or diff < -180:  # normal, or the clock was set
            virtual = running
            find(virtual, now, True, True)
        elif diff > 5:  # daylight saving forward
            find(running, now, True, False)
            while virtual < running:
                virtual += 1
                find(virtual, now, False, True)
        elif diff > 0:  # a short jump forward
            while virtual < running:
                virtual += 1
                find(virtual, now, True, True)
        else:  # daylight saving back
            find(running, now, True, False)
    return sorted(runs)
