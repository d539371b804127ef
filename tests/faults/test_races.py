"""Races with no fault at all, and with a slow database: claims and renewals interleave."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from harness.cluster import Cluster


@pytest.fixture
def run(database: str) -> Iterator[Cluster]:
    with Cluster(database) as cluster:
        yield cluster


def test_two_workers_share_waves_without_dropping_a_claim(run: Cluster) -> None:
    """Two workers, waves of 340 tasks due at once: no claim is ever judged lost (a claim
    answered after a renewal began was once dropped, and its task ran 28 s late)."""
    crew = [run.worker("w1", "--lease", "3"), run.worker("w2", "--lease", "3")]
    for _ in range(3):
        run.add("Fizz", delay=2, n=170)
        run.add("FizzBuzz", delay=2, n=170)
        time.sleep(3)
    verdict = run.finish(timeout=30)
    assert verdict.ok, verdict.summary() + run.logs()[-5000:]
    assert verdict.printed == 1020
    for worker in crew:
        assert "dropped" not in worker.log() and "handed back 0" in worker.log(), worker.log()
    assert verdict.late() < 2.0, verdict.summary()


def test_slow_claims_and_renewals(run: Cluster) -> None:
    """A database where a claim takes 0.1 s and a renewal 0.2 s (a trigger sleeps), with
    renewals every second: claims answered while a renewal runs are neither dropped nor left
    Claimed, and the tasks run on time."""
    run.sql("""
        CREATE FUNCTION slow_down() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF position('WITH due AS' IN current_query()) > 0 THEN
                PERFORM pg_sleep(0.1);
            ELSIF position('renewed AS' IN current_query()) > 0 THEN
                PERFORM pg_sleep(0.2);
            END IF;
            RETURN NULL;
        END $$;
        CREATE TRIGGER slow_down BEFORE UPDATE ON tasks
            FOR EACH STATEMENT EXECUTE FUNCTION slow_down();""")
    worker = run.worker("w1", "--lease", "3")
    run.add("Fizz", delay=1, n=150, spread=30)
    verdict = run.finish(timeout=60)
    assert verdict.ok, verdict.summary() + run.logs()[-5000:]
    assert verdict.printed == 150
    assert "dropped" not in worker.log() and "handed back" not in worker.log().replace(
        "handed back 0", ""), worker.log()
    assert verdict.late() < 1.0, verdict.summary()
