"""Frozen processes (SIGSTOP, as a VM pause would): PostgreSQL itself, and a worker."""

from __future__ import annotations

import time

from harness.cluster import Cluster
from harness.pgserver import FaultServer

LEASE = 10.0


def test_postgresql_frozen_for_15_s(cluster: Cluster, fault_server: FaultServer) -> None:
    """Two workers, `fizz serve` and a client of the original worker protocol: after the
    thaw, every holder records or renews before any reaper judges a lease (a reaper needs a
    whole lease of live observation, and the freeze broke it)."""
    original = cluster.original_worker(cluster.serve(), holding=1)  # one Buzz in its hands
    cluster.worker("w1")
    cluster.worker("w2")
    cluster.add("Fizz", delay=1, n=100, spread=25)
    cluster.add("Buzz", delay=1, n=100, spread=25)
    cluster.add("FizzBuzz", delay=1, n=100, spread=25)
    time.sleep(5)
    frozen = fault_server.freeze()
    time.sleep(15)
    fault_server.thaw(frozen)
    verdict = cluster.finish(timeout=90)
    assert verdict.ok, verdict.summary() + cluster.logs()[-5000:]
    assert verdict.printed == 301
    assert original.out, "the original-protocol client ran nothing"
    logs = cluster.logs()
    assert "whose lease ran out" not in logs, logs[-5000:]  # every holder was alive
    assert "Traceback" not in logs
    assert verdict.late() <= 15 + LEASE + 5, verdict.summary()


def test_a_worker_frozen_right_after_printing_a_burst(cluster: Cluster) -> None:
    """300 Fizz due at once: the worker records them all before their lines are due, and is
    frozen for 15 s as the first lines come out. The other worker finds them recorded
    (Complete): it runs none again; the frozen one prints the rest when thawed."""
    first = cluster.worker("w1")
    fizz = cluster.add("Fizz", delay=1, n=300)
    deadline = time.monotonic() + 10
    while cluster.statuses() != {"Claimed": 300}:
        assert time.monotonic() < deadline, cluster.statuses()
        time.sleep(0.05)
    second = cluster.worker("w2")
    first.wait_for(lambda: len(first.out) > 0, 15, "the first line")
    first.freeze()
    frozen_with = len(first.out)
    time.sleep(15)
    first.thaw()
    verdict = cluster.finish(timeout=60)
    assert verdict.ok, verdict.summary() + cluster.logs()[-5000:]
    assert sorted(int(text.split()[1]) for text in first.lines()) == fizz
    assert second.lines() == []
    assert frozen_with < 300 or verdict.late() < 1.0  # (the freeze came mid-burst, usually)
