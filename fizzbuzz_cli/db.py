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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import RowFactory

from fizzbuzz_cli.errors import (
    BadInput,
    DatabaseUnavailable,
    SchemaMissing,
    TaskNotFound,
    WrongState,
    brief,
)
from fizzbuzz_cli.tasks import STATUSES_BY_NAME, TYPES_BY_NAME, Status, Task, TaskType

SCHEMA_SQL = resources.files("fizzbuzz_cli").joinpath("schema.sql").read_text()
SCHEMA_VERSION = int(re.search(r"fizz schema version: (\d+)", SCHEMA_SQL).group(1))  # type: ignore[union-attr]
SCHEMA_DIGEST = hashlib.sha256(SCHEMA_SQL.encode()).hexdigest()[:16]
CONNECT_TIMEOUT = 5  # seconds, unless the URL sets connect_timeout itself
_SCHEMA_LOCK = 0x66697A7A  # advisory lock key ("fizz") that serialises concurrent init-db

# ------------------------------------------------------------------------------ queries

_TASK_COLUMNS = ("id, tasktype, status, time, created_at, claimed_at, completed_at, worker, "
                 "attempts, schedule_id, occurrence")

INSERT_TASK = f"""
    INSERT INTO tasks (tasktype, status, time) VALUES (%s, 'Waiting', %s)
    RETURNING {_TASK_COLUMNS}"""

# Single tasks added over HTTP at the same moment, in one statement and one commit (one wait
# for the disk instead of one per request). Rows are inserted, and given their ids, in the
# arrays' order (ORDER BY n), so the returned rows sorted by id match the arrays.
INSERT_TASKS = f"""
    INSERT INTO tasks (tasktype, status, time)
    SELECT kind, 'Waiting', at
    FROM unnest(%s::varchar[], %s::timestamptz[]) WITH ORDINALITY AS u(kind, at, n)
    ORDER BY n
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

# Tasks asked for by id at the same moment, in one statement (fizz serve's GET /tasks/<id>
# under load: one round trip instead of one per request).
GET_TASKS = f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = ANY(%s::int[])"

DELETE_TASK = f"DELETE FROM tasks WHERE id = %s RETURNING {_TASK_COLUMNS}"

# Several at once (`fizz delete 1 2 3`): one statement, so one transaction decides for all.
DELETE_TASKS = f"DELETE FROM tasks WHERE id = ANY(%s::int[]) RETURNING {_TASK_COLUMNS}"

NEXT_WAITING = "SELECT id, time FROM tasks WHERE status = 'Waiting' ORDER BY time, id LIMIT 1"

CLAIM_ONE = f"""
    UPDATE tasks SET status = 'Claimed', worker = %(worker)s, claimed_at = now(),
                     renewed_at = now(), lease_until = now() + %(lease)s * interval '1 second',
                     attempts = attempts + 1
    WHERE id = %(id)s AND status = 'Waiting'
    RETURNING {_TASK_COLUMNS}"""

COMPLETE_ONE = f"""
    UPDATE tasks SET status = 'Complete', completed_at = now(), lease_until = NULL
    WHERE id = %s AND status = 'Claimed'
    RETURNING {_TASK_COLUMNS}"""

COUNT_TASKS = "SELECT tasktype, status, count(*) FROM tasks GROUP BY tasktype, status"

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
                                  f"{brief(exc)}") from None
    except psycopg.ProgrammingError as exc:  # a setting psycopg reads itself: connect_timeout=x
        raise BadInput(f"invalid database URL: {brief(exc)}") from None


def parse_url(url: str) -> dict[str, object]:
    try:
        return dict(conninfo_to_dict(url))
    except psycopg.ProgrammingError as exc:
        raise BadInput(f"invalid database URL: {brief(exc)}") from None


def describe(url: str) -> str:
    """Where a URL points, for messages; never shows a password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "an invalid URL"
    host = str(params.get("host") or "localhost")
    port = str(params.get("port") or 5432)
    return f"{host}:{port}" if not host.startswith("/") else f"{host} (port {port})"


_SECRETS = ("password", "sslpassword")
_SECRET_SETTING = re.compile(r"\b((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s']\S*)")


def redact(url: str) -> str:
    """A URL or conninfo string as it was given, its passwords replaced by ***: for messages
    and debug logs that say which database a command means."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "an invalid URL"
    if not any(key in params for key in _SECRETS):
        return url
    if "://" not in url:
        return _SECRET_SETTING.sub(r"\1***", url)
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    query = urlencode([(k, "***" if k in _SECRETS else v) for k, v in parse_qsl(parts.query)],
                      safe="/*")
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{hostport}", query=query))


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
        raise SchemaMissing(f"no fizz schema ({brief(exc)})") from None
    except psycopg.errors.UndefinedColumn as exc:
        raise SchemaMissing(f"an out-of-date fizz schema ({brief(exc)})") from None
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"lost the database connection: {brief(exc)}") from None


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
                f"fizz schema version {previous}, newer than this fizz understands "
                f"({SCHEMA_VERSION})", "upgrade fizz"
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
        raise SchemaMissing(f"fizz schema version {version}, newer than this fizz "
                            f"understands ({SCHEMA_VERSION})", "upgrade fizz")
    raise SchemaMissing("an older fizz schema" if had_table else "no fizz schema")


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
        # (dictionaries, not the enums' own lookups: twice as fast, for a million rows)
        return Task(row[0], TYPES_BY_NAME[row[1]], STATUSES_BY_NAME[row[2]], *row[3:])

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


def delete_tasks(conn: psycopg.Connection, task_ids: list[int]) -> list[Task]:
    """Delete every one of these tasks, or none: TaskNotFound names the first id that does not
    exist and nothing is deleted. Returns the tasks in the order of `task_ids` (deduplicated)."""
    wanted = list(dict.fromkeys(task_ids))
    with conn.transaction(), conn.cursor(row_factory=TASK_ROW) as cur:
        found = {task.id: task for task in cur.execute(DELETE_TASKS, [wanted])}
        missing = [task_id for task_id in wanted if task_id not in found]
        if len(wanted) == 1 and missing:
            raise TaskNotFound(missing[0])
        if missing:
            which = f"task {missing[0]}" if len(missing) == 1 else f"tasks {_ids(missing)}"
            raise TaskNotFound(missing[0], f"{which} not found; nothing was deleted")
    return [found[task_id] for task_id in wanted]


def _ids(ids: list[int], shown: int = 5) -> str:
    """1, 2 and 3; 1, 2, 3, 4, 5 and 6 more."""
    if len(ids) > shown:
        return ", ".join(str(i) for i in ids[:shown]) + f" and {len(ids) - shown} more"
    return ", ".join(str(i) for i in ids[:-1]) + f" and {ids[-1]}"


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


# ------------------------------------------------------------------------------ by id


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
