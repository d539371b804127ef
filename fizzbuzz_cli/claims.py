"""The claim lifecycle in SQL: what a worker (and a reaper) asks of the database.

A task moves Waiting -> Claimed (a lease, fenced by worker and attempt) -> Complete. A fizz
worker completes a task *before* it prints the task's line: the completion is the durable
record that this attempt runs the task ("record, then print"), so a line is printed only
after the database has agreed, under the claim's fence, that no one else will run it.

Every function takes an open autocommit connection and runs one named statement (two where
said). Batches are sorted by id, and statements that lock several rows lock them in id
order, so two statements of fizz never deadlock on each other. Queries on the claim path
name the status as a literal, never a parameter, so PostgreSQL uses the partial indexes.
Nothing here keeps state between calls: the worker and the reaper own theirs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from fizzbuzz_cli.tasks import TYPES_BY_NAME, TaskType

NOTIFY_CHANNEL = "fizz_tasks"  # payload: "<epoch of the earliest new waiting task> <xid>"
NEXT_CHANNEL = "fizz_next"  # payload: "<epoch of the next waiting task, or -> <snapshot>"
CANCEL_CHANNEL = "fizz_cancel"  # payload: comma-separated ids of deleted claimed tasks, or *

# ------------------------------------------------------------------------------ queries

# The next due time together with the snapshot it was read in (one statement, one snapshot):
# the snapshot lets other workers tell which announced inserts this answer already saw.
NEXT_DUE = """
    SELECT (SELECT extract(epoch FROM time)::float8 FROM tasks
            WHERE status = 'Waiting' ORDER BY time, id LIMIT 1),
           pg_current_snapshot()::text"""

# Claims the earliest waiting tasks due within `ahead` seconds; rows another worker is
# claiming at this instant are skipped, never waited for, and never claimed twice. Returns
# the claim's own time (now()) too: the worker's cut-off for handing back orphans.
CLAIM_DUE = """
    WITH due AS (
        SELECT id FROM tasks
        WHERE status = 'Waiting' AND time <= now() + %(ahead)s * interval '1 second'
        ORDER BY time, id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    )
    UPDATE tasks SET status = 'Claimed', worker = %(worker)s, claimed_at = now(),
                     renewed_at = now(), lease_until = now() + %(lease)s * interval '1 second',
                     attempts = tasks.attempts + 1, started_at = NULL
    FROM due WHERE tasks.id = due.id
    RETURNING tasks.id, tasks.tasktype, extract(epoch FROM tasks.time)::float8, tasks.attempts,
              extract(epoch FROM now())::float8"""

# Record, then print: completes the claims this worker still holds (same worker, same
# attempt, still Claimed), locking them in id order, and stamps when each run began and
# ends: as planned (the record comes a few milliseconds ahead of the line), or later if
# this record itself comes late, so that completed_at - started_at is the task's sleep.
# Claims it no longer holds are left alone: reaped, re-claimed or deleted, they are someone
# else's now.
#
# Every statement on a batch of claims is driven by the batch: a LATERAL lookup of each id
# by primary key, in the batch's order (callers sort it by id, so rows are locked in id
# order and two of fizz's statements never deadlock). The planner cannot turn that join
# around: with a plain join, statistics taken in the middle of a burst (thousands of rows
# just claimed or completed) led it to scan the table for each id of the batch, a nested
# loop that took seconds per statement.
RECORD_RUNS = """
    WITH held AS (
        SELECT mine.id, b.start, b.duration
        FROM unnest(%(ids)s::int[], %(attempts)s::int[], %(starts)s::float8[],
                    %(durations)s::float8[]) AS b(id, attempt, start, duration)
        CROSS JOIN LATERAL (
            SELECT tasks.id FROM tasks
            WHERE tasks.id = b.id AND tasks.attempts = b.attempt
              AND tasks.worker IS NOT DISTINCT FROM %(worker)s
              AND tasks.status IS NOT DISTINCT FROM 'Claimed'
            FOR UPDATE
        ) AS mine
    )
    UPDATE tasks SET status = 'Complete', lease_until = NULL,
                     started_at = greatest(to_timestamp(held.start),
                                           now() - held.duration * interval '1 second'),
                     completed_at = greatest(to_timestamp(held.start + held.duration), now())
    FROM held WHERE tasks.id = held.id
    RETURNING tasks.id"""

# After a record whose answer was lost or incomplete: which of these runs are recorded as
# this worker's (by this worker's earlier statement, or one that committed concurrently)?
# A statement of its own, so that its snapshot sees whatever committed before it began.
RECORDED_RUNS = """
    SELECT mine.id
    FROM unnest(%(ids)s::int[], %(attempts)s::int[]) AS b(id, attempt)
    CROSS JOIN LATERAL (
        SELECT tasks.id FROM tasks
        WHERE tasks.id = b.id AND tasks.attempts = b.attempt
          AND tasks.worker IS NOT DISTINCT FROM %(worker)s
          AND tasks.status IS NOT DISTINCT FROM 'Complete'
    ) AS mine"""

# A recorded run whose line could not be printed (stdout closed): undo the record, so that
# the task runs elsewhere. Only ever for runs this worker knows it did not print.
UNRECORD_RUNS = """
    WITH held AS (
        SELECT mine.id
        FROM unnest(%(ids)s::int[], %(attempts)s::int[]) AS b(id, attempt)
        CROSS JOIN LATERAL (
            SELECT tasks.id FROM tasks
            WHERE tasks.id = b.id AND tasks.attempts = b.attempt
              AND tasks.worker IS NOT DISTINCT FROM %(worker)s
              AND tasks.status IS NOT DISTINCT FROM 'Complete'
            FOR UPDATE
        ) AS mine
    ), undone AS (
        UPDATE tasks SET status = 'Waiting', worker = NULL, claimed_at = NULL,
                         renewed_at = NULL, lease_until = NULL, completed_at = NULL,
                         started_at = NULL
        FROM held WHERE tasks.id = held.id
        RETURNING tasks.time
    )
    SELECT count(*), extract(epoch FROM min(time))::float8 FROM undone"""

# Hands claims back to Waiting (a stopping worker's unstarted tasks), fenced like a record.
RELEASE_CLAIMS = """
    WITH held AS (
        SELECT mine.id
        FROM unnest(%(ids)s::int[], %(attempts)s::int[]) AS b(id, attempt)
        CROSS JOIN LATERAL (
            SELECT tasks.id FROM tasks
            WHERE tasks.id = b.id AND tasks.attempts = b.attempt
              AND tasks.worker IS NOT DISTINCT FROM %(worker)s
              AND tasks.status IS NOT DISTINCT FROM 'Claimed'
            FOR UPDATE
        ) AS mine
    ), released AS (
        UPDATE tasks SET status = 'Waiting', worker = NULL, claimed_at = NULL,
                         renewed_at = NULL, lease_until = NULL
        FROM held WHERE tasks.id = held.id
        RETURNING tasks.time
    )
    SELECT count(*), extract(epoch FROM min(time))::float8 FROM released"""

# Renews exactly the claims the worker knows it holds (never "every row under my name": a
# claim still in flight is not known yet), locking them in id order; the caller sends them
# in chunks, so that a record waiting for one of these rows waits for one chunk at most.
# The same statement keeps the worker's row in fizz_workers fresh, and removes the rows of
# workers gone for five minutes.
RENEW_LEASES = """
    WITH seen AS (
        INSERT INTO fizz_workers (id, host, pid, version, started_at, last_seen, lease,
                                  concurrency, in_flight, ran)
        VALUES (%(worker)s, %(host)s, %(pid)s, %(version)s, to_timestamp(%(started)s::float8),
                now(), %(lease)s, %(concurrency)s, %(in_flight)s, %(ran)s)
        ON CONFLICT (id) DO UPDATE SET last_seen = now(), in_flight = EXCLUDED.in_flight,
                                       ran = EXCLUDED.ran
    ), gone AS (
        DELETE FROM fizz_workers WHERE last_seen < now() - interval '5 minutes'
    ), mine AS (
        SELECT held.id
        FROM unnest(%(ids)s::int[], %(attempts)s::int[]) AS b(id, attempt)
        CROSS JOIN LATERAL (
            SELECT tasks.id FROM tasks
            WHERE tasks.id = b.id AND tasks.attempts = b.attempt
              AND tasks.worker IS NOT DISTINCT FROM %(worker)s
              AND tasks.status IS NOT DISTINCT FROM 'Claimed'
            FOR UPDATE
        ) AS held
    ), renewed AS (
        UPDATE tasks SET lease_until = now() + %(lease)s * interval '1 second',
                         renewed_at = now()
        FROM mine WHERE tasks.id = mine.id
        RETURNING tasks.id
    )
    SELECT (SELECT coalesce(array_agg(id), '{}') FROM renewed),
           extract(epoch FROM now())::float8"""

# Hands back orphans: rows Claimed under this worker's name that it does not hold, claimed
# no later than its last claim whose answer it has read (a claim whose answer was lost when
# the connection dropped). A later claim may still be in flight, so it is never touched.
# "Not held" is an anti-join against the worker's list (hashed, not a scan of the list per
# row: with 10,000 claims a `<> ALL(list)` took seconds).
RELEASE_ORPHANS = """
    WITH orphans AS (
        SELECT tasks.id FROM tasks
        WHERE tasks.status = 'Claimed' AND tasks.worker = %(worker)s
          AND tasks.claimed_at <= to_timestamp(%(cutoff)s::float8)
          AND NOT EXISTS (SELECT 1 FROM unnest(%(ids)s::int[]) AS kept(id)
                          WHERE kept.id = tasks.id)
        ORDER BY tasks.id
        FOR UPDATE SKIP LOCKED
    ), released AS (
        UPDATE tasks SET status = 'Waiting', worker = NULL, claimed_at = NULL,
                         renewed_at = NULL, lease_until = NULL
        FROM orphans WHERE tasks.id = orphans.id
        RETURNING tasks.id, tasks.time
    )
    SELECT coalesce(array_agg(id ORDER BY id), '{}'), extract(epoch FROM min(time))::float8
    FROM released"""

# Hands back claims whose holder is gone, under the rule that no lease is ever reaped
# because nobody *could* renew it: this reaper must have seen the database continuously
# (no gap longer than max_gap between its observations, this statement included) for at
# least the claim's whole lease, and the claim must have expired meanwhile. A freeze or cut
# of PostgreSQL, or of the reaper itself, breaks the reaper's continuity, so leases that
# ran out during it are judged only after a full lease of live observation. Rows being
# changed right now (a record, a renewal) are skipped, never waited for.
REAP_EXPIRED = """
    WITH expired AS (
        SELECT id, worker FROM tasks
        WHERE status = 'Claimed' AND lease_until < now()
          AND now() - to_timestamp(%(last)s::float8) <= %(max_gap)s * interval '1 second'
          AND to_timestamp(%(since)s::float8)
              <= now() - (lease_until - coalesce(renewed_at, claimed_at, lease_until))
        ORDER BY id
        FOR UPDATE SKIP LOCKED
    ), reaped AS (
        UPDATE tasks SET status = 'Waiting', worker = NULL, claimed_at = NULL,
                         renewed_at = NULL, lease_until = NULL
        FROM expired WHERE tasks.id = expired.id
        RETURNING tasks.id, expired.worker, tasks.time
    )
    SELECT extract(epoch FROM now())::float8,
           (SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM reaped),
           (SELECT coalesce(array_agg(coalesce(worker, '') ORDER BY id), '{}') FROM reaped),
           (SELECT extract(epoch FROM min(time))::float8 FROM reaped)"""

# Wakes the workers for tasks back in Waiting (as the insert trigger does for new ones).
NOTIFY_WAITING = "SELECT pg_notify('fizz_tasks', %s::text || ' ' || pg_current_xact_id())"

# Tells the other workers the next due time, as of a snapshot (see announce_next).
NOTIFY_NEXT = "SELECT pg_notify('fizz_next', %s)"

# The database's clock, to run tasks on it when ours differs.
CLOCK = "SELECT extract(epoch FROM clock_timestamp())::float8"

# ------------------------------------------------------------------------------ values


@dataclass(frozen=True, slots=True)
class Claim:
    """A task a worker holds: run it at `due` (database epoch seconds), with `attempt`."""

    id: int
    type: TaskType
    due: float
    attempt: int


@dataclass(frozen=True, slots=True)
class ClaimBatch:
    claims: list[Claim]
    at: float  # the database time of the claim (its now()): the worker's orphan cut-off


@dataclass(frozen=True, slots=True)
class Run:
    """One attempt at running a claimed task, as recorded before its line is printed."""

    claim: Claim
    start: float  # database epoch seconds at which the run began (or begins)

    @property
    def key(self) -> tuple[int, int]:
        return self.claim.id, self.claim.attempt


@dataclass(frozen=True, slots=True)
class Renewal:
    held: set[int]  # ids whose lease was extended: still this worker's
    at: float  # the database time of the renewal


@dataclass(frozen=True, slots=True)
class Reaped:
    id: int
    worker: str | None


@dataclass(frozen=True, slots=True)
class Reaping:
    at: float  # the database time of the statement: an observation for the reaper
    reaped: list[Reaped]


# ------------------------------------------------------------------------------ functions


def claim_due(
    conn: psycopg.Connection, worker: str, *, ahead: float, limit: int, lease: float
) -> ClaimBatch:
    rows = conn.execute(
        CLAIM_DUE, {"worker": worker, "ahead": ahead, "limit": limit, "lease": lease}
    ).fetchall()
    if not rows:
        return ClaimBatch([], 0.0)
    claims = [Claim(r[0], TYPES_BY_NAME[r[1]], r[2], r[3]) for r in rows]
    return ClaimBatch(claims, rows[0][4])


def next_due(conn: psycopg.Connection) -> tuple[float | None, str]:
    """(epoch of the earliest waiting task or None, the snapshot that saw it)."""
    row = conn.execute(NEXT_DUE).fetchone()
    assert row is not None
    return row[0], row[1]


def announce_next(conn: psycopg.Connection, due: float | None, snapshot: str) -> None:
    """Tell every worker the next due time as of `snapshot`, after a claim: the others then
    need not query to learn that the tasks they were about to claim are taken."""
    conn.execute(NOTIFY_NEXT, [f"{'-' if due is None else repr(due)} {snapshot}"])


def record_runs(conn: psycopg.Connection, worker: str, runs: Sequence[Run]) -> set[int]:
    """Complete these runs under their claims' fence; the ids now recorded as this worker's.

    An id missing from the answer is not this worker's to run: unless a statement of its
    own that committed concurrently recorded it, which a second query (a fresh snapshot)
    tells; it is asked only when something is missing, so the hot path is one statement.
    """
    ordered = sorted(runs, key=lambda run: run.claim.id)
    done = {r[0] for r in conn.execute(RECORD_RUNS, {
        "worker": worker,
        "ids": [run.claim.id for run in ordered],
        "attempts": [run.claim.attempt for run in ordered],
        "starts": [run.start for run in ordered],
        "durations": [run.claim.type.duration for run in ordered],
    })}
    missing = [run for run in ordered if run.claim.id not in done]
    if missing:
        done |= recorded_runs(conn, worker, missing)
    return done


def recorded_runs(conn: psycopg.Connection, worker: str, runs: Iterable[Run]) -> set[int]:
    """Which of these runs are recorded (Complete) as this worker's, attempt included."""
    ids, attempts = _pairs(runs)
    rows = conn.execute(RECORDED_RUNS, {"worker": worker, "ids": ids, "attempts": attempts})
    return {r[0] for r in rows}


def unrecord_runs(conn: psycopg.Connection, worker: str, runs: Iterable[Run]) -> int:
    """Undo records of runs that were never printed; returns how many went back to Waiting."""
    ids, attempts = _pairs(runs)
    row = conn.execute(UNRECORD_RUNS, {"worker": worker, "ids": ids,
                                       "attempts": attempts}).fetchone()
    return _woken(conn, row)


def release_claims(conn: psycopg.Connection, worker: str, claims: Iterable[Claim]) -> int:
    """Hand claims back to Waiting and wake the workers; returns how many were released."""
    ordered = sorted(claims, key=lambda c: c.id)
    row = conn.execute(RELEASE_CLAIMS, {"worker": worker, "ids": [c.id for c in ordered],
                                        "attempts": [c.attempt for c in ordered]}).fetchone()
    return _woken(conn, row)


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """What a worker says of itself in fizz_workers."""

    id: str
    host: str
    pid: int
    version: str
    started: float  # epoch seconds
    lease: float
    concurrency: int
    in_flight: int = 0
    ran: int = 0


def renew_leases(conn: psycopg.Connection, worker: WorkerInfo, claims: Iterable[Claim],
                 chunk: int = 1000) -> Renewal:
    """Extend the leases of exactly these claims (`chunk` per statement) and refresh the
    worker's row in fizz_workers; returns the ids still held."""
    ordered = sorted(claims, key=lambda c: c.id)
    held: set[int] = set()
    at = 0.0
    for start in range(0, max(len(ordered), 1), chunk):
        part = ordered[start:start + chunk]
        row = conn.execute(RENEW_LEASES, {
            "worker": worker.id, "lease": worker.lease, "host": worker.host,
            "pid": worker.pid, "version": worker.version, "started": worker.started,
            "concurrency": worker.concurrency, "in_flight": worker.in_flight,
            "ran": worker.ran, "ids": [c.id for c in part],
            "attempts": [c.attempt for c in part],
        }).fetchone()
        assert row is not None
        held.update(row[0])
        at = row[1]
    return Renewal(held, at)


def release_orphans(conn: psycopg.Connection, worker: str, keep: Iterable[Claim],
                    cutoff: float | None) -> list[int]:
    """Hand back the rows Claimed under this worker's name but not in `keep`, claimed no
    later than `cutoff` (database epoch; None: none), and wake the workers; their ids."""
    if cutoff is None:
        return []
    row = conn.execute(RELEASE_ORPHANS, {"worker": worker, "cutoff": cutoff,
                                         "ids": sorted(c.id for c in keep)}).fetchone()
    assert row is not None
    released, earliest = row
    if released:
        conn.execute(NOTIFY_WAITING, [repr(earliest)])
    return list(released)


def reap_expired(conn: psycopg.Connection, *, since: float | None, last: float | None,
                 max_gap: float) -> Reaping:
    """Hand back expired claims of holders that are gone (see REAP_EXPIRED) and wake the
    workers. `since`/`last`: the database times at which this reaper's current run of
    unbroken observations began and was last extended (None: it has none yet)."""
    row = conn.execute(REAP_EXPIRED, {
        "since": since if since is not None else math.inf,
        "last": last if last is not None else -math.inf,
        "max_gap": max_gap,
    }).fetchone()
    assert row is not None
    at, ids, workers, earliest = row
    if ids:
        conn.execute(NOTIFY_WAITING, [repr(earliest)])
    return Reaping(at, [Reaped(i, w or None) for i, w in zip(ids, workers, strict=True)])


def database_clock(conn: psycopg.Connection, samples: int = 5) -> tuple[float, float]:
    """(offset, uncertainty) in seconds: database clock minus ours, from the best of samples."""
    best: tuple[float, float] | None = None
    for _ in range(samples):
        before = time.time()
        row = conn.execute(CLOCK).fetchone()
        after = time.time()
        assert row is not None
        offset, rtt = row[0] - (before + after) / 2, after - before
        if best is None or rtt < best[1]:
            best = (offset, rtt)
    assert best is not None
    return best[0], best[1] / 2


def listen(conn: psycopg.Connection, *channels: str) -> None:
    for channel in channels:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))


def _pairs(runs: Iterable[Run]) -> tuple[list[int], list[int]]:
    ordered = sorted(runs, key=lambda run: run.claim.id)
    return [run.claim.id for run in ordered], [run.claim.attempt for run in ordered]


def _woken(conn: psycopg.Connection, row: tuple | None) -> int:  # type: ignore[type-arg]
    """The count of a hand-back statement; wakes the workers for what went back to Waiting."""
    count, earliest = row if row else (0, None)
    if count:
        conn.execute(NOTIFY_WAITING, [repr(earliest)])
    return int(count)


# A worker that stops takes its row out of fizz_workers.
FORGET_WORKER = "DELETE FROM fizz_workers WHERE id = %s"


def forget_worker(conn: psycopg.Connection, worker: str) -> None:
    conn.execute(FORGET_WORKER, [worker])


# How many tasks wait, and the earliest, leaving out the occurrences of schedules (a
# schedule always has a next one): what a draining worker leaves for later, or waits for.
# Reads the partial index of waiting rows only.
WAITING_SUMMARY = """
    SELECT count(*), extract(epoch FROM min(time))::float8 FROM tasks
    WHERE status = 'Waiting' AND schedule_id IS NULL"""


def waiting_summary(conn: psycopg.Connection) -> tuple[int, float | None]:
    """(how many tasks not from a schedule are Waiting, the earliest one's time as epoch
    seconds)."""
    row = conn.execute(WAITING_SUMMARY).fetchone()
    assert row is not None
    return int(row[0]), row[1]
