"""Crashes and stops: PostgreSQL restarted and killed outright, workers killed outright and
stopped with SIGTERM, with `fizz serve` and an original-protocol client beside them."""

from __future__ import annotations

import time

from harness.cluster import Cluster
from harness.pgserver import FaultServer

LEASE = 10.0


def test_postgresql_restarted_then_killed(cluster: Cluster, fault_server: FaultServer) -> None:
    original = cluster.original_worker(cluster.serve(), holding=1)  # one Buzz in its hands
    crew = [cluster.worker("w1"), cluster.worker("w2")]
    cluster.add("Fizz", delay=1, n=100, spread=20)
    cluster.add("Buzz", delay=1, n=100, spread=20)
    cluster.add("FizzBuzz", delay=1, n=100, spread=20)
    time.sleep(4)
    fault_server.restart()
    time.sleep(6)
    fault_server.kill_postmaster()  # kill -9, then crash recovery
    verdict = cluster.finish(timeout=90)
    assert verdict.ok, verdict.summary() + cluster.logs()[-5000:]
    assert verdict.printed == 301 and original.out
    logs = cluster.logs()
    assert "whose lease ran out" not in logs, logs[-5000:]  # every holder came back in time
    assert "Traceback" not in logs
    for worker in crew:  # each outage logged once, and its end once
        assert worker.log().count("WARNING lost the database") == 2, worker.log()
        assert worker.log().count("the database is back") == 2, worker.log()
    assert verdict.late() <= LEASE + 5, verdict.summary()


def test_workers_killed_outright_and_stopped(cluster: Cluster) -> None:
    """kill -9 loses only lines whose runs were recorded in the instant before the kill;
    every other task of the killed worker runs elsewhere about a lease later. SIGTERM
    finishes what runs, hands back the rest, and exits 0."""
    doomed, stopped, _ = (cluster.worker(f"w{i}") for i in range(1, 4))
    cluster.add("Fizz", delay=1, n=150, spread=20)
    cluster.add("Buzz", delay=1, n=150, spread=20)
    cluster.add("FizzBuzz", delay=1, n=150, spread=20)
    time.sleep(6)
    doomed.kill()
    time.sleep(6)
    stopped.terminate()
    assert stopped.wait(timeout=30) == 0
    assert "handed back" in stopped.log() and "stopped: ran" in stopped.log()
    verdict = cluster.finish(timeout=90, window=0.25)
    assert verdict.ok, verdict.summary() + cluster.logs()[-5000:]
    assert verdict.printed + len(verdict.excused) == 450
    assert len(verdict.excused) <= 5, verdict.summary()
    assert verdict.late() <= 2 * LEASE + 5, verdict.summary()
