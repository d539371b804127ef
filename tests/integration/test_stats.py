"""The operator's figures (fizzbuzz_cli.stats) against states built in the database, every
count checked exactly, and the trigger-kept totals tried against every way rows come and go."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta

import psycopg
import pytest
from helpers import Fizz

from fizzbuzz_cli import claims, db, stats
from fizzbuzz_cli.claims import Run
from fizzbuzz_cli.tasks import UTC, Status, TaskType

ORIGINAL_TABLE = """
    CREATE TABLE tasks (id SERIAL PRIMARY KEY, tasktype VARCHAR NOT NULL,
                        status VARCHAR NOT NULL, time TIMESTAMPTZ NOT NULL)"""


def add(conn: psycopg.Connection, n: int, kind: str = "FizzBuzz", status: str = "Waiting",
        when: str = "now()", **columns: str) -> None:
    names = "".join(f", {c}" for c in columns)
    values = "".join(f", {v}" for v in columns.values())
    conn.execute(f"INSERT INTO tasks (tasktype, status, time{names}) "
                 f"SELECT %s, %s, {when}{values} FROM generate_series(1, %s) AS g", [kind, status, n])


def truth(conn: psycopg.Connection) -> dict[str, object]:
    """The counts as a full scan sees them, in the snapshot's shape."""
    by_type = {t.value: {s.value: 0 for s in Status} for t in TaskType}
    for kind, status, n in conn.execute("SELECT tasktype, status, count(*) FROM tasks "
                                        "GROUP BY 1, 2"):
        by_type[kind][status] = n
    result: dict[str, object] = {s.value: sum(c[s.value] for c in by_type.values())
                                 for s in Status}
    result["by_type"] = by_type
    return result


def counts(conn: psycopg.Connection) -> dict[str, object]:
    return stats.snapshot(conn)["tasks"]


# ---------------------------------------------------------------------------- counts


def test_an_empty_database(conn: psycopg.Connection) -> None:
    snap = stats.snapshot(conn)
    assert snap["tasks"] == {
        "Waiting": 0, "Claimed": 0, "Complete": 0,
        "by_type": {t: {"Waiting": 0, "Claimed": 0, "Complete": 0}
                    for t in ("Fizz", "Buzz", "FizzBuzz")}}
    assert (snap["overdue"], snap["next_due"], snap["workers"]) == (0, None, 0)
    assert snap["lateness_ms"] == {"p50": None, "p99": None, "max": None, "n": 0}
    assert snap["lateness_histogram"]["counts"] == [0] * 11
    assert snap["throughput"] == {"1m": 0.0, "5m": 0.0, "15m": 0.0}
    assert snap["window_s"] == 900.0
    assert snap["at"].endswith("Z")


def test_counts_by_status_and_type_are_exact(conn: psycopg.Connection) -> None:
    add(conn, 3, "Fizz")
    add(conn, 5, "Fizz", "Complete", completed_at="now()")
    add(conn, 4, "FizzBuzz")
    db.add_task(conn, TaskType.BUZZ, datetime.now(UTC))
    db.add_tasks(conn, [(TaskType.BUZZ, datetime.now(UTC))] * 2 + [(TaskType.FIZZ, datetime.now(UTC))])
    conn.execute("INSERT INTO tasks (tasktype, status, time) VALUES ('FizzBuzz', 'Complete', now()), "
                 "('Buzz', 'Claimed', now())")  # as the original project writes them
    # Claims and records through the workers' own statements.
    batch = claims.claim_due(conn, "w1", ahead=0, limit=3, lease=30)
    assert len(batch.claims) == 3
    claims.record_runs(conn, "w1", [Run(c, c.due) for c in batch.claims[:2]])
    # The original server's claim and completion; a deletion of each kind.
    conn.execute("UPDATE tasks SET status = 'Claimed' WHERE id = (SELECT max(id) FROM tasks "
                 "WHERE status = 'Waiting' AND tasktype = 'FizzBuzz')")
    db.delete_task(conn, 1)
    conn.execute("DELETE FROM tasks WHERE tasktype = 'Fizz' AND status = 'Complete' "
                 "AND id IN (SELECT id FROM tasks WHERE status = 'Complete' ORDER BY id LIMIT 2)")
    expected = truth(conn)
    assert counts(conn) == expected
    assert expected["Waiting"] + expected["Claimed"] + expected["Complete"] == 15


def test_counts_follow_truncate_retyping_and_other_isolation_levels(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        add(conn, 10, "Fizz", "Complete", completed_at="now()")
        add(conn, 2, "Buzz")
        conn.execute("UPDATE tasks SET tasktype = 'FizzBuzz' WHERE id <= 3")
        conn.execute("UPDATE tasks SET tasktype = tasktype WHERE id = 4")  # no change: no count
        assert counts(conn) == truth(conn)
        assert counts(conn)["by_type"]["FizzBuzz"]["Complete"] == 3
        conn.execute("TRUNCATE tasks")
        assert counts(conn) == truth(conn)
        add(conn, 1, "Fizz")
    # Writers at REPEATABLE READ and SERIALIZABLE, interleaved with a READ COMMITTED one that
    # changes the counter rows after their snapshots were taken: none of them fails.
    with psycopg.connect(database) as rr, psycopg.connect(database) as sz, \
            psycopg.connect(database, autocommit=True) as rc:
        rr.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        sz.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        rr.execute("SELECT count(*) FROM fizz_task_totals")
        sz.execute("SELECT count(*) FROM fizz_task_totals")
        add(rc, 2, "Fizz")
        add(rr, 3, "Fizz")
        rr.execute("DELETE FROM tasks WHERE id = (SELECT min(id) FROM tasks)")
        add(sz, 4, "Fizz", "Complete", completed_at="now()")
        rr.commit()
        sz.commit()
        assert counts(rc) == truth(rc)
        assert counts(rc)["Waiting"] == 5 and counts(rc)["Complete"] == 4
        taken, left = stats.fold_totals(rc)
        assert taken >= 3 and left == 1  # Fizz alone has tasks now
        assert rc.execute("SELECT count(*) FROM fizz_task_totals").fetchone()[0] == 1
        assert counts(rc) == truth(rc)


def test_concurrent_writers_never_wait_for_each_other_and_counts_stay_exact(
        database: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def write(seed: int) -> None:
        mine: list[int] = []
        try:
            with psycopg.connect(database) as conn:
                start.wait()
                for i in range(15):
                    kind = ("Fizz", "Buzz", "FizzBuzz")[(seed + i) % 3]
                    mine += [r[0] for r in conn.execute(
                        "INSERT INTO tasks (tasktype, status, time) SELECT %s, 'Waiting', now() "
                        "FROM generate_series(1, %s) RETURNING id", [kind, 1 + i % 4])]
                    if i % 3 == 0:  # delete two of its own, of any type
                        conn.execute("DELETE FROM tasks WHERE id = ANY(%s)", [mine[:2]])
                        mine = mine[2:]
                    if i % 5 == 4:
                        time.sleep(0.01)  # hold the counter rows a while: others go around
                    conn.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with psycopg.connect(database, autocommit=True) as conn:
        assert counts(conn) == truth(conn)
        assert counts(conn)["Waiting"] == 6 * (36 - 9)  # each added 36 and deleted 9
        rows = conn.execute("SELECT count(*) FROM fizz_task_totals").fetchone()[0]
        assert rows <= 2 * 6 * 3  # bounded by the writers, not by the writes


def test_init_db_counts_the_rows_already_there(empty_database: str) -> None:
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute(ORIGINAL_TABLE)
        conn.execute("INSERT INTO tasks (tasktype, status, time) SELECT "
                     "(ARRAY['Fizz', 'Buzz', 'FizzBuzz'])[1 + g % 3], "
                     "(ARRAY['Waiting', 'Claimed', 'Complete'])[1 + g % 7 % 3], now() "
                     "FROM generate_series(1, 1000) AS g")
    assert Fizz(empty_database)("init-db").code == 0
    assert Fizz(empty_database)("init-db").code == 0  # again: counted once, not twice
    with psycopg.connect(empty_database, autocommit=True) as conn:
        assert counts(conn) == truth(conn)
        assert counts(conn)["Complete"] > 0


def test_recount_repairs_counters_that_missed_rows(conn: psycopg.Connection) -> None:
    add(conn, 5, "Buzz", "Complete", completed_at="now()")
    conn.execute("ALTER TABLE tasks DISABLE TRIGGER fizz_tasks_count_inserted")
    add(conn, 7, "Buzz", "Complete", completed_at="now()")  # as a restore without triggers
    conn.execute("ALTER TABLE tasks ENABLE TRIGGER fizz_tasks_count_inserted")
    assert counts(conn)["Complete"] == 5
    stats.recount_totals(conn)
    assert counts(conn) == truth(conn)
    assert counts(conn)["Complete"] == 12


def test_the_counts_read_no_history(conn: psycopg.Connection) -> None:
    """The plan of the counts touches the queue's indexes and the counters, never the
    whole table (a sequential scan of tasks)."""
    add(conn, 20000, "Fizz", "Complete", completed_at="now() - interval '2 days' - g * interval '1 s'")
    add(conn, 20, "Fizz")
    conn.execute("ANALYZE tasks")
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + stats.TASK_COUNTS))
    assert "Seq Scan on tasks" not in plan, plan
    assert "tasks_waiting_time_idx" in plan and "tasks_claimed" in plan, plan
    for query, params in ((stats.THROUGHPUT, {}),
                          (stats.LATENESS, {"window": 900, "bounds": [1.0]})):
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + query, params))
        assert "tasks_completed_at_idx" in plan and "Seq Scan on tasks" not in plan, plan


def fired(conn: psycopg.Connection, query: str, params: dict[str, object]) -> list[str]:
    """The triggers a statement fires, as EXPLAIN ANALYZE (which runs it) reports them."""
    plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query, params).fetchone()[0]
    return [t["Trigger Name"] for t in plan[0].get("Triggers", [])]


def test_the_workers_statements_fire_no_counting_trigger(conn: psycopg.Connection) -> None:
    """The counters cost the claim path nothing: no trigger of theirs fires on a claim, a
    record, a renewal or a hand-back (the workers' statements never change a type, never
    insert, never delete)."""
    add(conn, 4, when="now() - interval '1 second'")
    assert fired(conn, claims.CLAIM_DUE, {"worker": "w", "ahead": 0, "limit": 4,
                                          "lease": 30}) == []
    held = conn.execute("SELECT id, attempts, extract(epoch FROM time)::float8 FROM tasks "
                        "ORDER BY id").fetchall()
    ids, attempts = [r[0] for r in held], [r[1] for r in held]
    assert fired(conn, claims.RENEW_LEASES, {
        "worker": "w", "lease": 30, "host": "h", "pid": 1, "version": "0", "started": 0,
        "concurrency": 10, "in_flight": 4, "ran": 0, "ids": ids, "attempts": attempts,
        "cutoff": 0}) == []
    assert fired(conn, claims.RELEASE_CLAIMS, {"worker": "w", "ids": ids[:1],
                                               "attempts": attempts[:1]}) == []
    assert fired(conn, claims.RECORD_RUNS, {
        "worker": "w", "ids": ids[1:], "attempts": attempts[1:],
        "starts": [r[2] for r in held[1:]], "durations": [0.0] * 3}) == []
    assert counts(conn) == truth(conn)
    assert fired(conn, "DELETE FROM tasks WHERE id = %(id)s", {"id": ids[0]}) == [
        "fizz_tasks_count_deleted", "fizz_tasks_deleted"]


# ---------------------------------------------------------------------------- queue


def test_overdue_and_next_due(conn: psycopg.Connection) -> None:
    add(conn, 2, when="now() - interval '10 seconds'")
    add(conn, 1, when="now() + interval '0.5 seconds'")  # due soon, not overdue
    add(conn, 1, "Buzz", when="'2031-01-02T03:04:05.5Z'")
    add(conn, 3, "Fizz", "Complete", when="now() - interval '1 hour'", completed_at="now()")
    earliest = conn.execute("SELECT min(time) FROM tasks WHERE status = 'Waiting'").fetchone()[0]
    snap = stats.snapshot(conn)
    assert snap["overdue"] == 2
    assert snap["next_due"] == earliest.astimezone(UTC).isoformat().replace("+00:00", "Z")
    conn.execute("DELETE FROM tasks WHERE status = 'Waiting' AND time < '2030-01-01'")
    assert stats.snapshot(conn)["next_due"] == "2031-01-02T03:04:05.500000Z"
    assert stats.snapshot(conn)["overdue"] == 0


# ---------------------------------------------------------------------------- lateness


def test_lateness_over_the_window(conn: psycopg.Connection) -> None:
    # 100 runs started 1..100 ms late, completed a second ago; within the last minute.
    conn.execute("""INSERT INTO tasks (tasktype, status, time, started_at, completed_at)
        SELECT 'FizzBuzz', 'Complete', now() - interval '2 seconds' - g * interval '1 ms',
               now() - interval '2 seconds', now() - interval '1 second'
        FROM generate_series(1, 100) AS g""")
    # A Fizz started 7 s late, 10 minutes ago (completed 3 s after it started).
    conn.execute("""INSERT INTO tasks (tasktype, status, time, started_at, completed_at)
        VALUES ('Fizz', 'Complete', now() - interval '10 minutes 7 seconds',
                now() - interval '10 minutes', now() - interval '9 minutes 57 seconds')""")
    # Outside the 15 minutes; completed by the original server (no start); still running.
    conn.execute("""INSERT INTO tasks (tasktype, status, time, started_at, completed_at)
        VALUES ('Buzz', 'Complete', now() - interval '20 minutes', now() - interval '20 minutes',
                now() - interval '19 minutes 55 seconds'),
               ('Buzz', 'Complete', now() - interval '1 minute', NULL, now()),
               ('Buzz', 'Claimed', now() - interval '1 minute', NULL, NULL)""")
    snap = stats.snapshot(conn)
    assert snap["lateness_ms"] == {"p50": 51.0, "p99": 100.0, "max": 7000.0, "n": 101}
    hist = snap["lateness_histogram"]
    assert hist["below_ms"] == [0.5, 1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, None]
    #                  <0.5 <1 <2 <5 <10 <50 <100 <500 <1s <5s rest
    assert hist["counts"] == [0, 0, 1, 3, 5, 40, 50, 1, 0, 0, 1]
    narrow = stats.snapshot(conn, window=60)
    assert narrow["lateness_ms"] == {"p50": 50.0, "p99": 99.0, "max": 100.0, "n": 100}
    assert narrow["window_s"] == 60.0
    with pytest.raises(ValueError):
        stats.snapshot(conn, window=0)


def test_throughput_over_1_5_and_15_minutes(conn: psycopg.Connection) -> None:
    add(conn, 30, "Fizz", "Complete", completed_at="now() - interval '30 seconds'")
    add(conn, 60, "Buzz", "Complete", completed_at="now() - interval '3 minutes'")
    add(conn, 90, "FizzBuzz", "Complete", completed_at="now() - interval '10 minutes'")
    add(conn, 1000, "FizzBuzz", "Complete", completed_at="now() - interval '20 minutes'")
    add(conn, 5, "Fizz")
    assert stats.snapshot(conn)["throughput"] == {
        "1m": 0.5, "5m": round(90 / 300, 3), "15m": round(180 / 900, 3)}


# ---------------------------------------------------------------------------- workers


def worker_row(conn: psycopg.Connection, worker: str, seen: str, lease: float = 10.0,
               **more: int) -> None:
    conn.execute("""INSERT INTO fizz_workers (id, host, pid, version, started_at, last_seen,
                    lease, concurrency, in_flight, ran)
                    VALUES (%s, 'h1', 42, '0.9', now() - interval '1 hour', now() - %s::interval,
                            %s, 100, %s, %s)""",
                 [worker, seen, lease, more.get("in_flight", 0), more.get("ran", 0)])


def test_workers_alive_and_gone(conn: psycopg.Connection) -> None:
    worker_row(conn, "h1:42:aaaaaa", "1 second", in_flight=3, ran=120)
    worker_row(conn, "h1:43:bbbbbb", "20 seconds")  # silent longer than its lease
    worker_row(conn, "h1:44:cccccc", "20 seconds", lease=60)
    assert stats.snapshot(conn)["workers"] == 2
    alive = stats.workers(conn)
    assert [w["id"] for w in alive] == ["h1:42:aaaaaa", "h1:44:cccccc"]
    first = alive[0]
    assert {k: first[k] for k in ("host", "pid", "version", "lease_s", "concurrency",
                                   "in_flight", "ran", "alive")} == {
        "host": "h1", "pid": 42, "version": "0.9", "lease_s": 10.0, "concurrency": 100,
        "in_flight": 3, "ran": 120, "alive": True}
    assert first["started_at"].endswith("Z") and first["last_seen"].endswith("Z")
    every = stats.workers(conn, include_gone=True)
    assert [(w["id"], w["alive"]) for w in every] == [
        ("h1:42:aaaaaa", True), ("h1:43:bbbbbb", False), ("h1:44:cccccc", True)]


# ---------------------------------------------------------------------------- tasks


def test_latest_tasks_newest_first_with_filters(conn: psycopg.Connection) -> None:
    add(conn, 3, "Fizz")
    add(conn, 2, "Buzz", "Complete", completed_at="now()")
    add(conn, 2, "Fizz", "Complete", completed_at="now()")
    assert [t.id for t in stats.latest_tasks(conn, limit=3)] == [7, 6, 5]
    assert [t.id for t in stats.latest_tasks(conn, TaskType.FIZZ)] == [7, 6, 3, 2, 1]
    assert [t.id for t in stats.latest_tasks(conn, TaskType.FIZZ, Status.WAITING, 2)] == [3, 2]
    assert [t.id for t in stats.latest_tasks(conn, status=Status.COMPLETE)] == [7, 6, 5, 4]
    assert stats.latest_tasks(conn, TaskType.FIZZBUZZ) == []
    assert stats.latest_tasks(conn)[0].to_json()["status"] == "Complete"


# ---------------------------------------------------------------------------- sharing


def test_a_cache_shares_one_snapshot_between_callers() -> None:
    calls: list[float] = []

    def compute() -> dict[str, object]:
        calls.append(time.monotonic())
        time.sleep(0.05)
        return {"n": len(calls)}

    cache = stats.SnapshotCache(compute, max_age=0.5)
    results: list[dict[str, object]] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and results == [{"n": 1}] * 8
    time.sleep(0.6)
    assert cache.get() == {"n": 2}


def test_a_snapshot_is_one_instant(database: str) -> None:
    """Tasks moving from Waiting to Complete while snapshots are taken never change the
    total that the snapshots count (Complete is derived from the same snapshot)."""
    with psycopg.connect(database, autocommit=True) as conn:
        add(conn, 2000, "FizzBuzz", when="now() - interval '1 second'")
    stop = threading.Event()

    def churn() -> None:
        with psycopg.connect(database, autocommit=True) as conn:
            while not stop.is_set():
                batch = claims.claim_due(conn, "w", ahead=0, limit=50, lease=30)
                if not batch.claims:
                    return
                claims.record_runs(conn, "w", [Run(c, c.due) for c in batch.claims])

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        with psycopg.connect(database, autocommit=True) as conn:
            seen = set()
            for _ in range(30):
                t = stats.snapshot(conn)["tasks"]
                assert t["Waiting"] + t["Claimed"] + t["Complete"] == 2000
                seen.add(t["Complete"])
    finally:
        stop.set()
        thread.join(30)
    assert len(seen) > 1  # the snapshots did see the queue move


def test_snapshot_window_is_a_timedelta_friendly_number(conn: psycopg.Connection) -> None:
    assert stats.snapshot(conn, window=timedelta(minutes=5).total_seconds())["window_s"] == 300.0


def test_the_asyncio_twins_give_the_same_answers(conn: psycopg.Connection, database: str) -> None:
    """fizz serve's pool is asyncio: snapshot_async, workers_async and latest_tasks_async run
    the same queries and shape the answers the same way."""
    add(conn, 3, "Fizz")
    add(conn, 2, "Buzz", "Complete", completed_at="now() - interval '10 s'",
        started_at="now() - interval '10 s'")
    worker_row(conn, "h1:42:aaaaaa", "1 second", in_flight=3, ran=120)

    async def read() -> tuple[dict[str, object], list[dict[str, object]], list[int]]:
        async with await psycopg.AsyncConnection.connect(database, autocommit=True) as aconn:
            cache = stats.AsyncSnapshotCache(lambda: stats.snapshot_async(aconn), max_age=60)
            first, again = await asyncio.gather(cache.get(), cache.get())
            assert first is again  # one snapshot for both
            return (await stats.snapshot_async(aconn, 60), await stats.workers_async(aconn),
                    [t.id for t in await stats.latest_tasks_async(aconn, TaskType.FIZZ,
                                                                  limit=2)])

    snap, workers, latest = asyncio.run(read())
    expected = stats.snapshot(conn, 60)
    assert {k: v for k, v in snap.items() if k != "at"} == {
        k: v for k, v in expected.items() if k != "at"}
    assert workers == stats.workers(conn)
    assert latest == [3, 2]
