"""The claim lifecycle's SQL (fizzbuzz_cli.claims), each fence tried against the rows that
should get through it and the rows that should not."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import psycopg
import pytest

from fizzbuzz_cli import claims
from fizzbuzz_cli.claims import Claim, Run
from fizzbuzz_cli.tasks import TaskType


def add(conn: psycopg.Connection, n: int, when: str = "now()", kind: str = "FizzBuzz") -> None:
    conn.execute(f"INSERT INTO tasks (tasktype, status, time) SELECT %s, 'Waiting', {when} "
                 "FROM generate_series(1, %s)", [kind, n])


def statuses(conn: psycopg.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall())


def rows(conn: psycopg.Connection, columns: str = "id, status, worker, attempts") -> list[tuple]:
    return conn.execute(f"SELECT {columns} FROM tasks ORDER BY id").fetchall()


def db_now(conn: psycopg.Connection) -> float:
    return conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()[0]


def info(worker: str, lease: float = 30.0, **more: object) -> claims.WorkerInfo:
    return claims.WorkerInfo(worker, "host", 1234, "0.0", time.time() - 60, lease, 100,
                             **more)  # type: ignore[arg-type]


def runs(batch: claims.ClaimBatch) -> list[Run]:
    return [Run(c, max(c.due, batch.at)) for c in batch.claims]


# ---------------------------------------------------------------------------- claiming


def test_claim_due_takes_due_tasks_in_time_order_up_to_the_limit(conn: psycopg.Connection) -> None:
    add(conn, 1, "now() + interval '10 minutes'")  # not due
    add(conn, 1, "now() - interval '1 second'", kind="Fizz")
    add(conn, 1, "now() + interval '0.2 seconds'", kind="Buzz")  # within `ahead`
    add(conn, 1, "now() - interval '5 seconds'")
    before = db_now(conn)
    batch = claims.claim_due(conn, "w1", ahead=0.5, limit=10, lease=30)
    assert [(c.id, c.type, c.attempt) for c in batch.claims] == [
        (4, TaskType.FIZZBUZZ, 1), (2, TaskType.FIZZ, 1), (3, TaskType.BUZZ, 1)]
    assert batch.claims[0].due < batch.claims[1].due < batch.claims[2].due
    assert before <= batch.at <= db_now(conn)  # the claim's own time: the orphan cut-off
    assert claims.claim_due(conn, "w2", ahead=0.5, limit=10, lease=30).claims == []
    row = conn.execute("SELECT worker, lease_until - claimed_at, renewed_at = claimed_at "
                       "FROM tasks WHERE id = 4").fetchone()
    assert row == ("w1", timedelta(seconds=30), True)
    assert [c.id for c in claims.claim_due(conn, "w3", ahead=0, limit=1, lease=30).claims] == []


def test_concurrent_claims_never_overlap(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        add(conn, 3000)
    claimed: dict[str, list[int]] = {}

    def claim_all(name: str) -> None:
        with psycopg.connect(database, autocommit=True) as conn:
            mine = []
            while batch := claims.claim_due(conn, name, ahead=0, limit=50, lease=30).claims:
                mine += [c.id for c in batch]
            claimed[name] = mine

    threads = [threading.Thread(target=claim_all, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for ids in claimed.values() for i in ids]
    assert sorted(every) == list(range(1, 3001))


# ---------------------------------------------------------------------------- recording


def test_a_record_is_fenced_by_worker_attempt_and_status(conn: psycopg.Connection) -> None:
    add(conn, 3, kind="Fizz")
    batch = claims.claim_due(conn, "w1", ahead=0, limit=10, lease=30)
    first, second, third = runs(batch)
    assert claims.record_runs(conn, "w2", [first]) == set()  # not its claim
    stale = Run(Claim(first.claim.id, first.claim.type, first.claim.due, 2), first.start)
    assert claims.record_runs(conn, "w1", [stale]) == set()  # another attempt
    conn.execute("UPDATE tasks SET status = 'Waiting' WHERE id = 3")  # handed back meanwhile
    assert claims.record_runs(conn, "w1", [second, first, third]) == {1, 2}
    assert rows(conn) == [(1, "Complete", "w1", 1), (2, "Complete", "w1", 1),
                          (3, "Waiting", "w1", 1)]
    # Asked again (an answer was lost): what is recorded as this worker's is reported again,
    # and nothing changes.
    stamp = rows(conn, "completed_at")
    assert claims.record_runs(conn, "w1", [first, second]) == {1, 2}
    assert rows(conn, "completed_at") == stamp
    assert claims.recorded_runs(conn, "w1", [first, second, third]) == {1, 2}
    assert claims.recorded_runs(conn, "w2", [first]) == set()


def test_a_record_stamps_when_the_run_began_and_ends(conn: psycopg.Connection) -> None:
    add(conn, 1, "now() - interval '1 second'", kind="Fizz")
    add(conn, 1, "now() + interval '2 seconds'", kind="FizzBuzz")
    batch = claims.claim_due(conn, "w1", ahead=5, limit=10, lease=30)
    fizz, fizzbuzz = batch.claims
    # The Fizz started 4 s ago: its line is 1 s overdue, the record late; the FizzBuzz's
    # line is 2 s ahead, the record early (as records are, by a few milliseconds).
    assert claims.record_runs(conn, "w1", [Run(fizz, batch.at - 4.0),
                                           Run(fizzbuzz, fizzbuzz.due)]) == {1, 2}
    stamps = dict((r[0], r[1:]) for r in conn.execute(
        "SELECT id, extract(epoch FROM started_at)::float8, "
        "extract(epoch FROM completed_at)::float8, extract(epoch FROM now())::float8 "
        "FROM tasks"))
    started, completed, now = stamps[1]
    assert completed == pytest.approx(now, abs=0.5) and started == pytest.approx(completed - 3)
    started, completed, _ = stamps[2]
    assert started == pytest.approx(fizzbuzz.due, abs=1e-3) and completed == started


def test_a_record_committed_by_a_lost_connection_is_reported(database: str) -> None:
    """The statement of a connection that broke as it committed (an 'old backend') holds the
    row; asking again waits for it, then reports the record as this worker's."""
    with psycopg.connect(database, autocommit=True) as conn:
        add(conn, 2, kind="Fizz")
        batch = claims.claim_due(conn, "w1", ahead=0, limit=10, lease=30)
    both = runs(batch)
    with psycopg.connect(database) as old:  # a transaction left open, as if still in flight
        params = {"worker": "w1", "ids": [1], "attempts": [1], "starts": [both[0].start],
                  "durations": [3.0]}
        assert old.execute(claims.RECORD_RUNS, params).fetchall() == [(1,)]
        answer: dict[str, set[int]] = {}

        def ask_again() -> None:
            with psycopg.connect(database, autocommit=True) as conn:
                answer["recorded"] = claims.record_runs(conn, "w1", both)

        asking = threading.Thread(target=ask_again)
        asking.start()
        time.sleep(0.3)
        assert asking.is_alive()  # waiting for the old statement's row lock
        old.commit()
        asking.join(timeout=10)
    assert answer["recorded"] == {1, 2}


def test_unrecord_takes_back_only_this_workers_unprinted_runs(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn, \
            psycopg.connect(database, autocommit=True) as listener:
        add(conn, 2)
        batch = claims.claim_due(conn, "w1", ahead=0, limit=10, lease=30)
        assert claims.record_runs(conn, "w1", runs(batch)) == {1, 2}
        listener.execute("LISTEN fizz_tasks")
        assert claims.unrecord_runs(conn, "w2", runs(batch)) == 0
        assert claims.unrecord_runs(conn, "w1", runs(batch)[:1]) == 1
        assert [n.channel for n in listener.notifies(timeout=0.5)] == ["fizz_tasks"]
        first, second = rows(conn, "id, status, worker, completed_at IS NULL, "
                             "started_at IS NULL, attempts")
        assert first == (1, "Waiting", None, True, True, 1)
        assert second == (2, "Complete", "w1", False, False, 1)


# ---------------------------------------------------------------------------- handing back


def test_release_is_fenced_and_notifies(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn, \
            psycopg.connect(database, autocommit=True) as listener:
        add(conn, 3)
        held = claims.claim_due(conn, "w1", ahead=0, limit=10, lease=30).claims
        listener.execute("LISTEN fizz_tasks")
        assert claims.release_claims(conn, "w2", held) == 0
        stale = Claim(held[2].id, held[2].type, held[2].due, 7)
        assert claims.release_claims(conn, "w1", [held[0], held[1], stale]) == 2
        assert [n.channel for n in listener.notifies(timeout=0.5)] == ["fizz_tasks"]
        assert statuses(conn) == {"Waiting": 2, "Claimed": 1}
        assert rows(conn, "worker, claimed_at, renewed_at, lease_until, attempts")[0] == (
            None, None, None, None, 1)


def test_renewal_renews_exactly_the_claims_given(conn: psycopg.Connection) -> None:
    add(conn, 4)
    batch = claims.claim_due(conn, "w1", ahead=0, limit=10, lease=1)
    one, two, three, _ = batch.claims
    conn.execute("DELETE FROM tasks WHERE id = 2")
    conn.execute("UPDATE tasks SET attempts = 5 WHERE id = 3")  # re-claimed meanwhile
    renewal = claims.renew_leases(conn, info("w1", lease=60), [one, two, three], chunk=2)
    assert renewal.held == {1}
    leases = dict(conn.execute("SELECT id, lease_until - now() > interval '55 seconds' "
                               "FROM tasks WHERE status = 'Claimed'").fetchall())
    assert leases == {1: True, 3: False, 4: False}  # 4 is not known: not renewed
    assert renewal.at == pytest.approx(db_now(conn), abs=1.0)


def test_renewal_hands_back_orphans_claimed_up_to_the_cutoff(conn: psycopg.Connection) -> None:
    add(conn, 3)
    first = claims.claim_due(conn, "w1", ahead=0, limit=2, lease=30)  # ids 1, 2
    time.sleep(0.01)
    second = claims.claim_due(conn, "w1", ahead=0, limit=1, lease=30)  # id 3: in flight
    held = first.claims[:1]  # the worker knows of 1; the answer about 2 was lost
    assert claims.release_orphans(conn, "w1", held, cutoff=None) == []
    assert claims.release_orphans(conn, "w1", held, cutoff=first.at) == [2]
    assert rows(conn, "id, status") == [(1, "Claimed"), (2, "Waiting"), (3, "Claimed")]
    # Once the worker has read claim 3's answer, it is no orphan either.
    assert claims.release_orphans(conn, "w1", [*held, *second.claims], second.at) == []
    assert claims.release_orphans(conn, "w2", [], second.at) == []  # another's claims


def test_orphans_among_thousands_of_claims_are_found_at_once(conn: psycopg.Connection) -> None:
    add(conn, 20_000)
    batch = claims.claim_due(conn, "w1", ahead=0, limit=20_000, lease=30)
    keep = [c for c in batch.claims if c.id != 777]
    started = time.monotonic()
    assert claims.release_orphans(conn, "w1", keep, batch.at) == [777]
    assert time.monotonic() - started < 2.0  # an anti-join, not a scan of the list per row


def test_renewal_keeps_the_workers_row_fresh(conn: psycopg.Connection) -> None:
    claims.renew_leases(conn, info("w1", in_flight=3, ran=10), [])
    claims.renew_leases(conn, info("w2"), [])
    conn.execute("UPDATE fizz_workers SET last_seen = now() - interval '6 minutes' "
                 "WHERE id = 'w2'")  # gone long ago
    claims.renew_leases(conn, info("w1", in_flight=1, ran=12), [])
    assert conn.execute("SELECT id, host, pid, lease, concurrency, in_flight, ran, "
                        "last_seen > started_at FROM fizz_workers").fetchall() == [
        ("w1", "host", 1234, 30.0, 100, 1, 12, True)]
    claims.forget_worker(conn, "w1")
    assert conn.execute("SELECT count(*) FROM fizz_workers").fetchone() == (0,)


# ---------------------------------------------------------------------------- reaping


def expire(conn: psycopg.Connection, task_id: int, lease: float, ago: float) -> None:
    """Make task_id's lease `lease` seconds long and expired `ago` seconds ago."""
    conn.execute("UPDATE tasks SET renewed_at = now() - (%s + %s) * interval '1 second', "
                 "lease_until = now() - %s * interval '1 second' WHERE id = %s",
                 [lease, ago, ago, task_id])


def test_reaping_needs_a_lease_of_unbroken_observation(conn: psycopg.Connection) -> None:
    add(conn, 3)
    claims.claim_due(conn, "dead", ahead=0, limit=10, lease=30)
    expire(conn, 1, lease=10, ago=1)
    expire(conn, 2, lease=60, ago=1)  # a longer lease: needs longer observation
    now = db_now(conn)
    # No observation yet (a reaper that just started or reconnected): nothing.
    result = claims.reap_expired(conn, since=None, last=None, max_gap=1.5)
    assert result.reaped == [] and result.at == pytest.approx(now, abs=1.0)
    # Seen for 5 s only: less than any lease here.
    assert claims.reap_expired(conn, since=now - 5, last=now - 0.5, max_gap=1.5).reaped == []
    # Seen for 20 s, but the last observation was 3 s ago: a gap (a freeze, a cut).
    assert claims.reap_expired(conn, since=now - 20, last=now - 3, max_gap=1.5).reaped == []
    # Seen for 20 s without a gap: the 10 s lease is reaped, the 60 s one is not, nor the
    # unexpired one.
    result = claims.reap_expired(conn, since=now - 20, last=now - 0.5, max_gap=1.5)
    assert [(r.id, r.worker) for r in result.reaped] == [(1, "dead")]
    assert rows(conn, "id, status, worker, lease_until IS NULL") == [
        (1, "Waiting", None, True), (2, "Claimed", "dead", False),
        (3, "Claimed", "dead", False)]
    result = claims.reap_expired(conn, since=now - 61, last=now - 0.5, max_gap=1.5)
    assert [r.id for r in result.reaped] == [2]


def test_reaping_skips_rows_being_changed(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        add(conn, 2)
        claims.claim_due(conn, "w1", ahead=0, limit=10, lease=30)
        expire(conn, 1, lease=5, ago=1)
        expire(conn, 2, lease=5, ago=1)
        now = db_now(conn)
        with psycopg.connect(database) as holder:
            holder.execute("SELECT 1 FROM tasks WHERE id = 1 FOR UPDATE")  # a renewal, say
            started = time.monotonic()
            result = claims.reap_expired(conn, since=now - 30, last=now, max_gap=1.5)
            assert time.monotonic() - started < 1.0
        assert [r.id for r in result.reaped] == [2]


def test_database_clock_offset_is_small_on_one_machine(conn: psycopg.Connection) -> None:
    offset, uncertainty = claims.database_clock(conn)
    assert abs(offset) < 0.05 and uncertainty < 0.05


def test_waiting_summary(conn: psycopg.Connection) -> None:
    assert claims.waiting_summary(conn) == (0, None)
    add(conn, 2, "'2030-01-01T00:00:00Z'")
    assert claims.waiting_summary(conn) == (2, 1893456000.0)


@pytest.mark.parametrize("query", ["RECORD_RUNS", "RECORDED_RUNS", "RENEW_LEASES",
                                   "RELEASE_CLAIMS", "UNRECORD_RUNS", "RELEASE_ORPHANS"])
def test_batch_plans_look_ids_up_by_primary_key_whatever_the_statistics(
    conn: psycopg.Connection, query: str,
) -> None:
    """Right after a burst of claims, statistics say there are no claimed rows. The generic
    plan of a prepared batch statement must still look each id up by primary key rather than
    loop over the batch for every claimed row (which took a second per batch)."""
    conn.execute("INSERT INTO tasks (tasktype, status, time, worker, attempts, lease_until) "
                 "SELECT 'FizzBuzz', 'Claimed', now(), 'w1', 1, now() + interval '1 minute' "
                 "FROM generate_series(1, 5000)")
    names = ["ids", "attempts", "starts", "durations", "worker", "lease", "cutoff", "host",
             "pid", "version", "started", "concurrency", "in_flight", "ran"]
    text = getattr(claims, query)
    used = [name for name in names if f"%({name})s" in text]
    for number, name in enumerate(used, 1):
        text = text.replace(f"%({name})s", f"${number}")
    types = {"ids": "int[]", "attempts": "int[]", "starts": "float8[]",
             "durations": "float8[]", "worker": "text", "lease": "float8", "cutoff": "float8",
             "host": "text", "pid": "int", "version": "text", "started": "float8",
             "concurrency": "int", "in_flight": "int", "ran": "bigint"}
    values = {"ids": "'{1,2,3}'", "attempts": "'{1,1,1}'", "starts": "'{0,0,0}'",
              "durations": "'{0,0,0}'", "worker": "'w1'", "lease": "10", "cutoff": "0",
              "host": "'h'", "pid": "1", "version": "'0'", "started": "0",
              "concurrency": "1", "in_flight": "0", "ran": "0"}
    conn.execute(f"PREPARE batch ({', '.join(types[n] for n in used)}) AS {text}")
    conn.execute("SET plan_cache_mode = force_generic_plan")
    plan = "\n".join(row[0] for row in conn.execute(
        f"EXPLAIN EXECUTE batch({', '.join(values[n] for n in used)})"))
    assert "Index Scan using tasks_pkey on tasks" in plan, plan
    assert "Seq Scan on tasks" not in plan, plan
    # No join of the batch with itself either: a generic plan guesses an array holds 10
    # rows, and a nested loop comparing 1000 x 1000 took 0.2 s per statement.
    assert "Join Filter" not in plan, plan


def test_records_and_claims_are_durable_even_where_commits_are_not(database: str) -> None:
    """A server that acknowledges commits before writing them (synchronous_commit off) could
    lose a record in a crash after its line was printed, or a claim, whose attempt number
    the next claim of the task would then reuse (the fence of a record in flight could not
    tell the two apart: found by bench/faults.py, a kill -9 of PostgreSQL printed ten
    FizzBuzz lines twice). The recorder's and the dispatcher's connections ask for durable
    commits whatever the server's default."""
    from fizzbuzz_cli.link import Link, Outage, Timeouts
    from fizzbuzz_cli.worker.main import Worker
    from fizzbuzz_cli.worker.recorder import prepare

    name = psycopg.conninfo.conninfo_to_dict(database)["dbname"]
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(
            psycopg.sql.Identifier(name)))
    link = Link(database, "recorder", Timeouts.for_lease(10), Outage(), setup=prepare)
    plain = Link(database, "other", Timeouts.for_lease(10), Outage())
    try:
        show = "SELECT current_setting('synchronous_commit')"
        assert link.run(lambda conn: conn.execute(show).fetchone()) == ("on",)
        assert plain.run(lambda conn: conn.execute(show).fetchone()) == ("off",)
        worker = Worker(database)
        worker.dispatcher.connect()
        try:
            assert worker.dispatcher.link.run(
                lambda conn: conn.execute(show).fetchone()) == ("on",)
        finally:
            worker.dispatcher.close()
    finally:
        link.close()
        plain.close()


def test_batches_stay_fast_whatever_the_statistics_say(conn: psycopg.Connection) -> None:
    """In the middle of a drain (statistics taken after thousands of claims and records),
    a plain join let the planner scan the table for each id of a batch: a record of 1,000
    runs took 1-2 s. The batch drives the join, so every record stays in milliseconds."""
    add(conn, 20_000)
    conn.execute("ANALYZE tasks")
    batches = [claims.claim_due(conn, "w1", ahead=0, limit=1000, lease=30) for _ in range(10)]
    slowest = 0.0
    for number, batch in enumerate(batches):
        if number == 5:
            conn.execute("ANALYZE tasks")  # as autovacuum does, mid-burst
        started = time.monotonic()
        assert len(claims.record_runs(conn, "w1", runs(batch))) == 1000
        slowest = max(slowest, time.monotonic() - started)
    assert slowest < 0.5, slowest  # 1-2 s each with the plan the statistics chose
