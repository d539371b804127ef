"""The database layer's task functions: add, list, get, delete, and the HTTP claim/complete."""

from __future__ import annotations

from datetime import datetime

import psycopg
import pytest

from fizzbuzz_cli import db
from fizzbuzz_cli.errors import TaskNotFound, WrongState
from fizzbuzz_cli.tasks import UTC, Status, TaskType


def add(conn: psycopg.Connection, n: int, when: str = "now()", kind: str = "FizzBuzz") -> None:
    conn.execute(f"INSERT INTO tasks (tasktype, status, time) SELECT %s, 'Waiting', {when} "
                 "FROM generate_series(1, %s)", [kind, n])


def statuses(conn: psycopg.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall())


def test_add_get_delete(conn: psycopg.Connection) -> None:
    when = datetime(2023, 3, 28, 11, 59, 59, tzinfo=UTC)
    task = db.add_task(conn, TaskType.BUZZ, when)
    assert (task.id, task.type, task.status, task.time, task.attempts) == (
        1, TaskType.BUZZ, Status.WAITING, when, 0)
    assert db.get_task(conn, 1) == task
    assert db.delete_task(conn, 1) == task
    with pytest.raises(TaskNotFound, match="task 1 not found"):
        db.get_task(conn, 1)


def test_add_tasks_copies_in_one_transaction(conn: psycopg.Connection) -> None:
    when = datetime(2023, 3, 28, tzinfo=UTC)
    seen: list[int] = []
    assert db.add_tasks(conn, [(TaskType.FIZZ, when)] * 12000, seen.append) == 12000
    assert seen == [5000, 10000, 12000]

    def broken():
        yield TaskType.FIZZ, when
        raise ValueError("bad row")

    with pytest.raises(ValueError):
        db.add_tasks(conn, broken())
    assert statuses(conn) == {"Waiting": 12000}


def test_iter_tasks_filters_in_one_query(conn: psycopg.Connection) -> None:
    add(conn, 3, kind="Fizz")
    add(conn, 2, kind="Buzz")
    conn.execute("UPDATE tasks SET status = 'Complete', completed_at = now() WHERE id IN (1, 4)")
    ids = lambda **kw: [t.id for t in db.iter_tasks(conn, **kw)]
    assert ids() == [1, 2, 3, 4, 5]
    assert ids(task_type=TaskType.FIZZ) == [1, 2, 3]
    assert ids(status=Status.COMPLETE) == [1, 4]
    assert ids(task_type=TaskType.BUZZ, status=Status.WAITING) == [5]
    assert ids(limit=2) == [1, 2]
    assert ids(limit=0) == []


def test_http_style_claim_and_complete_by_id(conn: psycopg.Connection) -> None:
    add(conn, 1)
    claimed = db.claim_task(conn, 1, "http", lease=60)
    assert (claimed.status, claimed.worker, claimed.attempts) == (Status.CLAIMED, "http", 1)
    with pytest.raises(WrongState, match="task 1 is not waiting"):
        db.claim_task(conn, 1, "http", lease=60)
    done = db.complete_task(conn, 1)
    assert done.status is Status.COMPLETE and done.completed_at is not None
    with pytest.raises(WrongState, match="task 1 is not claimed"):
        db.complete_task(conn, 1)
    row = conn.execute("SELECT lease_until, renewed_at FROM tasks WHERE id = 1").fetchone()
    assert row == (None, claimed.claimed_at)
