"""Purging completed tasks (fizzbuzz_cli.purge): exactly the rows asked for, in batches,
never waiting for a row someone holds, one automatic purger at a time."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import psycopg
import pytest
from helpers import wait_for

from fizzbuzz_cli import purge, stats
from fizzbuzz_cli.config import WorkerSettings
from fizzbuzz_cli.purge import Age, Purger
from fizzbuzz_cli.tasks import UTC


def add(conn: psycopg.Connection, n: int, status: str, completed: str | None,
        kind: str = "FizzBuzz") -> None:
    conn.execute(f"""INSERT INTO tasks (tasktype, status, time, completed_at)
        SELECT %s, %s, now() - interval '30 days', {completed or 'NULL'}
        FROM generate_series(1, %s) AS g""", [kind, status, n])


def history(conn: psycopg.Connection) -> None:
    add(conn, 5, "Complete", "now() - interval '10 days' - g * interval '1 minute'")
    add(conn, 3, "Complete", "now() - interval '2 days' - g * interval '1 minute'", "Fizz")
    add(conn, 2, "Complete", "now() - interval '1 hour'", "Buzz")
    add(conn, 1, "Complete", None)  # completed before fizz: no completion time
    add(conn, 2, "Waiting", None)  # old, but not complete
    add(conn, 1, "Claimed", None)


def left(conn: psycopg.Connection) -> list[tuple[str, str, bool]]:
    return conn.execute("SELECT tasktype, status, completed_at IS NULL FROM tasks "
                        "ORDER BY id").fetchall()


def test_purges_exactly_the_complete_tasks_completed_before_the_age(
        conn: psycopg.Connection) -> None:
    history(conn)
    dry = purge.purge(conn, Age(ago=timedelta(days=7)), dry_run=True)
    assert (dry.deleted, dry.dry_run) == (5, True)
    assert len(left(conn)) == 14  # a dry run deletes nothing
    done = purge.purge(conn, Age(ago=timedelta(days=7)))
    assert (done.deleted, done.dry_run, done.batches) == (5, False, 1)
    now = conn.execute("SELECT now()").fetchone()[0]
    assert abs(done.before - (now - timedelta(days=7))) < timedelta(seconds=5)
    assert done.to_json() == {"deleted": 5, "before": done.to_json()["before"], "dry_run": False}
    assert done.to_json()["before"].endswith("Z")
    assert purge.purge(conn, Age(ago=timedelta(days=7))).deleted == 0
    assert purge.purge(conn, purge.parse_age("12h"), batch=2).batches == 2  # 3 rows: 2 + 1
    assert left(conn) == [("Buzz", "Complete", False)] * 2 + [("FizzBuzz", "Complete", True)] + [
        ("FizzBuzz", "Waiting", True)] * 2 + [("FizzBuzz", "Claimed", True)]
    assert stats.snapshot(conn)["tasks"]["Complete"] == 3  # the counters followed


def test_purge_before_a_time(conn: psycopg.Connection) -> None:
    conn.execute("""INSERT INTO tasks (tasktype, status, time, completed_at) VALUES
        ('Fizz', 'Complete', '2026-01-01Z', '2026-01-01T10:00:00Z'),
        ('Fizz', 'Complete', '2026-01-01Z', '2026-01-02T00:00:00Z'),
        ('Fizz', 'Complete', '2026-01-01Z', '2026-01-02T00:00:01Z')""")
    done = purge.purge(conn, purge.parse_age("2026-01-02T00:00:00Z"))
    assert done.deleted == 1 and done.before == datetime(2026, 1, 2, tzinfo=UTC)
    assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 2


def test_batches_walk_forward_and_report_progress(conn: psycopg.Connection) -> None:
    # Many rows share a completion time (a worker records a whole batch in one statement).
    add(conn, 1200, "Complete", "now() - interval '2 days' - (g / 500) * interval '1 second'")
    add(conn, 1300, "Complete", "now() - interval '3 days' - g * interval '1 ms'")
    seen: list[int] = []
    done = purge.purge(conn, Age(ago=timedelta(days=1)), batch=1000, pause=0, progress=seen.append)
    assert (done.deleted, done.batches) == (2500, 3)
    assert seen == [1000, 2000, 2500]
    assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0


def test_a_purge_never_deletes_a_row_that_stopped_being_purgeable(database: str) -> None:
    """A worker hands back a run it could not print (Complete -> Waiting) while a purge
    reaches that row: the purge waits for it, sees it is no longer Complete, and keeps it."""
    with psycopg.connect(database, autocommit=True) as conn:
        add(conn, 10, "Complete", "now() - interval '2 days'")
        with psycopg.connect(database) as holder:
            holder.execute("UPDATE tasks SET status = 'Waiting', completed_at = NULL "
                           "WHERE id = 3")
            result: list[purge.Purge] = []
            thread = threading.Thread(target=lambda: result.append(
                purge.purge(conn, Age(ago=timedelta(days=1)), batch=4, pause=0)))
            thread.start()
            time.sleep(0.5)
            assert thread.is_alive()  # waiting for row 3, in its first batch
            holder.commit()
            thread.join(10)
        assert result[0].deleted == 9
        assert conn.execute("SELECT id, status FROM tasks").fetchall() == [(3, "Waiting")]


def test_two_purges_at_once_delete_each_row_once(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        add(conn, 3000, "Complete", "now() - interval '2 days' - mod(g, 7) * interval '1 s'")
    results: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(database, autocommit=True) as mine:
                results.append(purge.purge(mine, Age(ago=timedelta(days=1)), batch=100,
                                           pause=0).deleted)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and sum(results) == 3000
    with psycopg.connect(database, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0
        assert stats.snapshot(conn)["tasks"]["Complete"] == 0


def test_a_purge_can_be_stopped_between_batches(conn: psycopg.Connection) -> None:
    add(conn, 50, "Complete", "now() - interval '2 days' - g * interval '1 s'")
    stop = threading.Event()
    done = purge.purge(conn, Age(ago=timedelta(days=1)), batch=10, pause=0,
                       progress=lambda n: stop.set() if n >= 20 else None, stop=stop)
    assert done.deleted == 20
    assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 30


def test_a_purge_leaves_the_callers_connection_as_it_was(conn: psycopg.Connection) -> None:
    add(conn, 3, "Complete", "now() - interval '2 days'")
    conn.execute("SET synchronous_commit = remote_apply")  # whatever the caller had
    purge.purge(conn, Age(ago=timedelta(days=1)))
    assert conn.execute("SHOW synchronous_commit").fetchone() == ("remote_apply",)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


# ---------------------------------------------------------------------------- automatic


def test_the_purger_purges_old_tasks_and_keeps_fresh_ones(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        add(conn, 30, "Complete", "now() - interval '2 hours' - g * interval '1 s'")
        add(conn, 4, "Complete", "now() - interval '10 minutes'")
        purger = Purger(database, timedelta(hours=1), interval=0.2, batch=7)
        purger.start()
        try:
            wait_for(lambda: purger.purged == 30, 20, "for the purger")
            add(conn, 6, "Complete", "now() - interval '3 hours'")  # and later ones too
            wait_for(lambda: purger.purged == 36, 20, "for the purger's next pass")
        finally:
            started = time.monotonic()
            purger.stop()
            assert not purger.is_alive() and time.monotonic() - started < 5
        assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 4
        assert conn.execute("SELECT count(*) FROM pg_stat_activity "
                            "WHERE application_name = 'fizz purger'").fetchone()[0] == 0


def test_one_purger_at_a_time(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        add(conn, 10, "Complete", "now() - interval '2 hours'")
        conn.execute("SELECT pg_advisory_lock(%s, %s)", purge.LOCK_KEY)  # another purger
        purgers = [Purger(database, timedelta(hours=1), interval=0.1) for _ in range(2)]
        for purger in purgers:
            purger.start()
        try:
            time.sleep(1.0)
            assert [p.passes for p in purgers] == [0, 0]
            assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 10
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", purge.LOCK_KEY)
            wait_for(lambda: sum(p.purged for p in purgers) == 10, 20, "for a purger")
            assert all(p.passes >= 1 for p in purgers) or sum(p.passes for p in purgers) >= 1
        finally:
            for purger in purgers:
                purger.stop()


def test_the_purger_outlives_its_connection(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        purger = Purger(database, timedelta(hours=1), interval=0.2)
        purger.start()
        try:
            wait_for(lambda: purger.passes >= 1, 20, "for a first pass")
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE application_name = 'fizz purger'")
            add(conn, 5, "Complete", "now() - interval '2 hours'")
            wait_for(lambda: purger.purged == 5, 20, "for the purger to come back")
        finally:
            purger.stop()


def test_a_worker_with_retain_runs_a_purger(database: str) -> None:
    from fizzbuzz_cli.worker import Worker

    with psycopg.connect(database, autocommit=True) as conn:
        add(conn, 8, "Complete", "now() - interval '2 days'")
        add(conn, 2, "Complete", "now() - interval '1 hour'")
        worker = Worker(database, WorkerSettings(lease=3.0, retain=timedelta(days=1)))
        thread = threading.Thread(target=worker.run)
        thread.start()
        try:
            wait_for(lambda: conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 2, 20,
                     "for the worker's purger")
        finally:
            worker.request_stop()
            thread.join(30)
        assert not thread.is_alive()
        assert worker.purger is not None and not worker.purger.is_alive()


@pytest.mark.parametrize("retain", [timedelta(seconds=5), timedelta(hours=2), timedelta(days=30)])
def test_purge_interval_is_a_tenth_of_the_retention_within_limits(retain: timedelta) -> None:
    assert purge.purge_interval(retain) == max(1.0, min(retain.total_seconds() / 10, 60.0))
