"""Worker logic that needs no database: clocks, announcements, job times."""

from __future__ import annotations

import time

import pytest

from fizzbuzz_cli.db import Claim
from fizzbuzz_cli.tasks import TaskType
from fizzbuzz_cli.worker import Worker, _parse_announcement, _parse_snapshot, clock_correction


@pytest.mark.parametrize(("offset", "uncertainty", "expected"), [
    (0.0004, 0.0001, 0.0),  # same machine: noise
    (0.003, 0.005, 0.0),  # within what the round trip can tell
    (0.25, 0.0002, 0.25),  # the database's clock is ahead
    (-2.0, 0.001, -2.0),  # ... or behind
])
def test_clock_correction(offset: float, uncertainty: float, expected: float) -> None:
    assert clock_correction(offset, uncertainty) == expected


def test_jobs_run_on_the_database_clock() -> None:
    worker = Worker("postgresql://unused")
    worker.offset = 2.0  # the database's clock is 2 s ahead of ours
    due = time.time() + 10.0
    worker.runner.add([Claim(1, TaskType.FIZZBUZZ, due, 1), Claim(2, TaskType.FIZZ, due, 1)],
                      time.monotonic())
    fizzbuzz, fizz = sorted((job for _, _, job in worker.runner.heap), key=lambda j: j.fire)
    assert fizzbuzz.start == pytest.approx(due - 2.0, abs=1e-5)
    assert fizzbuzz.start > due - 2.0  # never early, even by float rounding
    assert fizz.fire == pytest.approx(due - 2.0 + 3.0, abs=1e-5)
    assert abs((worker.now().timestamp() - time.time()) - 2.0) < 0.01


def test_overdue_jobs_start_now() -> None:
    worker = Worker("postgresql://unused")
    before = time.time()
    worker.runner.add([Claim(1, TaskType.BUZZ, before - 60, 1)], time.monotonic())
    [(_, _, job)] = worker.runner.heap
    assert before <= job.start <= time.time() and job.fire == job.start + 5.0


def test_reclaiming_a_task_supersedes_the_old_job() -> None:
    worker = Worker("postgresql://unused")
    worker.runner.add([Claim(7, TaskType.FIZZ, time.time() + 60, 1)], time.monotonic())
    worker.runner.add([Claim(7, TaskType.FIZZ, time.time() + 60, 2)], time.monotonic())
    jobs = [job for _, _, job in worker.runner.heap]
    assert [(j.claim.attempt, j.cancelled) for j in jobs] == [(1, True), (2, False)]
    assert worker.runner.jobs[7].claim.attempt == 2


def test_announcement_payloads() -> None:
    assert _parse_announcement("1893456000.000000 742") == (1893456000.0, 742)
    assert _parse_announcement("1893456000.5") == (1893456000.5, None)
    assert _parse_snapshot("100:105:101,103") == (100, 105, {101, 103})
    assert _parse_snapshot("100:100:") == (100, 100, set())


def test_a_next_announcement_keeps_tasks_its_snapshot_could_not_see() -> None:
    worker = Worker("postgresql://unused")
    now = time.monotonic()
    worker._announced = [(now, 50.0, 99), (now, 40.0, 103), (now, 30.0, 120)]
    worker._on_next("60.0 100:110:103")  # saw xid 99, not 103 (running) nor 120 (later)
    assert worker._next_due == 30.0
    worker._announced = [(now, 50.0, 99)]
    worker._on_next("60.0 100:110:")
    assert worker._next_due == 60.0  # everything announced was visible to it
    worker._on_next("- 100:110:")
    assert worker._next_due is None
