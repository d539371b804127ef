"""The database layer's claim, completion, release, lease and listing functions."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

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


def test_claim_due_takes_due_tasks_in_time_order_up_to_the_limit(conn: psycopg.Connection) -> None:
    conn.execute("""INSERT INTO tasks (tasktype, status, time) VALUES
        ('Fizz', 'Waiting', now() + interval '1 hour'),
        ('Buzz', 'Waiting', now() - interval '1 minute'),
        ('FizzBuzz', 'Waiting', now() + interval '200 milliseconds'),
        ('Fizz', 'Waiting', now() - interval '2 minutes')""")
    claims = db.claim_due(conn, "w1", ahead=0.5, limit=10, lease=30)
    assert [(c.id, c.type, c.attempt) for c in claims] == [
        (4, TaskType.FIZZ, 1), (2, TaskType.BUZZ, 1), (3, TaskType.FIZZBUZZ, 1)]
    assert claims[0].due < claims[1].due < claims[2].due
    assert db.claim_due(conn, "w2", ahead=0.5, limit=10, lease=30) == []
    row = conn.execute("SELECT worker, lease_until - claimed_at FROM tasks WHERE id = 4").fetchone()
    assert row == ("w1", timedelta(seconds=30))
    due, snapshot = db.next_due(conn)
    assert abs(due - (time.time() + 3600)) < 5
    assert snapshot.count(":") == 2


def test_concurrent_claims_never_overlap(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        add(conn, 3000)
    claimed: dict[str, list[int]] = {}

    def worker(name: str) -> None:
        with psycopg.connect(database, autocommit=True) as conn:
            mine: list[int] = []
            while batch := db.claim_due(conn, name, ahead=0, limit=50, lease=30):
                mine.extend(c.id for c in batch)
            claimed[name] = mine

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for ids in claimed.values() for i in ids]
    assert sorted(every) == list(range(1, 3001))


def test_completion_is_fenced_by_worker_and_attempt(conn: psycopg.Connection) -> None:
    add(conn, 2)
    first, second = db.claim_due(conn, "w1", ahead=0, limit=10, lease=30)
    assert db.complete_claims(conn, "w2", [first]) == set()  # not its claim
    stale = db.Claim(first.id, first.type, first.due, first.attempt + 1)
    assert db.complete_claims(conn, "w1", [stale]) == set()  # another attempt
    assert db.complete_claims(conn, "w1", [first, second]) == {1, 2}
    assert db.complete_claims(conn, "w1", [first]) == set()  # only once
    assert statuses(conn) == {"Complete": 2}


def test_release_hands_back_and_notifies(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn, \
            psycopg.connect(database, autocommit=True) as listener:
        add(conn, 3)
        claims = db.claim_due(conn, "w1", ahead=0, limit=10, lease=30)
        listener.execute("LISTEN fizz_tasks")
        assert db.release_claims(conn, "w2", [c.id for c in claims]) == 0
        assert db.release_claims(conn, "w1", [1, 2]) == 2
        assert [n.channel for n in listener.notifies(timeout=0.5)] == ["fizz_tasks"]
        assert statuses(conn) == {"Waiting": 2, "Claimed": 1}
        row = conn.execute("SELECT worker, claimed_at, lease_until, attempts FROM tasks "
                           "WHERE id = 1").fetchone()
        assert row == (None, None, None, 1)


def test_renew_reports_what_the_worker_still_holds(conn: psycopg.Connection) -> None:
    add(conn, 3)
    db.claim_due(conn, "w1", ahead=0, limit=10, lease=1)
    conn.execute("DELETE FROM tasks WHERE id = 2")
    assert db.renew_leases(conn, "w1", lease=60) == {(1, 1), (3, 1)}
    left = conn.execute("SELECT min(lease_until - now()) FROM tasks WHERE status = 'Claimed'")
    assert left.fetchone()[0] > timedelta(seconds=55)


def test_reap_returns_expired_claims_but_not_right_after_a_server_restart(
    conn: psycopg.Connection,
) -> None:
    add(conn, 2)
    db.claim_due(conn, "dead", ahead=0, limit=10, lease=30)
    conn.execute("UPDATE tasks SET lease_until = now() - interval '1 second' WHERE id = 1")
    uptime = conn.execute("SELECT extract(epoch FROM now() - pg_postmaster_start_time())")
    grace_longer_than_uptime = float(uptime.fetchone()[0]) + 3600
    assert db.reap_expired(conn, grace=grace_longer_than_uptime) == []
    reaped = db.reap_expired(conn, grace=0)
    assert [(r.id, r.worker) for r in reaped] == [(1, "dead")]
    assert statuses(conn) == {"Waiting": 1, "Claimed": 1}


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


def test_database_clock_offset_is_small_on_one_machine(conn: psycopg.Connection) -> None:
    offset, uncertainty = db.database_clock(conn)
    assert abs(offset) < 0.05 and uncertainty < 0.05


def test_completion_plan_is_driven_by_the_batch_ids_whatever_the_statistics(
    conn: psycopg.Connection,
) -> None:
    """Right after a burst of claims, statistics say there are no claimed rows. The generic
    plan of the (prepared) completion must still look each id up by primary key rather than
    loop over the batch for every claimed row (which took a second per batch)."""
    conn.execute("INSERT INTO tasks (tasktype, status, time, worker, attempts, lease_until) "
                 "SELECT 'FizzBuzz', 'Claimed', now(), 'w1', 1, now() + interval '1 minute' "
                 "FROM generate_series(1, 5000)")
    query_text = (db.COMPLETE_CLAIMS.replace("%(ids)s", "$1").replace("%(attempts)s", "$2")
                  .replace("%(worker)s", "$3"))
    conn.execute(f"PREPARE complete_claims (int[], int[], text) AS {query_text}")
    conn.execute("SET plan_cache_mode = force_generic_plan")
    plan = "\n".join(row[0] for row in conn.execute(
        "EXPLAIN EXECUTE complete_claims('{1,2,3}', '{1,1,1}', 'w1')"))
    assert "Index Scan using tasks_pkey on tasks" in plan, plan
    assert "tasks_claimed" not in plan and "Join Filter" not in plan, plan
