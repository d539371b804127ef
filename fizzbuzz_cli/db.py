"""The database layer: every SQL statement fizz runs, behind small typed functions.

Functions take an open psycopg connection (autocommit unless said otherwise), so the CLI,
the worker (dedicated connections) and the HTTP server (a pool) share them. psycopg errors
that users can act on become the domain errors of ``fizzbuzz_cli.errors`` through
:func:`translate_errors`.

Queries on the claim path name the status as a literal ('Waiting', 'Claimed'), never as a
parameter, so PostgreSQL can always use the partial indexes of ``schema.sql``.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import RowFactory

from fizzbuzz_cli.errors import (
    BadInput,
    DatabaseUnavailable,
    SchemaMissing,
    TaskNotFound,
    WrongState,
)
from fizzbuzz_cli.tasks import TYPES_BY_NAME, Status, Task, TaskType

SCHEMA_SQL = resources.files("fizzbuzz_cli").joinpath("schema.sql").read_text()
SCHEMA_VERSION = int(re.search(r"fizz schema version: (\d+)", SCHEMA_SQL).group(1))  # type: ignore[union-attr]
SCHEMA_DIGEST = hashlib.sha256(SCHEMA_SQL.encode()).hexdigest()[:16]
CONNECT_TIMEOUT = 5  # seconds, unless the URL sets connect_timeout itself
NOTIFY_CHANNEL = "fizz_tasks"  # payload: "<epoch of the earliest new waiting task> <xid>"
NEXT_CHANNEL = "fizz_next"  # payload: "<epoch of the next waiting task, or -> <snapshot>"
CANCEL_CHANNEL = "fizz_cancel"  # payload: comma-separated ids of deleted claimed tasks, or *
_SCHEMA_LOCK = 0x66697A7A  # advisory lock key ("fizz") that serialises concurrent init-db

# ------------------------------------------------------------------------------ queries

_TASK_COLUMNS = "id, tasktype, status, time, created_at, claimed_at, completed_at, worker, attempts"

INSERT_TASK = f"""
    INSERT INTO tasks (tasktype, status, time) VALUES (%s, 'Waiting', %s)
    RETURNING {_TASK_COLUMNS}"""

COPY_TASKS = "COPY tasks (tasktype, status, time) FROM STDIN (FORMAT BINARY)"

LIST_TASKS = f"""
    SELECT {_TASK_COLUMNS} FROM tasks
    WHERE (%(type)s::text IS NULL OR tasktype = %(type)s)
      AND (%(status)s::text IS NULL OR status = %(status)s)
    ORDER BY id
    LIMIT %(limit)s"""

# One page of a listing, after the last id already sent (keyset paging: an index range
# scan whatever the page's depth). fizz serve reads long lists page by page and holds no
# connection while a client reads, so slow readers cannot keep connections from others.
LIST_PAGE = f"""
    SELECT {_TASK_COLUMNS} FROM tasks
    WHERE id > %(after)s
      AND (%(type)s::text IS NULL OR tasktype = %(type)s)
      AND (%(status)s::text IS NULL OR status = %(status)s)
    ORDER BY id
    LIMIT %(limit)s"""

# Ids for a bulk insert that must answer with them: COPY cannot return rows, so the ids are
# taken from the table's own sequence first (in order) and written by the COPY below.
RESERVE_TASK_IDS = """
    SELECT nextval(pg_get_serial_sequence('tasks', 'id')) FROM generate_series(1, %s)"""

COPY_TASKS_WITH_IDS = "COPY tasks (id, tasktype, status, time) FROM STDIN (FORMAT BINARY)"

# A longer statement timeout for the rest of one transaction (a large bulk insert), where
# the session's short one is meant for single-row requests.
LOCAL_STATEMENT_TIMEOUT = "SELECT set_config('statement_timeout', %s, true)"

# The cheapest round trip: is the connection, and the server behind it, alive?
PING = "SELECT 1"

GET_TASK = f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = %s"

DELETE_TASK = f"DELETE FROM tasks WHERE id = %s RETURNING {_TASK_COLUMNS}"

NEXT_WAITING = "SELECT id, time FROM tasks WHERE status = 'Waiting' ORDER BY time, id LIMIT 1"

# The next due time together with the snapshot it was read in (one statement, one snapshot).
NEXT_DUE = """
    SELECT (SELECT extract(epoch FROM time)::float8 FROM tasks
            WHERE status = 'Waiting' ORDER BY time, id LIMIT 1),
           pg_current_snapshot()::text"""

# Claims the earliest waiting tasks due within `ahead` seconds; rows another worker is
# claiming at this instant are skipped, never waited for, and never claimed twice.
CLAIM_DUE = """
    WITH due AS (
        SELECT id FROM tasks
        WHERE status = 'Waiting' AND time <= now() + %(ahead)s * interval '1 second'
        ORDER BY time, id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    )
    UPDATE tasks SET status = 'Claimed', worker = %(worker)s, claimed_at = now(),
                     lease_until = now() + %(lease)s * interval '1 second',
                     attempts = tasks.attempts + 1
    FROM due WHERE tasks.id = due.id
    RETURNING tasks.id, tasks.tasktype, extract(epoch FROM tasks.time)::float8, tasks.attempts"""

CLAIM_ONE = f"""
    UPDATE tasks SET status = 'Claimed', worker = %(worker)s, claimed_at = now(),
                     lease_until = now() + %(lease)s * interval '1 second',
                     attempts = attempts + 1
    WHERE id = %(id)s AND status = 'Waiting'
    RETURNING {_TASK_COLUMNS}"""

# Completion is fenced: only the worker holding the claim, only for the attempt it ran.
# The fence is written with IS NOT DISTINCT FROM (the same here: neither side is NULL) so
# that the planner cannot start the join from a partial index on claimed rows: right after
# a burst of claims its statistics can say "1 row" where there are thousands, and a nested
# loop over the batch for each of them took a second per batch. The join is driven by the
# batch's ids through the primary key, whatever the statistics say.
COMPLETE_CLAIMS = """
    UPDATE tasks SET status = 'Complete', completed_at = now(), lease_until = NULL
    FROM unnest(%(ids)s::int[], %(attempts)s::int[]) AS done(id, attempt)
    WHERE tasks.id = done.id AND tasks.attempts = done.attempt
      AND tasks.worker IS NOT DISTINCT FROM %(worker)s
      AND tasks.status IS NOT DISTINCT FROM 'Claimed'
    RETURNING tasks.id"""

COMPLETE_ONE = f"""
    UPDATE tasks SET status = 'Complete', completed_at = now(), lease_until = NULL
    WHERE id = %s AND status = 'Claimed'
    RETURNING {_TASK_COLUMNS}"""

RELEASE_CLAIMS = """
    WITH released AS (
        UPDATE tasks SET status = 'Waiting', worker = NULL, claimed_at = NULL, lease_until = NULL
        WHERE worker = %(worker)s AND status = 'Claimed' AND id = ANY(%(ids)s::int[])
        RETURNING time
    )
    SELECT count(*), extract(epoch FROM min(time))::float8 FROM released"""

RENEW_LEASES = """
    UPDATE tasks SET lease_until = now() + %(lease)s * interval '1 second'
    WHERE worker = %(worker)s AND status = 'Claimed'
    RETURNING id, attempts"""

# Expired claims go back to Waiting, but never in the first `grace` seconds after the
# server (re)started: live workers get that long to reconnect and renew their leases.
REAP_EXPIRED = """
    WITH expired AS (
        SELECT id, worker FROM tasks
        WHERE status = 'Claimed' AND lease_until < now()
          AND pg_postmaster_start_time() < now() - %(grace)s * interval '1 second'
        FOR UPDATE SKIP LOCKED
    ), reaped AS (
        UPDATE tasks SET status = 'Waiting', worker = NULL, claimed_at = NULL, lease_until = NULL
        FROM expired WHERE tasks.id = expired.id
        RETURNING tasks.id, tasks.time, expired.worker
    )
    SELECT id, worker, extract(epoch FROM time)::float8 FROM reaped ORDER BY id"""

NOTIFY_WAITING = "SELECT pg_notify('fizz_tasks', %s::text || ' ' || pg_current_xact_id())"

NOTIFY_NEXT = "SELECT pg_notify('fizz_next', %s)"

COUNT_TASKS = "SELECT tasktype, status, count(*) FROM tasks GROUP BY tasktype, status"

CLOCK = "SELECT extract(epoch FROM clock_timestamp())::float8"

# ------------------------------------------------------------------------------ connecting


def connect(url: str, *, autocommit: bool = True, **options: object) -> psycopg.Connection:
    """Open a connection, turning failures into one-line domain errors."""
    params = parse_url(url)
    params.setdefault("connect_timeout", CONNECT_TIMEOUT)
    params.setdefault("application_name", "fizz")
    params.update(options)
    try:
        return psycopg.connect(autocommit=autocommit, **params)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {describe(url)}: "
                                  f"{_reason(exc)}") from None


def parse_url(url: str) -> dict[str, object]:
    try:
        return dict(conninfo_to_dict(url))
    except psycopg.ProgrammingError as exc:
        raise BadInput(f"invalid database URL: {_reason(exc)}") from None


def describe(url: str) -> str:
    """Where a URL points, for messages; never shows a password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "an invalid URL"
    host = str(params.get("host") or "localhost")
    port = str(params.get("port") or 5432)
    return f"{host}:{port}" if not host.startswith("/") else f"{host} (port {port})"


@contextmanager
def session(url: str) -> Iterator[psycopg.Connection]:
    """A connection for one command, with errors translated for the user."""
    with translate_errors():
        conn = connect(url)
        try:
            yield conn
        finally:
            conn.close()


@contextmanager
def translate_errors() -> Iterator[None]:
    try:
        yield
    except psycopg.errors.UndefinedTable as exc:
        raise SchemaMissing(f"the database has no fizz schema ({_reason(exc)}): "
                            "run 'fizz init-db'") from None
    except psycopg.errors.UndefinedColumn as exc:
        raise SchemaMissing(f"the fizz schema is out of date ({_reason(exc)}): "
                            "run 'fizz init-db'") from None
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"lost the database connection: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    """The useful part of a psycopg message, on one line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.split("failed: ")[-1] if "failed: " in text else text
    return text.removeprefix("FATAL:").strip()


# ------------------------------------------------------------------------------ schema


@dataclass(frozen=True, slots=True)
class Migration:
    previous: int | None  # schema version before; None: no fizz schema (maybe the original table)
    current: int
    had_table: bool  # the tasks table existed (made by the original project or by fizz)
    rows: int  # rows in tasks after the migration


def migrate(conn: psycopg.Connection) -> Migration:
    """Create or upgrade the schema in one transaction; safe to run concurrently and repeatedly."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_SCHEMA_LOCK])
        had_table, previous = schema_version(conn)
        if previous is not None and previous > SCHEMA_VERSION:
            raise SchemaMissing(
                f"the database has fizz schema version {previous}, newer than this fizz "
                f"understands ({SCHEMA_VERSION}): upgrade fizz"
            )
        conn.execute(SCHEMA_SQL)
        conn.execute("INSERT INTO fizz_meta (key, value) VALUES ('schema_digest', %s) "
                     "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", [SCHEMA_DIGEST])
        rows = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]  # type: ignore[index]
    return Migration(previous, SCHEMA_VERSION, had_table, rows)


def schema_version(conn: psycopg.Connection) -> tuple[bool, int | None]:
    """(the tasks table exists, the fizz schema version or None)."""
    row = conn.execute(
        "SELECT to_regclass('tasks') IS NOT NULL, to_regclass('fizz_meta') IS NOT NULL"
    ).fetchone()
    assert row is not None
    version = None
    if row[1]:
        found = conn.execute("SELECT value::int FROM fizz_meta WHERE key = 'schema_version'")
        version = (found.fetchone() or [None])[0]
    return bool(row[0]), version


def require_schema(conn: psycopg.Connection) -> None:
    """Raise SchemaMissing unless the database has this fizz's schema version."""
    had_table, version = schema_version(conn)
    if version == SCHEMA_VERSION:
        return
    if version is not None and version > SCHEMA_VERSION:
        raise SchemaMissing(f"the database has fizz schema version {version}, newer than this "
                            f"fizz understands ({SCHEMA_VERSION}): upgrade fizz")
    what = "an older fizz schema" if had_table else "no fizz schema"
    raise SchemaMissing(f"the database has {what}: run 'fizz init-db'")


def ensure_schema(conn: psycopg.Connection) -> None:
    """Migrate unless the database runs exactly this schema.sql (for the embedded database,
    fizz's own: a fizz upgrade upgrades it, even between schema versions)."""
    try:
        row = conn.execute("SELECT value FROM fizz_meta WHERE key = 'schema_digest'").fetchone()
    except psycopg.errors.UndefinedTable:
        row = None
    if row is None or row[0] != SCHEMA_DIGEST:
        migrate(conn)


# ------------------------------------------------------------------------------ tasks


def _task_row(cursor: psycopg.Cursor) -> Callable[[tuple], Task]:  # type: ignore[type-arg]
    def make(row: tuple) -> Task:  # type: ignore[type-arg]
        return Task(row[0], TaskType(row[1]), Status(row[2]), *row[3:])

    return make


TASK_ROW: RowFactory[Task] = _task_row  # type: ignore[assignment]


def add_task(conn: psycopg.Connection, task_type: TaskType, when: datetime) -> Task:
    with conn.cursor(row_factory=TASK_ROW) as cur:
        task = cur.execute(INSERT_TASK, [task_type.value, when]).fetchone()
    assert task is not None
    return task


def add_tasks(
    conn: psycopg.Connection,
    rows: Iterable[tuple[TaskType, datetime]],
    progress: Callable[[int], None] | None = None,
) -> int:
    """Bulk insert through COPY in one transaction: all rows or, on any error, none."""
    count = 0
    with conn.transaction(), conn.cursor() as cur, cur.copy(COPY_TASKS) as copy:
        copy.set_types(["varchar", "varchar", "timestamptz"])
        for task_type, when in rows:
            copy.write_row((task_type.value, "Waiting", when))
            count += 1
            if progress is not None and count % 5000 == 0:
                progress(count)
    if progress is not None:
        progress(count)
    return count


def iter_tasks(
    conn: psycopg.Connection,
    task_type: TaskType | None = None,
    status: Status | None = None,
    limit: int | None = None,
    batch: int = 2000,
) -> Iterator[Task]:
    """Tasks in id order, streamed through a server-side cursor (constant memory)."""
    params = {
        "type": task_type.value if task_type else None,
        "status": status.value if status else None,
        "limit": limit,
    }
    with conn.transaction(), conn.cursor(name="fizz_list", row_factory=TASK_ROW) as cur:
        cur.itersize = batch
        cur.execute(LIST_TASKS, params)
        yield from cur


def get_task(conn: psycopg.Connection, task_id: int) -> Task:
    return _one(conn, GET_TASK, [task_id], task_id)


def delete_task(conn: psycopg.Connection, task_id: int) -> Task:
    return _one(conn, DELETE_TASK, [task_id], task_id)


def _one(conn: psycopg.Connection, query: str, params: object, task_id: int) -> Task:
    with conn.cursor(row_factory=TASK_ROW) as cur:
        task = cur.execute(query, params).fetchone()
    if task is None:
        raise TaskNotFound(task_id)
    return task


def next_waiting(conn: psycopg.Connection) -> tuple[int, datetime] | None:
    """Id and time of the earliest waiting task."""
    row = conn.execute(NEXT_WAITING).fetchone()
    return (row[0], row[1]) if row else None


def count_tasks(conn: psycopg.Connection) -> dict[tuple[str, str], int]:
    return {(t, s): n for t, s, n in conn.execute(COUNT_TASKS)}


# ------------------------------------------------------------------------------ claims


@dataclass(frozen=True, slots=True)
class Claim:
    """A task a worker holds: run it at `due` (epoch seconds), complete it with `attempt`."""

    id: int
    type: TaskType
    due: float
    attempt: int


def claim_due(
    conn: psycopg.Connection, worker: str, *, ahead: float, limit: int, lease: float
) -> list[Claim]:
    rows = conn.execute(
        CLAIM_DUE, {"worker": worker, "ahead": ahead, "limit": limit, "lease": lease}
    ).fetchall()
    return [Claim(r[0], TYPES_BY_NAME[r[1]], r[2], r[3]) for r in rows]


def next_due(conn: psycopg.Connection) -> tuple[float | None, str]:
    """(epoch of the earliest waiting task or None, the snapshot that saw it)."""
    row = conn.execute(NEXT_DUE).fetchone()
    assert row is not None
    return row[0], row[1]


def announce_next(conn: psycopg.Connection, due: float | None, snapshot: str) -> None:
    """Tell every worker the next due time as of `snapshot`, after a claim: the others then
    need not query to learn that the tasks they were about to claim are taken."""
    conn.execute(NOTIFY_NEXT, [f"{'-' if due is None else repr(due)} {snapshot}"])


def claim_task(conn: psycopg.Connection, task_id: int, worker: str, lease: float) -> Task:
    """Claim one waiting task by id (the HTTP pull route); WrongState if it is not waiting."""
    try:
        return _one(conn, CLAIM_ONE, {"id": task_id, "worker": worker, "lease": lease}, task_id)
    except TaskNotFound:
        raise WrongState(task_id, "waiting") from None


def complete_task(conn: psycopg.Connection, task_id: int) -> Task:
    """Mark one claimed task complete (the HTTP route); WrongState if it is not claimed."""
    try:
        return _one(conn, COMPLETE_ONE, [task_id], task_id)
    except TaskNotFound:
        raise WrongState(task_id, "claimed") from None


def complete_claims(conn: psycopg.Connection, worker: str, claims: list[Claim]) -> set[int]:
    """Complete what this worker ran; returns the ids it still held (the others were lost)."""
    rows = conn.execute(
        COMPLETE_CLAIMS,
        {"worker": worker, "ids": [c.id for c in claims], "attempts": [c.attempt for c in claims]},
    ).fetchall()
    return {r[0] for r in rows}


def release_claims(conn: psycopg.Connection, worker: str, ids: list[int]) -> int:
    """Hand claims back to Waiting and wake the workers; returns how many were released."""
    row = conn.execute(RELEASE_CLAIMS, {"worker": worker, "ids": ids}).fetchone()
    count, earliest = row if row else (0, None)
    if count:
        conn.execute(NOTIFY_WAITING, [repr(earliest)])
    return int(count)


def renew_leases(conn: psycopg.Connection, worker: str, lease: float) -> set[tuple[int, int]]:
    """Extend every lease this worker holds; returns the (id, attempt) pairs it still holds."""
    rows = conn.execute(RENEW_LEASES, {"worker": worker, "lease": lease}).fetchall()
    return {(r[0], r[1]) for r in rows}


@dataclass(frozen=True, slots=True)
class Reaped:
    id: int
    worker: str | None
    due: float


def reap_expired(conn: psycopg.Connection, grace: float) -> list[Reaped]:
    """Return expired claims (of dead or cut-off workers) to Waiting and wake the workers."""
    rows = conn.execute(REAP_EXPIRED, {"grace": grace}).fetchall()
    reaped = [Reaped(*r) for r in rows]
    if reaped:
        conn.execute(NOTIFY_WAITING, [repr(min(r.due for r in reaped))])
    return reaped


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
