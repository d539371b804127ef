"""Hosts cut off from the network (their link taken down at the bridge), with workers on
them: nothing is printed twice, nothing is left behind, the cut is noticed within a third
of the lease and the worker is back within 2 s of the network."""

from __future__ import annotations

import time

from harness.cluster import Cluster

LEASE = 10.0


def test_one_host_cut_for_30_s(cluster: Cluster) -> None:
    hosts = [cluster.host() for _ in range(3)]
    crew = [cluster.worker(f"w{i}", host=host) for i, host in enumerate(hosts, 1)]
    cluster.add("Fizz", delay=1, n=300, spread=25)
    cluster.add("Buzz", delay=1, n=300, spread=25)
    time.sleep(4)
    cut_at = time.time()
    cluster.network.cut(hosts[0])
    noticed = crew[0].wait_log("lost the database", timeout=10, after=cut_at)
    time.sleep(max(0.0, cut_at + 30 - time.time()))
    cluster.network.restore(hosts[0])
    restored_at = time.time()
    back = crew[0].wait_log("the database is back", timeout=10, after=restored_at)
    # The others stop (their share, and the cut worker's, is done by now): what is added
    # next can only run if the worker that was cut off claims again.
    for other in crew[1:]:
        other.terminate()
        assert other.wait(timeout=30) == 0, other.log()
    later = set(cluster.add("Fizz", delay=1, n=60, spread=5))
    verdict = cluster.finish(timeout=90)
    assert verdict.ok, verdict.summary() + cluster.logs()[-5000:]
    assert verdict.printed == 660
    assert noticed - cut_at <= LEASE / 3 + 0.5, f"the cut was noticed after {noticed - cut_at} s"
    assert back - restored_at <= 2.0, f"back {back - restored_at} s after the network"
    # Logged once each: the cut and the recovery.
    log = crew[0].log()
    assert log.count("WARNING lost the database") == 1 and log.count("the database is back") == 1, log
    # It claims again at once: the tasks added after the restore all ran on it.
    assert later <= {int(text.split()[1]) for text in crew[0].lines()}, crew[0].log()
    # Lateness: no worse than the cut's length plus a lease plus a few seconds.
    assert verdict.late() <= 30 + LEASE + 5, verdict.summary()


def test_claims_held_by_a_cut_worker_run_elsewhere_once(cluster: Cluster) -> None:
    hosts = [cluster.host() for _ in range(3)]
    holder = cluster.worker("w1", host=hosts[0])
    buzz = cluster.add("Buzz", delay=1, n=50)
    deadline = time.monotonic() + 10
    while cluster.statuses() != {"Claimed": 50}:
        assert time.monotonic() < deadline, cluster.statuses()
        time.sleep(0.05)
    others = [cluster.worker(f"w{i}", host=host) for i, host in enumerate(hosts[1:], 2)]
    cluster.network.cut(hosts[0])  # before any of the 50 Buzz lines is due
    cut_at = time.time()
    time.sleep(30)
    cluster.network.restore(hosts[0])
    holder.wait_log("the database is back", timeout=10, after=cut_at)
    verdict = cluster.finish(timeout=30)
    assert verdict.ok, verdict.summary() + cluster.logs()[-5000:]
    assert holder.lines() == []  # it could not record them, so it never printed them
    ran = sorted(int(text.split()[1]) for w in others for text in w.lines())
    assert ran == buzz
    # Back on the network, it finds the runs were someone else's and drops them.
    assert holder.log().count("dropped task") == 50, holder.log()
    assert cluster.sql("SELECT min(attempts), max(attempts) FROM tasks") == [(2, 2)]


def test_every_host_cut_for_15_s(cluster: Cluster) -> None:
    hosts = [cluster.host() for _ in range(3)]
    crew = [cluster.worker(f"w{i}", host=host) for i, host in enumerate(hosts, 1)]
    cluster.add("Fizz", delay=1, n=200, spread=30)
    cluster.add("Buzz", delay=1, n=100, spread=30)
    cluster.add("FizzBuzz", delay=1, n=300, spread=30)
    time.sleep(5)
    for host in hosts:
        cluster.network.cut(host)
    time.sleep(15)
    for host in hosts:
        cluster.network.restore(host)
    verdict = cluster.finish(timeout=90)
    assert verdict.ok, verdict.summary() + cluster.logs()[-5000:]
    assert verdict.printed == 600
    logs = cluster.logs()
    assert "deadlock" not in logs and "Traceback" not in logs, logs[-5000:]
    # Nobody reaped anything: every holder came back and renewed (no one could watch the
    # database for a lease while every host was cut, and after, the holders renewed first).
    assert "whose lease ran out" not in logs, logs[-5000:]
    assert verdict.late() <= 15 + LEASE + 5, verdict.summary()
    for worker in crew:
        assert worker.log().count("WARNING lost the database") == 1, worker.log()


def test_a_record_whose_answer_is_lost_is_printed_once(cluster: Cluster) -> None:
    """The network fails while the worker's record commits: the worker cannot know whether
    it did. Back on the network, it asks again, finds the run recorded as its own, and
    prints the line, late, once."""
    cluster.sql("""
        CREATE FUNCTION slow_record() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF position('started_at = greatest' IN current_query()) > 0 THEN
                PERFORM pg_sleep(2);  -- well inside the statement timeout (a third of the lease)
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER slow_record BEFORE UPDATE ON tasks
            FOR EACH ROW EXECUTE FUNCTION slow_record();""")
    host = cluster.host()
    worker = cluster.worker("w1", host=host)
    fizz, = cluster.add("Fizz", delay=0.5)
    recording = ("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                 "AND query LIKE '%started_at = greatest%' AND pid <> pg_backend_pid()")
    # The record of the task, in its trigger's sleep: not the empty record the recorder runs
    # to warm up when it connects (on a loaded machine, as late as the task is added).
    sleeping = recording + " AND wait_event = 'PgSleep'"
    deadline = time.monotonic() + 15
    while cluster.sql(sleeping) != [(1,)]:
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.02)
    cluster.network.cut(host)  # the record is running; its answer will not get through
    while cluster.sql(recording) != [(0,)]:  # it commits, server side
        time.sleep(0.05)
    assert cluster.sql("SELECT status FROM tasks") == [("Complete",)]
    time.sleep(4)  # longer than the connection's user timeout: the worker gives it up
    cluster.network.restore(host)
    worker.wait_for(lambda: worker.lines() == [f"Fizz {fizz}"], 15, "the line")
    verdict = cluster.finish(timeout=10)
    assert verdict.ok and verdict.printed == 1, verdict.summary() + worker.log()
    assert verdict.late() > 2.0  # it came late, but it came
    assert cluster.sql("SELECT attempts FROM tasks") == [(1,)]
