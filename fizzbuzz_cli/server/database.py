"""PostgreSQL for `fizz serve`: a pool for requests, a probe for /healthz, every wait bounded.

Requests take a connection from psycopg's AsyncConnectionPool for one statement (or one
page of a list, or one bulk insert) and give it back at once, so a slow client never holds
one. The statements are db.py's named queries; this module only runs them asynchronously.

Every wait on PostgreSQL ends by a deadline kept on our side. A frozen server (SIGSTOP, a
paused VM) answers neither queries nor cancel requests, and psycopg, when a query's task
is cancelled, asks the server to cancel it and waits for that. So a deadline here never
cancels anything: it shuts the connection's socket down (`sever`). The statement then fails
at once with an OperationalError, which becomes a 503, and the pool replaces the connection.
A session `statement_timeout` stops slow statements on a server that does answer.

Single reads (GET /tasks/<id>) and single inserts (POST /tasks) that arrive together are
answered by one statement each (fizzbuzz_cli.server.batch): under load, one round trip
serves many requests, and one commit many inserts.

The schedules' operations are fizzbuzz_cli.schedules' *steps* (statements and the decisions
between them, written once for the CLI and the server); `perform` runs them here, in one
transaction on one pooled connection.

/healthz does not queue behind requests: it probes on a connection of its own, one probe
at a time (concurrent /healthz requests share it), and answers from what the probe found
within its own deadline.

Runs on the event loop's thread only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import weakref
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from fizzbuzz_cli import db, link, schedules
from fizzbuzz_cli.config import WorkerSettings
from fizzbuzz_cli.errors import DatabaseUnavailable, TaskNotFound, WrongState
from fizzbuzz_cli.link import Timeouts
from fizzbuzz_cli.server.batch import Batcher
from fizzbuzz_cli.tasks import Status, Task, TaskType

log = logging.getLogger("fizz.server")

T = TypeVar("T")
Conn = psycopg.AsyncConnection[Any]

IDLE_CHECK = 1.0  # seconds unused after which a pooled connection is pinged before use
PING_TIMEOUT = 1.0  # seconds a ping of a pooled connection may take
BULK_STATEMENT_TIMEOUT = "60s"  # for the statements of one bulk insert
BULK_PROGRESS = 2000  # rows written between two extensions of a bulk insert's deadline


def sever(conn: Conn) -> None:
    """Shut a connection's socket down, whatever the server does: a statement waiting on
    it fails at once. (Only the socket is shut; the descriptor stays libpq's to close.)"""
    with contextlib.suppress(Exception):
        fd = conn.pgconn.socket
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)


class Deadlines:
    """The deadlines of the connections in use: one task checks them a few times a second
    and severs those past theirs (cheaper than a timer per statement)."""

    TICK = 0.2  # seconds between checks: a deadline is kept to within this

    def __init__(self) -> None:
        self.due: dict[Conn, float] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch(),
                                                             name="fizz-db-deadlines")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.TICK)
            now = loop.time()
            for conn in [c for c, due in self.due.items() if due <= now]:
                del self.due[conn]
                sever(conn)

    def extend(self, conn: Conn, seconds: float) -> None:
        """Move a deadline on (a bulk insert that makes progress)."""
        if conn in self.due:
            self.due[conn] = asyncio.get_running_loop().time() + seconds


def connection_params(url: str, statement_timeout: float, application: str) -> dict[str, Any]:
    """libpq parameters for the server's connections, as every fizz connection has them
    (fizzbuzz_cli.link): keepalives and a TCP user timeout on both ends, so a dead peer is
    noticed within a third of a worker's lease; statement and lock timeouts; a name in
    pg_stat_activity."""
    dead_peer = WorkerSettings.lease / 3
    timeouts = Timeouts(dead_peer=dead_peer, statement=statement_timeout,
                        lock=min(statement_timeout / 2, 2.0))
    return link.connection_params(url, timeouts, application)


async def make_durable(conn: Conn) -> None:
    """The pool's configure step: durable commits even where the server acknowledges them
    before writing (synchronous_commit off). An original worker prints a task's line once
    POST /tasks/<id> said 200: a completion lost in a crash would let the task run again."""
    cursor = await conn.execute(link.DURABLE)
    if await cursor.fetchone() == ("off",):
        await conn.execute("SET synchronous_commit = on")


class Database:
    """The server's way to PostgreSQL. `timeout`: seconds a request may wait on it in all
    (a free connection included) before it is answered 503."""

    def __init__(self, url: str, *, pool_size: int, timeout: float, health_timeout: float,
                 statement_timeout: float | None = None) -> None:
        self.url = url
        self.timeout = timeout
        params = connection_params(url, statement_timeout or timeout, "fizz serve")
        self.pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            kwargs={**params, "autocommit": True}, min_size=min(2, pool_size),
            max_size=pool_size, timeout=timeout, open=False, name="fizz",
            configure=make_durable)
        self.probe = HealthProbe({**params, "application_name": "fizz serve health",
                                  "connect_timeout": max(2, math.ceil(health_timeout))},
                                 health_timeout)
        self._returned: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()
        self.deadlines = Deadlines()
        self._reads: Batcher[int, Task | None] = Batcher(self._get_tasks)
        self._inserts: Batcher[tuple[TaskType, datetime], Task] = Batcher(self._insert_tasks)

    async def open(self, timeout: float = 10.0) -> None:
        try:
            await self.pool.open(wait=True, timeout=timeout)
        except PoolTimeout:
            await self.pool.close(timeout=1.0)
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {db.describe(self.url)} "
                                      f"within {timeout:g} s") from None
        self.deadlines.start()

    async def close(self) -> None:
        """Cut what is still running (a frozen server would never answer), then close."""
        for conn in list(self.deadlines.due):
            sever(conn)
        await self.deadlines.stop()
        await self.probe.close()
        await self.pool.close(timeout=2.0)

    # -------------------------------------------------------------- checkout

    async def run(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        """`work` on a pooled connection, within this database's deadline: the result, or
        DatabaseUnavailable (SchemaMissing when the schema is gone)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        conn = await self._checkout(loop, deadline)
        due = self.deadlines.due
        due[conn] = deadline
        try:
            return await work(conn)
        except psycopg.Error as exc:
            _translate(exc)
            raise
        finally:
            due.pop(conn, None)
            self._returned[conn] = loop.time()
            await self.pool.putconn(conn)

    async def _checkout(self, loop: asyncio.AbstractEventLoop, deadline: float) -> Conn:
        """A pooled connection; one that sat unused for a while is pinged first (it may
        have died with a restart of PostgreSQL), within the deadline."""
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise DatabaseUnavailable(f"no answer from PostgreSQL within {self.timeout:g} s")
            try:
                conn = await self.pool.getconn(timeout=left)
            except PoolTimeout:
                raise DatabaseUnavailable("no database connection could be had within "
                                          f"{self.timeout:g} s") from None
            if loop.time() - self._returned.get(conn, 0.0) <= IDLE_CHECK:
                return conn
            self.deadlines.due[conn] = min(deadline, loop.time() + PING_TIMEOUT)
            try:
                await conn.execute(db.PING)
            except psycopg.Error:
                await self.pool.putconn(conn)  # broken: the pool replaces it
                continue
            finally:
                self.deadlines.due.pop(conn, None)
            return conn

    async def healthy(self) -> bool:
        return await self.probe.healthy()

    async def perform(self, steps: schedules.Steps[T]) -> T:
        """An operation's steps (fizzbuzz_cli.schedules), in one transaction."""
        return await self.run(lambda conn: perform(conn, steps))

    # -------------------------------------------------------------- tasks

    async def add_task(self, task_type: TaskType, when: datetime) -> Task:
        """Add one task; tasks added together share one statement and one commit."""
        return await self._inserts.submit((task_type, when))

    async def _insert_tasks(self, rows: list[tuple[TaskType, datetime]]) -> list[Task]:
        async def work(conn: Conn) -> list[Task]:
            cur = _task_cursor(conn)
            await cur.execute(db.INSERT_TASKS, [[kind.value for kind, _ in rows],
                                                [when for _, when in rows]])
            return sorted(await cur.fetchall(), key=lambda task: task.id)

        return await self.run(work)

    async def get_task(self, task_id: int) -> Task:
        """One task by id; requests for tasks arriving together share one statement."""
        return _found(await self._reads.submit(task_id), task_id)

    async def _get_tasks(self, ids: list[int]) -> list[Task | None]:
        async def work(conn: Conn) -> list[Task | None]:
            cur = _task_cursor(conn)
            await cur.execute(db.GET_TASKS, [sorted(set(ids))])
            found = {task.id: task for task in await cur.fetchall()}
            return [found.get(task_id) for task_id in ids]

        return await self.run(work)

    async def delete_task(self, task_id: int) -> Task:
        return _found(await self.run(lambda conn: _one(conn, db.DELETE_TASK, [task_id])),
                      task_id)

    async def claim_task(self, task_id: int, worker: str, lease: float) -> Task:
        """Claim one waiting task by id; WrongState if it is not waiting."""
        params = {"id": task_id, "worker": worker, "lease": lease}
        task = await self.run(lambda conn: _one(conn, db.CLAIM_ONE, params))
        if task is None:
            raise WrongState(task_id, "waiting")
        return task

    async def complete_task(self, task_id: int) -> Task:
        """Mark one claimed task complete; WrongState if it is not claimed."""
        task = await self.run(lambda conn: _one(conn, db.COMPLETE_ONE, [task_id]))
        if task is None:
            raise WrongState(task_id, "claimed")
        return task

    async def next_waiting(self) -> tuple[int, datetime] | None:
        async def work(conn: Conn) -> tuple[int, datetime] | None:
            row = await (await conn.execute(db.NEXT_WAITING)).fetchone()
            return (row[0], row[1]) if row else None

        return await self.run(work)

    async def count_tasks(self) -> dict[tuple[str, str], int]:
        async def work(conn: Conn) -> dict[tuple[str, str], int]:
            return {(t, s): n for t, s, n in await (await conn.execute(db.COUNT_TASKS))
                    .fetchall()}

        return await self.run(work)

    async def list_page(self, after: int, task_type: TaskType | None, status: Status | None,
                        limit: int) -> list[Task]:
        """Up to `limit` tasks with ids above `after`, in id order."""
        params = {"after": after, "type": task_type.value if task_type else None,
                  "status": status.value if status else None, "limit": limit}

        async def work(conn: Conn) -> list[Task]:
            cur = _task_cursor(conn)
            await cur.execute(db.LIST_PAGE, params)
            return await cur.fetchall()  # type: ignore[no-any-return]

        return await self.run(work)

    async def add_tasks(self, rows: list[tuple[TaskType, datetime]]) -> list[int]:
        """Insert all rows or none, through COPY; their ids, in order."""

        async def work(conn: Conn) -> list[int]:
            async with conn.transaction():
                await conn.execute(db.LOCAL_STATEMENT_TIMEOUT, [BULK_STATEMENT_TIMEOUT])
                cur = await conn.execute(db.RESERVE_TASK_IDS, [len(rows)])
                ids = [row[0] for row in await cur.fetchall()]
                self.deadlines.extend(conn, self.timeout)
                async with conn.cursor().copy(db.COPY_TASKS_WITH_IDS) as copy:
                    copy.set_types(["int4", "varchar", "varchar", "timestamptz"])
                    for n, (task_id, (task_type, when)) in enumerate(zip(ids, rows, strict=True)):
                        await copy.write_row((task_id, task_type.value, "Waiting", when))
                        if n % BULK_PROGRESS == 0:
                            self.deadlines.extend(conn, self.timeout)
                self.deadlines.extend(conn, self.timeout)
            return ids

        return await self.run(work)


async def perform(conn: Conn, steps: schedules.Steps[T]) -> T:
    """Run an operation's steps on `conn` in a transaction: schedules.perform, awaited."""
    answer: schedules.Answer | None = None
    async with conn.transaction():
        try:
            while True:
                statement = steps.send(answer)  # type: ignore[arg-type]
                cur = await conn.execute(statement.query, statement.params)
                rows = await cur.fetchall() if cur.description else []
                answer = schedules.Answer(rows, cur.rowcount)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def _translate(error: psycopg.Error) -> None:
    """Raise the domain error for a psycopg error, by db.translate_errors' rules."""
    with db.translate_errors():
        raise error


def _task_cursor(conn: Conn) -> Any:
    """The cursor (making Tasks) of a pooled connection, made once and kept on it, as the
    pool keeps its own marks on its connections: a connection serves one request at a
    time, so its cursor does too."""
    cur = getattr(conn, "_fizz_cursor", None)
    if cur is None:
        cur = conn._fizz_cursor = conn.cursor(row_factory=db.TASK_ROW)  # type: ignore[attr-defined,arg-type]
    return cur


async def _one(conn: Conn, query: str, params: Any) -> Task | None:
    cur = _task_cursor(conn)
    await cur.execute(query, params)
    return await cur.fetchone()  # type: ignore[no-any-return]


def _found(task: Task | None, task_id: int) -> Task:
    if task is None:
        raise TaskNotFound(task_id)
    return task


class HealthProbe:
    """Does PostgreSQL answer? One probe at a time, on a connection of its own, each within
    `timeout` seconds; callers wait for the probe in flight at most that long."""

    def __init__(self, params: dict[str, Any], timeout: float) -> None:
        self.params = {**params, "autocommit": True}
        self.timeout = timeout
        self._conn: Conn | None = None
        self._probe: asyncio.Task[bool] | None = None

    async def healthy(self) -> bool:
        probe = self._probe
        if probe is None or probe.done():
            probe = self._probe = asyncio.get_running_loop().create_task(
                self._run(), name="fizz-health-probe")
        done, _ = await asyncio.wait({probe}, timeout=self.timeout)
        return bool(done) and probe.result()

    async def _run(self) -> bool:
        """Ping on the probe's connection; a connection that has died (PostgreSQL restarted
        since the last probe) gets one more try on a new one, within the same deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        for attempt in (1, 2):
            fresh = self._conn is None or self._conn.closed
            try:
                if fresh:
                    self._conn = None
                    # connect_timeout bounds this (psycopg enforces it on our side)
                    self._conn = await psycopg.AsyncConnection.connect(**self.params)
                assert self._conn is not None
                timer = loop.call_at(max(deadline, loop.time() + 0.1), sever, self._conn)
                try:
                    await self._conn.execute(db.PING)
                finally:
                    timer.cancel()
                return True
            except psycopg.Error:
                await self._drop()
                if fresh or attempt == 2 or loop.time() >= deadline:
                    return False
        return False

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def close(self) -> None:
        if self._conn is not None:
            sever(self._conn)
        if self._probe is not None and not self._probe.done():
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._probe), 3.0)
        await self._drop()
