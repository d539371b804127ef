"""The operator's figures: the one place `fizz stats`, `fizz workers`, `fizz top`, GET /stats,
GET /workers and the dashboard take them from.

``snapshot(conn)`` returns one JSON-ready object (see ``snapshot`` for its shape);
``workers(conn)`` the live workers; ``latest_tasks(conn, ...)`` the newest tasks for the
dashboard's table. Every figure is one named query with its reason.

What a snapshot costs, on a table of millions of rows (the common case: a long history of
completed tasks, a short queue):

- Counts by status and type never scan the history. Waiting and Claimed are counted
  exactly through their partial indexes (``tasks_waiting_time_idx``,
  ``tasks_claimed_worker_idx``): the cost is that of the queue, not of the table. Complete
  is derived: each type's total is kept by statement-level triggers on INSERT, DELETE and
  TRUNCATE (``fizz_task_totals``, see schema.sql), and Complete = total - Waiting - Claimed.
  Those triggers never fire on the workers' claim and record statements (UPDATEs of status),
  so the hot path pays nothing for them; writers never wait for each other on them either.
- Throughput and lateness read the window's completions through the partial index
  ``tasks_completed_at_idx``: their cost is the number of tasks run in the window.
- overdue and next_due read the waiting index; workers the small fizz_workers table.

All queries of a snapshot run in one REPEATABLE READ, READ ONLY transaction: one instant,
one now(), so the counts add up and the windows end at the same time.

Threading: functions take a connection owned by the caller (autocommit, as everywhere in
fizz); each has an ``_async`` twin for an asyncio connection (fizz serve's pool), sharing
its queries and the shaping of the answers. ``SnapshotCache`` is the one object meant to be
shared between threads.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import psycopg

from fizzbuzz_cli import db
from fizzbuzz_cli.durations import parse_duration
from fizzbuzz_cli.tasks import Status, Task, TaskType, format_time

DEFAULT_WINDOW = 15 * 60.0  # seconds of history for lateness
MAX_WINDOW = timedelta(days=1)  # a longer window reads more completions than a glance is worth
OVERDUE_AFTER = 1.0  # seconds past its time after which a waiting task counts as overdue
THROUGHPUT_WINDOWS = {"1m": 60, "5m": 300, "15m": 900}  # name -> seconds
# Upper bounds (ms, exclusive) of the lateness histogram's buckets; a last one takes the rest.
HISTOGRAM_BOUNDS_MS = (0.5, 1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0)
STATUSES = tuple(s.value for s in Status)
TYPES = tuple(t.value for t in TaskType)

# ------------------------------------------------------------------------------ queries

# One snapshot for every query of a stats call (and no writes: it can run on a replica).
BEGIN_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"

# Exact counts by type and status without reading the history: the queue through its two
# partial indexes (status named as a literal so the planner can use them), and each type's
# total from the trigger-kept counters; Complete is what is left.
TASK_COUNTS = """
    SELECT tasktype, 'Waiting', count(*) FROM tasks WHERE status = 'Waiting' GROUP BY tasktype
    UNION ALL
    SELECT tasktype, 'Claimed', count(*) FROM tasks WHERE status = 'Claimed' GROUP BY tasktype
    UNION ALL
    SELECT tasktype, 'total', sum(n)::bigint FROM fizz_task_totals GROUP BY tasktype"""

# Overdue tasks and the next due time, both read from the waiting index: a range scan of
# the overdue part and a single entry.
QUEUE = """
    SELECT (SELECT count(*) FROM tasks WHERE status = 'Waiting'
            AND time < now() - %(overdue)s * interval '1 second'),
           (SELECT time FROM tasks WHERE status = 'Waiting' ORDER BY time, id LIMIT 1),
           now()"""

# A worker is alive while its last renewal is within its lease (it renews every third).
WORKERS_ALIVE = """
    SELECT count(*) FROM fizz_workers WHERE last_seen >= now() - lease * interval '1 second'"""

# Lateness (start - scheduled time) of the tasks started in the window, with a histogram,
# in one pass over the window's completions. A fizz worker records a run when its line is
# due, at most the task's duration (5 s) after it started, so every run started in the
# window completed in it too: the completed_at index bounds the scan. Tasks completed by
# others (the original server) have no start time and are left out.
LATENESS = """
    WITH runs AS MATERIALIZED (
        SELECT (extract(epoch FROM started_at - time) * 1000)::float8 AS ms FROM tasks
        WHERE status = 'Complete'
          AND completed_at >= now() - %(window)s * interval '1 second'
          AND started_at >= now() - %(window)s * interval '1 second'
    ), buckets AS (
        SELECT width_bucket(ms, %(bounds)s::float8[]) AS bucket, count(*) AS n
        FROM runs GROUP BY 1
    )
    SELECT count(*),
           percentile_disc(0.5) WITHIN GROUP (ORDER BY ms),
           percentile_disc(0.99) WITHIN GROUP (ORDER BY ms),
           max(ms),
           (SELECT coalesce(array_agg(bucket ORDER BY bucket), '{}') FROM buckets),
           (SELECT coalesce(array_agg(n ORDER BY bucket), '{}') FROM buckets)
    FROM runs"""

# Completions per second over the last 1, 5 and 15 minutes: one index range scan of the
# last 15 minutes, counted three ways.
THROUGHPUT = """
    SELECT count(*) FILTER (WHERE completed_at >= now() - interval '1 minute'),
           count(*) FILTER (WHERE completed_at >= now() - interval '5 minutes'),
           count(*)
    FROM tasks WHERE status = 'Complete' AND completed_at >= now() - interval '15 minutes'"""

# The workers' own rows (kept fresh by their lease renewal), the live ones unless asked.
LIST_WORKERS = """
    SELECT id, host, pid, version, started_at, last_seen, lease, concurrency, in_flight, ran,
           last_seen >= now() - lease * interval '1 second' AS alive
    FROM fizz_workers
    WHERE %(all)s OR last_seen >= now() - lease * interval '1 second'
    ORDER BY host, started_at, id"""

# The newest tasks, for the dashboard's table: a backward walk of the primary key that stops
# after `limit` matches (the planner takes the queue's partial indexes instead when a filter
# names Waiting or Claimed and those are few).
LATEST_TASKS = f"""
    SELECT {db._TASK_COLUMNS} FROM tasks
    WHERE (%(type)s::text IS NULL OR tasktype = %(type)s)
      AND (%(status)s::text IS NULL OR status = %(status)s)
    ORDER BY id DESC
    LIMIT %(limit)s"""

# Folds the counter rows of each type into one (see schema.sql): the rows being written
# right now are skipped, never waited for, and folded next time.
FOLD_TOTALS = """
    WITH taken AS (
        DELETE FROM fizz_task_totals
        WHERE id IN (SELECT id FROM fizz_task_totals FOR UPDATE SKIP LOCKED)
        RETURNING tasktype, n
    ), folded AS (
        INSERT INTO fizz_task_totals (tasktype, n)
        SELECT tasktype, sum(n) FROM taken GROUP BY tasktype HAVING sum(n) <> 0
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM taken), (SELECT count(*) FROM folded)"""

# Counts the whole table again (a full scan: for repairs only, e.g. after rows were loaded
# with triggers disabled). The lock keeps other writers' counter updates out meanwhile;
# the workers' claims and records never take it and go on.
LOCK_TOTALS = "LOCK TABLE fizz_task_totals IN EXCLUSIVE MODE"
RECOUNT_TOTALS = """
    WITH cleared AS (DELETE FROM fizz_task_totals)
    INSERT INTO fizz_task_totals (tasktype, n)
    SELECT tasktype, count(*) FROM tasks GROUP BY tasktype"""

# ------------------------------------------------------------------------------ snapshot


def parse_window(text: str) -> float:
    """`--window` / `?window=`: a duration from 1s to 1d, in seconds."""
    return parse_duration(text, "window", longest=MAX_WINDOW).total_seconds()


def snapshot(conn: psycopg.Connection, window: float = DEFAULT_WINDOW) -> dict[str, Any]:
    """The figures of one instant, as `fizz stats --json` prints them and GET /stats sends:

        {"at": "2026-11-27T12:00:00.123456Z",        # the database's clock
         "tasks": {"Waiting": 3, "Claimed": 1, "Complete": 1000000,
                   "by_type": {"Fizz": {"Waiting": 1, "Claimed": 0, "Complete": 10}, ...}},
         "overdue": 0,                                 # waiting, time more than 1 s ago
         "next_due": "2026-11-27T12:00:05Z" or null,   # earliest waiting time
         "workers": 2,                                 # alive
         "lateness_ms": {"p50": 0.001, "p99": 0.4, "max": 3.2, "n": 500},  # null p's if n=0
         "lateness_histogram": {"below_ms": [0.5, 1, ..., 5000, null], "counts": [...]},
         "window_s": 900.0,                            # the lateness window
         "throughput": {"1m": 8.3, "5m": 1.7, "15m": 0.6}}   # completions per second

    Every type and every status is present, with 0 when there are none.
    """
    answers: dict[str, Any] = {}
    with conn.transaction():
        conn.execute(BEGIN_SNAPSHOT)
        for name, query, params, one in _steps(window):
            cursor = conn.execute(query, params)
            answers[name] = cursor.fetchone() if one else cursor.fetchall()
    return _shape(answers, window)


async def snapshot_async(conn: psycopg.AsyncConnection[Any],
                         window: float = DEFAULT_WINDOW) -> dict[str, Any]:
    """`snapshot` on an asyncio connection (fizz serve's pool)."""
    answers: dict[str, Any] = {}
    async with conn.transaction():
        await conn.execute(BEGIN_SNAPSHOT)
        for name, query, params, one in _steps(window):
            cursor = await conn.execute(query, params)
            answers[name] = await cursor.fetchone() if one else await cursor.fetchall()
    return _shape(answers, window)


def _steps(window: float) -> list[tuple[str, str, dict[str, Any] | None, bool]]:
    """The statements of a snapshot: (name, query, parameters, one row)."""
    if not window > 0:
        raise ValueError("window must be positive")
    return [
        ("counts", TASK_COUNTS, None, False),
        ("queue", QUEUE, {"overdue": OVERDUE_AFTER}, True),
        ("alive", WORKERS_ALIVE, None, True),
        ("late", LATENESS, {"window": window, "bounds": list(HISTOGRAM_BOUNDS_MS)}, True),
        ("done", THROUGHPUT, None, True),
    ]


def _shape(answers: dict[str, Any], window: float) -> dict[str, Any]:
    overdue, next_due, now = answers["queue"]
    late, done = answers["late"], answers["done"]
    return {
        "at": format_time(now, micro=True),
        "tasks": _task_counts(answers["counts"]),
        "overdue": overdue,
        "next_due": None if next_due is None else format_time(next_due),
        "workers": answers["alive"][0],
        "lateness_ms": _lateness(late),
        "lateness_histogram": _histogram(late[4], late[5]),
        "window_s": float(window),
        "throughput": {name: round(n / THROUGHPUT_WINDOWS[name], 3)
                       for name, n in zip(THROUGHPUT_WINDOWS, done, strict=True)},
    }


def _task_counts(rows: list[tuple[str, str, int]]) -> dict[str, Any]:
    by_type = {t: dict.fromkeys(STATUSES, 0) for t in TYPES}
    totals = dict.fromkeys(TYPES, 0)
    for kind, what, n in rows:
        if kind not in by_type:
            continue  # the CHECK constraint allows none; a counter row of a dropped type
        if what == "total":
            totals[kind] = int(n)
        else:
            by_type[kind][what] = int(n)
    for kind, counts in by_type.items():
        counts["Complete"] = totals[kind] - counts["Waiting"] - counts["Claimed"]
    result: dict[str, Any] = {s: sum(c[s] for c in by_type.values()) for s in STATUSES}
    result["by_type"] = by_type
    return result


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _lateness(row: tuple[Any, ...]) -> dict[str, Any]:
    n, p50, p99, worst = row[:4]
    return {"p50": _ms(p50), "p99": _ms(p99), "max": _ms(worst), "n": int(n)}


def _histogram(buckets: list[int], counts: list[int]) -> dict[str, Any]:
    """counts[i]: runs at least below_ms[i-1] (0 for i = 0) and less than below_ms[i] late
    (the last: the rest). width_bucket's bucket numbers are these indexes."""
    filled = [0] * (len(HISTOGRAM_BOUNDS_MS) + 1)
    for bucket, n in zip(buckets, counts, strict=True):
        filled[bucket] += int(n)
    return {"below_ms": [*HISTOGRAM_BOUNDS_MS, None], "counts": filled}


# ------------------------------------------------------------------------------ workers


def workers(conn: psycopg.Connection, include_gone: bool = False) -> list[dict[str, Any]]:
    """The live workers (with include_gone, also those silent for less than 5 minutes, whose
    rows are not yet removed), as `fizz workers --json` prints them and GET /workers sends:

        [{"id": "host:1234:a1b2c3", "host": "host", "pid": 1234, "version": "0.4.0",
          "started_at": "...Z", "last_seen": "...Z", "lease_s": 10.0, "concurrency": 10000,
          "in_flight": 3, "ran": 120, "alive": true}, ...]
    """
    return [_worker(r) for r in conn.execute(LIST_WORKERS, {"all": include_gone}).fetchall()]


async def workers_async(conn: psycopg.AsyncConnection[Any],
                        include_gone: bool = False) -> list[dict[str, Any]]:
    cursor = await conn.execute(LIST_WORKERS, {"all": include_gone})
    return [_worker(r) for r in await cursor.fetchall()]


def _worker(r: tuple[Any, ...]) -> dict[str, Any]:
    return {"id": r[0], "host": r[1], "pid": r[2], "version": r[3],
            "started_at": format_time(r[4]), "last_seen": format_time(r[5]),
            "lease_s": float(r[6]), "concurrency": r[7], "in_flight": r[8], "ran": r[9],
            "alive": bool(r[10])}


# ------------------------------------------------------------------------------ tasks


def latest_tasks(conn: psycopg.Connection, task_type: TaskType | None = None,
                 status: Status | None = None, limit: int = 50) -> list[Task]:
    """The newest tasks (highest ids first), optionally of one type and status."""
    with conn.cursor(row_factory=db.TASK_ROW) as cur:
        return cur.execute(LATEST_TASKS, _latest(task_type, status, limit)).fetchall()


async def latest_tasks_async(conn: psycopg.AsyncConnection[Any],
                             task_type: TaskType | None = None, status: Status | None = None,
                             limit: int = 50) -> list[Task]:
    async with conn.cursor(row_factory=db.TASK_ROW) as cur:  # type: ignore[arg-type]
        await cur.execute(LATEST_TASKS, _latest(task_type, status, limit))
        return await cur.fetchall()  # type: ignore[return-value]


def _latest(task_type: TaskType | None, status: Status | None, limit: int) -> dict[str, Any]:
    return {"type": task_type.value if task_type else None,
            "status": status.value if status else None, "limit": limit}


# ------------------------------------------------------------------------------ counters


def fold_totals(conn: psycopg.Connection) -> tuple[int, int]:
    """Fold the counter rows into one per type; (rows before, rows after) of those taken."""
    row = conn.execute(FOLD_TOTALS).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def recount_totals(conn: psycopg.Connection) -> None:
    """Count the table again (a full scan; adding and deleting tasks wait meanwhile)."""
    with conn.transaction():
        conn.execute(LOCK_TOTALS)
        conn.execute(RECOUNT_TOTALS)


# ------------------------------------------------------------------------------ sharing


class SnapshotCache:
    """One snapshot shared by every caller within `max_age` seconds (a dashboard polled by
    many browsers costs one snapshot a second). Thread-safe: one caller computes while the
    others wait for its answer; a failure is not cached."""

    def __init__(self, compute: Callable[[], dict[str, Any]], max_age: float = 1.0) -> None:
        self.compute, self.max_age = compute, max_age
        self._lock = threading.Lock()
        self._value: dict[str, Any] | None = None
        self._taken = -float("inf")

    def get(self) -> dict[str, Any]:
        with self._lock:
            if self._value is None or time.monotonic() - self._taken > self.max_age:
                self._value = self.compute()
                self._taken = time.monotonic()
            return self._value


class AsyncSnapshotCache:
    """SnapshotCache for an event loop (fizz serve): one task computes while the others
    await its answer; a failure is not cached. Use from one event loop only."""

    def __init__(self, compute: Callable[[], Awaitable[dict[str, Any]]],
                 max_age: float = 1.0) -> None:
        self.compute, self.max_age = compute, max_age
        self._lock = asyncio.Lock()
        self._value: dict[str, Any] | None = None
        self._taken = -float("inf")

    async def get(self) -> dict[str, Any]:
        async with self._lock:
            if self._value is None or time.monotonic() - self._taken > self.max_age:
                self._value = await self.compute()
                self._taken = time.monotonic()
            return self._value
