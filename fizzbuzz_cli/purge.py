"""Purging completed tasks by age: by hand (`fizz purge --before AGE`) or on a timer
(`fizz work --retain AGE`, `fizz serve --retain AGE`).

Only Complete tasks with a completion time before the cutoff are deleted (tasks completed
before fizz, which have none, are kept). They go in batches, each its own short transaction
found through the partial index on completed_at, walking forward from where the last batch
ended, with a pause between batches. Why:

- the workers never wait: a batch deletes only Complete rows, which no claim or record
  touches (a batch that meets another purge's rows in a deadlock is simply run again);
- no long transaction: one deleting a million rows at once would hold back the cleanup of
  dead row versions for its whole length, and the workers' claim scans of the waiting index
  would wade through them;
- the workers' commits stay quick: a batch commits asynchronously (synchronous_commit off:
  a purge lost in a crash only leaves rows to purge again), so the purge never makes a
  disk flush of its own for theirs to queue behind (its WAL goes out with the WAL writer's
  and their flushes), and the pause spreads that WAL over time.

An automatic purger (``Purger``) runs one pass every so often; one process at a time purges
(an advisory lock; the others skip their turn), so a hundred workers started with --retain
purge like one.

Threading: ``purge`` runs on the caller's thread and connection. A ``Purger`` is a thread
that owns its connection (a Link); other threads only call ``stop()``.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from fizzbuzz_cli import stats
from fizzbuzz_cli.durations import DURATION_HELP, format_duration, parse_duration, read_duration
from fizzbuzz_cli.errors import BadInput, brief
from fizzbuzz_cli.link import CONNECTION_ERRORS, Link, LinkDown, Outage, Timeouts
from fizzbuzz_cli.tasks import UTC, format_time, parse_absolute

log = logging.getLogger("fizz.purge")

BATCH = 1000  # rows per delete statement
PAUSE = 0.05  # seconds between batches at least ...
DUTY = 0.5  # ... and at least as long as the batch took, over this (so purging takes at
#             most about half of one backend's time)
LOCK_KEY = (0x66697A7A, 0x7075)  # ("fizz", "pu"): the automatic purgers' advisory lock

AGE_HELP = f"{DURATION_HELP}, or an RFC 3339 time such as 2026-11-20T00:00:00Z"

# ------------------------------------------------------------------------------ queries

# The cutoff for an age, on the database's clock (the clocks of the machines that purge
# may differ from it, and from each other).
CUTOFF = "SELECT now() - %s * interval '1 second'"

# What a dry run reports: an index-only count over the purgeable part of the index.
COUNT_PURGEABLE = """
    SELECT count(*) FROM tasks WHERE status = 'Complete' AND completed_at < %(before)s"""

# One batch: the oldest purgeable rows from where the last batch ended (a keyset walk, so
# no batch re-reads the index entries of rows already deleted). No FOR UPDATE: locking each
# row before deleting it would cost a third more WAL and time. A row that someone changes
# meanwhile (a worker handing back a run it could not print) is waited for, then checked
# again by the outer WHERE: only a row still Complete and old enough goes. Returns how many
# rows the batch took up, how many of them went, and the completion time reached.
PURGE_BATCH = """
    WITH doomed AS (
        SELECT id, completed_at FROM tasks
        WHERE status = 'Complete' AND completed_at >= %(after)s AND completed_at < %(before)s
        ORDER BY completed_at
        LIMIT %(batch)s
    ), deleted AS (
        DELETE FROM tasks USING doomed
        WHERE tasks.id = doomed.id
          AND tasks.status = 'Complete' AND tasks.completed_at < %(before)s
        RETURNING tasks.id
    )
    SELECT (SELECT count(*) FROM doomed), (SELECT count(*) FROM deleted),
           (SELECT max(completed_at) FROM doomed)"""

# Purging needs no durable commit: a batch lost in a crash is purged again next time. Set
# for each batch's transaction alone, so the caller's connection is left as it was.
ASYNC_COMMIT = "SET LOCAL synchronous_commit = off"

TRY_LOCK = "SELECT pg_try_advisory_lock(%s, %s)"
UNLOCK = "SELECT pg_advisory_unlock(%s, %s)"

# ------------------------------------------------------------------------------ ages

_LOOKS_LIKE_A_DATE = re.compile(r"\d{4}-\d\d-\d\d")


@dataclass(frozen=True, slots=True)
class Age:
    """How old a completed task must be to go: a duration back from now, or a moment."""

    ago: timedelta | None = None
    moment: datetime | None = None

    def __str__(self) -> str:
        if self.moment is not None:
            return format_time(self.moment)
        return format_duration(self.ago or timedelta(0))


def parse_age(text: str) -> Age:
    """AGE as `fizz purge --before` takes it: 7d, 12h, 30m, 90s, 2w, 1d12h, or RFC 3339."""
    raw = str(text).strip()
    ago = read_duration(raw)
    if ago is not None:
        return Age(ago=ago)
    if _LOOKS_LIKE_A_DATE.match(raw):
        try:
            return Age(moment=parse_absolute(raw))
        except BadInput:
            pass
    raise BadInput(f"invalid age {raw!r}: use {AGE_HELP}")


def parse_retention(text: str) -> timedelta:
    """AGE as `--retain` takes it: a duration only (a purger runs again and again)."""
    if read_duration(text) is None and _LOOKS_LIKE_A_DATE.match(str(text).strip()):
        raise BadInput(f"invalid retention {str(text).strip()!r}: use {DURATION_HELP} "
                       "(a time would not move on)")
    return parse_duration(text, "retention")


# ------------------------------------------------------------------------------ purging


@dataclass(frozen=True, slots=True)
class Purge:
    """What a purge did (or, dry, would do)."""

    deleted: int  # tasks deleted (a dry run: that would be)
    before: datetime  # the cutoff, on the database's clock
    dry_run: bool = False
    batches: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """`fizz purge --json`: {"deleted": 1200, "before": "...Z", "dry_run": false}."""
        return {"deleted": self.deleted, "before": format_time(self.before),
                "dry_run": self.dry_run}


def cutoff(conn: psycopg.Connection, age: Age) -> datetime:
    """The completion time before which tasks go, on the database's clock."""
    if age.moment is not None:
        return age.moment
    assert age.ago is not None
    row = conn.execute(CUTOFF, [age.ago.total_seconds()]).fetchone()
    assert row is not None
    return row[0].astimezone(UTC)


def count_purgeable(conn: psycopg.Connection, before: datetime) -> int:
    row = conn.execute(COUNT_PURGEABLE, {"before": before}).fetchone()
    assert row is not None
    return int(row[0])


def purge(conn: psycopg.Connection, age: Age, *, dry_run: bool = False, batch: int = BATCH,
          pause: float = PAUSE, progress: Callable[[int], None] | None = None,
          stop: threading.Event | None = None) -> Purge:
    """Delete the Complete tasks completed before `age`, in batches (see the module's
    docstring); a dry run counts them. `progress(deleted so far)` is called after each
    batch; `stop` (set from another thread) ends the purge after the current batch."""
    started = time.monotonic()
    before = cutoff(conn, age)
    if dry_run:
        return Purge(count_purgeable(conn, before), before, dry_run=True,
                     seconds=time.monotonic() - started)
    deleted = batches = 0
    after: datetime | None = None
    while True:
        began = time.monotonic()
        try:
            taken, n, reached = purge_batch(conn, before, after, batch)
        except psycopg.errors.DeadlockDetected:  # another purge on the same rows: again
            log.debug("purge batch lost a deadlock; running it again")
            continue
        deleted, batches = deleted + n, batches + 1
        if progress is not None:
            progress(deleted)
        if taken < batch:
            break
        after = reached
        wait = max(pause, (time.monotonic() - began) * (1 - DUTY) / DUTY)
        if stop is not None:
            if stop.wait(wait):
                break
        else:
            time.sleep(wait)
    return Purge(deleted, before, batches=batches, seconds=time.monotonic() - started)


def purge_batch(conn: psycopg.Connection, before: datetime, after: datetime | None,
                batch: int = BATCH) -> tuple[int, int, datetime | None]:
    """Delete up to `batch` purgeable rows completed at or after `after` (None: from the
    oldest); (rows taken up, rows deleted, the latest completion time taken up). Fewer
    deleted than taken up: others changed or deleted some meanwhile."""
    with conn.transaction():
        conn.execute(ASYNC_COMMIT)
        row = conn.execute(PURGE_BATCH, {"before": before, "batch": batch,
                                         "after": after or datetime.min.replace(tzinfo=UTC)}
                           ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), row[2]


# ------------------------------------------------------------------------------ automatic


def purge_interval(retain: timedelta) -> float:
    """Seconds between passes: a tenth of the retention, from 1 s to a minute."""
    return max(1.0, min(retain.total_seconds() / 10, 60.0))


class Purger(threading.Thread):
    """Purges tasks completed more than `retain` ago, one pass every `interval` seconds
    (jittered), on its own connection; skips its turn while another process purges."""

    def __init__(self, url: str, retain: timedelta, *, interval: float | None = None,
                 batch: int = BATCH, pause: float = PAUSE, lease: float = 10.0,
                 outage: Outage | None = None) -> None:
        super().__init__(name="fizz-purger", daemon=True)
        self.retain, self.batch, self.pause = retain, batch, pause
        self.interval = purge_interval(retain) if interval is None else interval
        self._halt = threading.Event()
        self.link = Link(url, "purger", Timeouts.for_lease(lease), outage or Outage(log),
                         application="fizz purger", wait=self._halt.wait)
        self.passes = 0  # passes that held the lock (for tests and logs)
        self.purged = 0

    def stop(self, timeout: float | None = 10.0) -> None:
        """End the loop (after the current batch) and wait for it."""
        self._halt.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        log.info("purging tasks completed more than %s ago, every %s s",
                 format_duration(self.retain), f"{self.interval:g}")
        try:
            while not self._halt.is_set():
                pause = self.interval * random.uniform(0.9, 1.1)
                try:
                    self.link.run(self._pass)
                except LinkDown:
                    pause = self.link.pause()
                except CONNECTION_ERRORS as exc:  # a statement timed out; try next time
                    log.warning("purging: %s; trying again in %s s", brief(exc),
                                f"{self.interval:g}")
                except psycopg.Error as exc:  # e.g. a schema without the index: not fatal
                    log.warning("purging: %s; trying again in %s s", brief(exc),
                                f"{self.interval:g}")
                self._halt.wait(pause)
        finally:
            self.link.close()

    def _pass(self, conn: psycopg.Connection) -> None:
        if not conn.execute(TRY_LOCK, LOCK_KEY).fetchone()[0]:  # type: ignore[index]
            log.debug("another process is purging; skipping this turn")
            return
        try:
            done = purge(conn, Age(ago=self.retain), batch=self.batch, pause=self.pause,
                         stop=self._halt)
            stats.fold_totals(conn)
        finally:
            if not (conn.closed or conn.broken):
                conn.execute(UNLOCK, LOCK_KEY)
        self.passes += 1
        self.purged += done.deleted
        if done.deleted:
            log.info("purged %s tasks completed before %s (%s batches, %.1f s)", done.deleted,
                     format_time(done.before), done.batches, done.seconds)
