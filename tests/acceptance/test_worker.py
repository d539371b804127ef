"""`fizz work` as real processes: on time, exactly once, crash-safe, clean stops.

Timing checks use tolerances that hold on a loaded 2-core CI machine; the tight figures
belong to bench/bench.py.
"""

from __future__ import annotations

import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from helpers import PgServer, WorkerProc, new_home, query, wait_for

from fizzbuzz_cli.embedded import EmbeddedServer

Start = Callable[..., WorkerProc]
FIZZBUZZ_LINE = re.compile(r"^FizzBuzz \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def add(url: str, kind: str, delay: float = 0.0, n: int = 1, spread: float = 0.0) -> list[int]:
    """Insert n tasks due `delay` seconds from now (the database's now), spread evenly."""
    rows = query(url, """
        INSERT INTO tasks (tasktype, status, time)
        SELECT %s, 'Waiting', now() + (%s + %s * i / greatest(%s, 1)) * interval '1 second'
        FROM generate_series(0, %s - 1) AS i
        RETURNING id""", [kind, delay, spread, n, n])
    return [r[0] for r in rows]


def due_epoch(url: str, task_id: int) -> float:
    return query(url, "SELECT extract(epoch FROM time)::float8 FROM tasks WHERE id = %s",
                 [task_id])[0][0]


def printed_at(line: str) -> float:
    return datetime.fromisoformat(line.split()[1].replace("Z", "+00:00")).timestamp()


def statuses(url: str) -> dict[str, int]:
    return dict(query(url, "SELECT status, count(*) FROM tasks GROUP BY status"))


def all_complete(url: str) -> bool:
    return set(statuses(url)) == {"Complete"}


def test_each_type_prints_its_line_on_time(database: str, workers: Start) -> None:
    worker = workers()
    fizz, = add(database, "Fizz", 1.0)
    buzz, = add(database, "Buzz", 1.0)
    fizzbuzz, = add(database, "FizzBuzz", 1.0)
    wait_for(lambda: len(worker.lines) == 3, 15, worker.log())
    assert worker.stop() == 0
    by_line = {line.split()[0]: (at, line) for at, line in worker.lines}
    assert by_line["Fizz"][1] == f"Fizz {fizz}"
    assert by_line["Buzz"][1] == f"Buzz {buzz}"
    assert FIZZBUZZ_LINE.match(by_line["FizzBuzz"][1])
    due = due_epoch(database, fizz)
    # Lateness where a user sees it: when the line arrives on the pipe. Never early; on
    # time up to a loaded machine's jitter.
    arrived = by_line["FizzBuzz"][0] - due_epoch(database, fizzbuzz)
    assert 0 <= arrived < 0.25, arrived
    stated = printed_at(by_line["FizzBuzz"][1]) - due_epoch(database, fizzbuzz)
    assert 0 <= stated <= arrived, stated  # the time it states is when it ran
    assert 3.0 <= by_line["Fizz"][0] - due < 3.25
    assert 5.0 <= by_line["Buzz"][0] - due < 5.25
    assert all_complete(database)
    # The run was recorded as this worker's, with when it began.
    rows = query(database, "SELECT worker, extract(epoch FROM started_at - time)::float8, "
                 "extract(epoch FROM completed_at - started_at)::float8 FROM tasks ORDER BY id")
    assert all(w is not None and w.split(":")[1] == str(worker.proc.pid) for w, _, _ in rows)
    assert all(0 <= late < 0.25 for _, late, _ in rows), rows
    assert [round(took, 3) for _, _, took in rows] == [3.0, 5.0, 0.0]
    assert [line.split()[0] for line in worker.output()] == ["FizzBuzz", "Fizz", "Buzz"]


def test_stdout_carries_only_task_lines(database: str, workers: Start) -> None:
    add(database, "FizzBuzz", 0, n=5)
    worker = workers("--drain")
    assert worker.wait() == 0
    assert len(worker.lines) == 5 and all(FIZZBUZZ_LINE.match(line) for line in worker.output())
    assert "ready" in worker.log() and "ran 5 tasks" in worker.log()


def test_overdue_tasks_start_at_once(database: str, workers: Start) -> None:
    fizz, = add(database, "Fizz", -60)
    add(database, "FizzBuzz", -60)
    started = time.time()
    worker = workers("--drain", ready=False)
    assert worker.wait(timeout=30) == 0
    lines = dict((line.split()[0], at) for at, line in worker.lines)
    assert lines["FizzBuzz"] - started < 3.0  # process start-up included
    assert 3.0 <= lines["Fizz"] - started < 6.0
    assert worker.output()[-1] == f"Fizz {fizz}"


def test_exactly_once_with_three_workers(database: str, workers: Start) -> None:
    crew = [workers() for _ in range(3)]
    fizz = add(database, "Fizz", 0.5, n=700, spread=1.5)
    buzz = add(database, "Buzz", 0.5, n=300, spread=1.5)
    add(database, "FizzBuzz", 0.5, n=1000, spread=1.5)
    wait_for(lambda: all_complete(database), 40, "for 2,000 tasks to complete")
    for worker in crew:
        assert worker.stop() == 0
    lines = [line for worker in crew for line in worker.output()]
    counts = Counter(line for line in lines if not line.startswith("FizzBuzz"))
    assert counts == Counter([f"Fizz {i}" for i in fizz] + [f"Buzz {i}" for i in buzz])
    assert sum(1 for line in lines if line.startswith("FizzBuzz")) == 1000
    assert query(database, "SELECT count(*), max(attempts) FROM tasks WHERE status = 'Complete'"
                 ) == [(2000, 1)]
    assert all(len(worker.lines) > 0 for worker in crew)  # the work was shared


def test_a_killed_workers_task_runs_again_elsewhere(database: str, workers: Start) -> None:
    doomed = workers("--lease", "2")
    buzz, = add(database, "Buzz", 0)
    wait_for(lambda: query(database, "SELECT status FROM tasks")[0][0] == "Claimed", 10)
    time.sleep(1.0)  # mid-Buzz
    doomed.proc.kill()
    doomed.wait()
    killed_at = time.time()
    rescuer = workers("--lease", "2")
    wait_for(lambda: rescuer.output() == [f"Buzz {buzz}"], 20, rescuer.log())
    assert rescuer.stop() == 0
    assert doomed.output() == []
    # The claim's lease (2 s, renewed every 0.67 s) runs out about 2 s after the kill; the
    # rescuer reaps it once it has watched the database for 2 s itself, then runs a whole
    # Buzz (5 s): about 7-8 s.
    assert time.time() - killed_at < 11, time.time() - killed_at
    assert query(database, "SELECT status, attempts FROM tasks") == [("Complete", 2)]
    assert "whose lease ran out: back to Waiting" in rescuer.log()


def test_sigterm_finishes_running_tasks_and_hands_back_the_rest(
    database: str, workers: Start
) -> None:
    worker = workers("--ahead", "0.5")
    running, = add(database, "Fizz", 0)
    wait_for(lambda: query(database, "SELECT status FROM tasks")[0][0] == "Claimed", 10)
    later, = add(database, "FizzBuzz", 0.45)  # claimed ahead, not started at the signal
    wait_for(lambda: statuses(database).get("Claimed") == 2, 5)
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=15) == 0
    assert worker.output() == [f"Fizz {running}"]
    (first, done, owner), (second, back, nobody) = query(
        database, "SELECT id, status, worker FROM tasks ORDER BY id")
    assert (first, done, second, back, nobody) == (running, "Complete", later, "Waiting", None)
    assert owner.split(":")[1] == str(worker.proc.pid)
    assert "handed back 1 tasks (not yet started)" in worker.log()


def test_grace_period_then_hand_back_and_a_second_signal_is_immediate(
    database: str, workers: Start
) -> None:
    patient = workers("--grace", "0.5")
    add(database, "Buzz", 0)
    wait_for(lambda: statuses(database) == {"Claimed": 1}, 10)
    patient.signal(signal.SIGTERM)
    assert patient.wait(timeout=10) == 0
    assert patient.output() == []
    assert statuses(database) == {"Waiting": 1}
    assert "still running when the grace period ended" in patient.log()

    hasty = workers()
    wait_for(lambda: statuses(database) == {"Claimed": 1}, 10)
    hasty.signal(signal.SIGINT)
    time.sleep(0.3)
    hasty.signal(signal.SIGINT)
    assert hasty.wait(timeout=10) == 0
    assert hasty.output() == []
    assert query(database, "SELECT status, attempts FROM tasks") == [("Waiting", 2)]


def test_a_task_deleted_while_claimed_is_dropped(database: str, workers: Start) -> None:
    worker = workers()
    doomed, kept = add(database, "Fizz", 0, n=2)
    wait_for(lambda: statuses(database) == {"Claimed": 2}, 10)
    query(database, "DELETE FROM tasks WHERE id = %s RETURNING id", [doomed])
    wait_for(lambda: len(worker.lines) == 1, 10)
    time.sleep(0.5)
    assert worker.stop() == 0
    assert worker.output() == [f"Fizz {kept}"]
    assert f"dropped task {doomed}: it was deleted" in worker.log()
    assert statuses(database) == {"Complete": 1}


def test_concurrency_limits_tasks_in_flight(database: str, workers: Start) -> None:
    worker = workers("--concurrency", "2")
    add(database, "Fizz", 0, n=4)
    wait_for(lambda: len(worker.lines) == 4, 20, worker.log())
    assert worker.stop() == 0
    times = sorted(at for at, _ in worker.lines)
    assert times[1] - times[0] < 0.5  # two at a time...
    assert 2.9 <= times[2] - times[0] < 3.5  # ...and the second pair waited for room
    assert times[3] - times[2] < 0.5


def test_drain_exits_when_nothing_is_due(database: str, workers: Start) -> None:
    add(database, "Fizz", 3600)
    worker = workers("--drain", ready=False)
    assert worker.wait(timeout=20) == 0
    assert worker.output() == []
    assert statuses(database) == {"Waiting": 1}


def test_idle_workers_do_not_stampede(database: str, workers: Start) -> None:
    """One worker claims each wave and announces the next due time; the others listen."""
    crew = [workers(options=("-v",)) for _ in range(6)]
    add(database, "FizzBuzz", 1.0, n=20, spread=20 * 0.15)
    wait_for(lambda: all_complete(database), 20)
    for worker in crew:
        assert worker.stop() == 0
    assert sum(len(worker.lines) for worker in crew) == 20
    queries = sum(worker.log().count("claim query:") for worker in crew)
    # One claim per wave, give or take a worker waking while another claims (about one wave
    # in five on a quiet machine, more on a busy one): 20 waves make 20 to 36 claims, where
    # 6 workers querying every wave would make 120.
    assert 20 <= queries <= 36, queries


def test_a_closed_stdout_stops_the_worker_and_hands_tasks_back(database: str) -> None:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "fizzbuzz_cli", "work", "--database-url",
                             database], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    add(database, "FizzBuzz", 0)
    assert proc.stdout is not None and proc.stdout.readline().startswith(b"FizzBuzz ")
    proc.stdout.close()  # like `fizz work | head -1`
    add(database, "FizzBuzz", 0.3, n=3)
    assert proc.wait(timeout=20) == 1
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert "cannot write to stdout" in err and err.rstrip().endswith(
        "Error: cannot write to stdout ([Errno 32] Broken pipe)")
    assert "Traceback" not in err and "Exception ignored" not in err
    assert statuses(database) == {"Complete": 1, "Waiting": 3}


def test_bad_options() -> None:
    from helpers import Fizz

    result = Fizz(None)("work", "--ahead", "9", "--lease", "10", url=False)
    assert (result.code, result.err) == (2, "Error: --ahead 9 is more than half the lease "
                                            "(10 s)\n")


@pytest.fixture
def restartable(pg_server: PgServer, database: str) -> Iterator[tuple[str, EmbeddedServer]]:
    """A database on a server this test may restart (the session's own, when it has one)."""
    if pg_server.embedded is not None:
        yield database, pg_server.embedded
        return
    home = new_home()
    server = EmbeddedServer(home, throwaway=True)
    try:
        url = server.ensure_database()
        with psycopg.connect(url, autocommit=True) as conn:
            from fizzbuzz_cli import db

            db.migrate(conn)
        yield url, server
    finally:
        server.stop()
        import shutil

        shutil.rmtree(Path(home), ignore_errors=True)


def test_survives_a_postgresql_restart(restartable: tuple[str, EmbeddedServer],
                                       workers: Start) -> None:
    url, server = restartable
    crew = [workers(url=url), workers(url=url)]
    fizz = add(url, "Fizz", 0.5, n=20, spread=3)
    add(url, "FizzBuzz", 0.5, n=200, spread=4)
    time.sleep(1.5)
    server.restart()
    late = add(url, "FizzBuzz", 0, n=10)  # added right after the restart
    wait_for(lambda: all_complete(url), 40, "for every task to complete after the restart")
    for worker in crew:
        assert worker.stop() == 0
    lines = [line for worker in crew for line in worker.output()]
    assert Counter(line for line in lines if line.startswith("Fizz ")) == Counter(
        f"Fizz {i}" for i in fizz)
    assert sum(1 for line in lines if line.startswith("FizzBuzz")) == 210
    assert query(url, "SELECT count(*) FROM tasks WHERE status = 'Complete'") == [(230,)]
    assert late and all("the database is back" in worker.log() for worker in crew)
    assert all(worker.log().count("lost the database") == 1 for worker in crew), [w.log() for w in crew]
    assert query(url, "SELECT max(attempts) FROM tasks") == [(1,)]


def test_clock_offset_is_zero_against_the_same_machine(database: str) -> None:
    from fizzbuzz_cli.worker.clock import DbClock

    clock = DbClock()
    with psycopg.connect(database, autocommit=True) as conn:
        clock.measure(conn)
    assert clock.offset == 0.0
    assert abs((clock.now() - datetime.now(clock.now().tzinfo)).total_seconds()) < 0.01
    assert timedelta(0) == timedelta(seconds=clock.offset)


def test_a_worker_registers_and_serves_its_metrics(database: str, workers: Start) -> None:
    import re
    import urllib.request

    worker = workers("--metrics-port", "0")
    address = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", worker.log())
    assert address, worker.log()
    wait_for(lambda: query(database, "SELECT count(*) FROM fizz_workers") == [(1,)], 5)
    row = query(database, "SELECT id, pid, lease, concurrency FROM fizz_workers")
    assert [(r[1], r[2], r[3]) for r in row] == [(worker.proc.pid, 10.0, 10_000)]
    assert row[0][0].split(":")[1] == str(worker.proc.pid)
    add(database, "FizzBuzz", 0.3, n=3)
    add(database, "Fizz", 0.3, n=2)
    wait_for(lambda: len(worker.lines) == 5, 15, worker.log())
    text = urllib.request.urlopen(address.group(1), timeout=5).read().decode()
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines()
                   if line and not line.startswith("#"))
    assert samples['fizz_worker_tasks_run_total{type="FizzBuzz"}'] == "3"
    assert samples['fizz_worker_tasks_run_total{type="Fizz"}'] == "2"
    assert samples["fizz_worker_lateness_seconds_count"] == "5"
    assert float(samples["fizz_worker_lateness_seconds_sum"]) < 5 * 0.25
    assert int(samples["fizz_worker_claim_seconds_count"]) >= 1
    assert int(samples["fizz_worker_record_seconds_count"]) >= 2
    assert samples["fizz_worker_tasks_in_flight"] == "0"
    assert samples["fizz_worker_database_up"] == "1"
    assert samples["fizz_worker_tasks_handed_back_total"] == "0"
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(address.group(1).replace("/metrics", "/"), timeout=5)
    assert worker.stop() == 0
    assert query(database, "SELECT count(*) FROM fizz_workers") == [(0,)]  # gone when stopped


def test_no_new_task_after_sigterm(database: str, workers: Start) -> None:
    worker = workers("--grace", "5")
    running, = add(database, "Buzz", 0)
    wait_for(lambda: statuses(database) == {"Claimed": 1}, 10)
    worker.signal(signal.SIGTERM)
    time.sleep(0.5)
    later = add(database, "FizzBuzz", 0, n=3)  # due now, while it finishes its Buzz
    assert worker.wait(timeout=15) == 0
    assert worker.output() == [f"Buzz {running}"]
    assert query(database, "SELECT id, status FROM tasks WHERE id = ANY(%s) ORDER BY id",
                 [later]) == [(i, "Waiting") for i in later]


def test_a_claim_made_by_plain_sql_is_handed_back_and_run(database: str,
                                                          workers: Start) -> None:
    """A claim made outside fizz (the original server, or SQL by hand) gets a lease from a
    trigger; when its holder never completes it, a worker hands it back and runs it."""
    fizz, = add(database, "Fizz", -5)
    query(database, "UPDATE tasks SET status = 'Claimed' WHERE id = %s RETURNING id", [fizz])
    row = query(database, "SELECT lease_until - renewed_at, worker, attempts FROM tasks")
    assert row == [(timedelta(seconds=60), None, 1)]
    # As if that minute had passed: a 1 s lease that ran out a second ago.
    query(database, "UPDATE tasks SET renewed_at = now() - interval '2 s', "
                    "lease_until = now() - interval '1 s' RETURNING id")
    worker = workers("--lease", "2")
    wait_for(lambda: worker.output() == [f"Fizz {fizz}"], 15, worker.log())
    assert f"task {fizz} was claimed by an unknown client, whose lease ran out" in worker.log()
    assert query(database, "SELECT status, attempts FROM tasks") == [("Complete", 2)]


def test_drain_says_what_is_due_later_and_wait_waits_for_it(database: str,
                                                            workers: Start) -> None:
    later, = add(database, "FizzBuzz", 2.0)
    quick = workers("--drain", ready=False)
    assert quick.wait(timeout=20) == 0
    assert quick.output() == []
    assert "nothing more is due; 1 task is due later, the next at 20" in quick.log()
    assert "--wait waits for them" in quick.log()
    patient = workers("--drain", "--wait", ready=False)
    assert patient.wait(timeout=20) == 0
    assert len(patient.output()) == 1 and FIZZBUZZ_LINE.match(patient.output()[0])
    assert statuses(database) == {"Complete": 1}
    assert query(database, "SELECT id FROM tasks") == [(later,)]


def test_a_run_whose_claim_was_taken_over_is_not_printed(database: str,
                                                         workers: Start) -> None:
    """Its claim reaped and taken by another worker while this one could not renew (as
    after a freeze): this worker's record fails the fence, so it prints nothing."""
    worker = workers("--lease", "30")  # no renewal before the record comes due
    fizz, = add(database, "Fizz", 0.3)
    wait_for(lambda: statuses(database) == {"Claimed": 1}, 10)
    query(database, "UPDATE tasks SET worker = 'elsewhere:1:abcdef', attempts = attempts + 1 "
                    "RETURNING id")
    time.sleep(4.5)  # past the line's time
    assert worker.stop() == 0
    assert worker.output() == []
    assert f"dropped task {fizz}: it is no longer this worker's to run" in worker.log()
    assert query(database, "SELECT status, worker FROM tasks") == [
        ("Claimed", "elsewhere:1:abcdef")]
