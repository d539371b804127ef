"""Worker logic that needs no database: clocks, job times, the job book, the recorder's
timing, the reaper's continuity, announcements and connection timeouts."""

from __future__ import annotations

import time

import psycopg
import pytest

from fizzbuzz_cli.claims import Claim, ClaimBatch
from fizzbuzz_cli.link import Backoff, Timeouts
from fizzbuzz_cli.reaper import Continuity
from fizzbuzz_cli.tasks import TaskType
from fizzbuzz_cli.worker.book import JobBook, State, job_for
from fizzbuzz_cli.worker.clock import clock_correction
from fizzbuzz_cli.worker.dispatcher import DueTracker, parse_announcement, parse_snapshot
from fizzbuzz_cli.worker.recorder import StatementTime

FIZZ, BUZZ, FIZZBUZZ = TaskType.FIZZ, TaskType.BUZZ, TaskType.FIZZBUZZ


@pytest.mark.parametrize(("offset", "uncertainty", "expected"), [
    (0.0004, 0.0001, 0.0),  # same machine: noise
    (0.003, 0.005, 0.0),  # within what the round trip can tell
    (0.0015, 0.0002, 0.0015),  # just past a millisecond: applied
    (0.002, 0.0005, 0.002),
    (0.05, 0.001, 0.05),
    (0.15, 0.001, 0.15),
    (-0.12, 0.001, -0.12),
    (0.25, 0.0002, 0.25),  # the database's clock is ahead
    (-2.0, 0.001, -2.0),  # ... or behind
])
def test_clock_correction(offset: float, uncertainty: float, expected: float) -> None:
    assert clock_correction(offset, uncertainty) == expected


# ---------------------------------------------------------------------------- job times


def test_jobs_run_on_the_database_clock_and_never_early() -> None:
    due = time.time() + 10.0
    fizzbuzz = job_for(Claim(1, FIZZBUZZ, due, 1), offset=2.0, claimed_at=due - 5)
    fizz = job_for(Claim(2, FIZZ, due, 1), offset=2.0, claimed_at=due - 5)
    assert fizzbuzz.start == pytest.approx(due - 2.0, abs=1e-5)
    assert fizzbuzz.start > due - 2.0  # never early, even by float rounding
    assert fizzbuzz.fire == fizzbuzz.start
    assert fizz.fire == pytest.approx(due - 2.0 + 3.0, abs=1e-5)
    assert fizz.run.start == pytest.approx(due, abs=1e-5)  # recorded on the database's clock


def test_an_overdue_job_starts_at_its_claim() -> None:
    claimed_at = time.time() - 0.01
    buzz = job_for(Claim(1, BUZZ, claimed_at - 60, 1), offset=0.0, claimed_at=claimed_at)
    assert buzz.start == pytest.approx(claimed_at, abs=1e-5) and buzz.fire == buzz.start + 5.0


# ---------------------------------------------------------------------------- the book


def locked(book: JobBook, method: str, *args: object, **kwargs: object) -> object:
    """Call a method the worker's threads call with the book's lock held."""
    with book.lock:
        return getattr(book, method)(*args, **kwargs)


def claim_batch(*claims: Claim, at: float | None = None) -> ClaimBatch:
    return ClaimBatch(list(claims), time.time() if at is None else at)


def test_a_job_goes_from_claim_to_print() -> None:
    freed: list[int] = []
    book = JobBook(on_freed=lambda: freed.append(1))
    due = time.time() - 1
    book.add(claim_batch(Claim(1, FIZZBUZZ, due, 1), Claim(2, FIZZBUZZ, due + 60, 1)), 0.0)
    assert len(book) == 2 and book.cutoff is not None
    [job] = locked(book, "take_for_record", time.time(), slack=0.002, limit=10)  # not the later one
    assert job.id == 1 and job.state is State.RECORDING
    pending, held, cutoff = book.held()
    assert [c.id for c in pending] == [2] and {c.id for c in held} == {1, 2}
    assert cutoff == book.cutoff
    assert book.settle([job], recorded={1}) == []
    assert job.state is State.RECORDED and locked(book, "take_printable", time.time()) == [job]
    book.done([job])
    assert len(book) == 1 and book.printed == 1 and freed == [1]


def test_lost_and_deleted_jobs_are_dropped_only_while_pending() -> None:
    book = JobBook()
    due = time.time() - 1
    claims = [Claim(i, FIZZ, due, 1) for i in (1, 2, 3)]
    book.add(claim_batch(*claims), 0.0)
    recording = locked(book, "take_for_record", time.time(), slack=0.0, limit=1)
    assert [job.id for job in recording] == [1]
    # 1 is being recorded: its record decides. 2 and 3 were PENDING: lost.
    assert sorted(job.id for job in book.lost(claims)) == [2, 3]
    assert [job.id for job in book.jobs(State.RECORDING)] == [1]
    assert book.jobs(State.PENDING) == []
    book.settle(recording, recorded=set())  # the record found it was not ours either
    assert len(book) == 0


def test_a_reclaimed_task_supersedes_its_old_job() -> None:
    book = JobBook()
    due = time.time() + 60
    assert book.add(claim_batch(Claim(7, FIZZ, due, 1)), 0.0) == 0
    assert book.add(claim_batch(Claim(7, FIZZ, due, 2)), 0.0) == 1
    assert [job.claim.attempt for job in book.jobs(State.PENDING)] == [2]
    assert book.lost([Claim(7, FIZZ, due, 1)]) == []  # the old claim's loss is no news
    assert len(book) == 1


def test_a_task_claimed_again_while_its_record_is_unanswered_prints_once() -> None:
    # PostgreSQL crashed with the record in flight and lost the claim itself (committed
    # asynchronously): after recovery the task is Waiting again, and this worker claims it
    # anew, with the same attempt number. The old job must never print: the record retried
    # after reconnecting matches the new claim's fence, and the new job prints it.
    book = JobBook()
    due = time.time() - 1
    book.add(claim_batch(Claim(7, FIZZ, due, 3)), 0.0)
    old = book.take_for_record(time.time(), 0.0, 10)
    assert [job.state for job in old] == [State.RECORDING]
    assert book.add(claim_batch(Claim(7, FIZZ, due, 3)), 0.0) == 1
    assert book.settle(old, {7}) == old  # recorded, yes, but not by the old job's record
    new = book.take_for_record(time.time(), 0.0, 10)
    assert len(new) == 1 and new[0] is not old[0]
    assert book.settle(new, {7}) == []
    with book.lock:
        assert [job.id for job in book.take_printable(time.time() + 10)] == [7]


def test_orphans_are_looked_for_until_a_later_claim_covers_the_lost_one() -> None:
    book = JobBook()
    book.add(claim_batch(Claim(1, FIZZ, 0, 1), at=100.0), 0.0)
    assert not book.orphans_suspected()
    book.suspect_orphans()  # a claim's answer was lost after the one at 100
    book.orphans_checked(100.0)  # the cut-off does not cover it yet
    assert book.orphans_suspected()
    book.add(claim_batch(Claim(2, FIZZ, 0, 1), at=130.0), 0.0)
    book.orphans_checked(130.0)
    assert not book.orphans_suspected()


def test_the_cutoff_is_the_latest_claim_read_back() -> None:
    book = JobBook()
    book.add(claim_batch(Claim(1, FIZZ, 0, 1), at=100.0), 0.0)
    book.add(claim_batch(at=200.0), 0.0)  # an empty answer proves nothing
    assert book.cutoff == 100.0
    book.add(claim_batch(Claim(2, FIZZ, 0, 1), at=150.0), 0.0)
    assert book.cutoff == 150.0


def test_record_time_leaves_room_for_the_statement_and_for_a_backlog() -> None:
    book = JobBook()
    fire = time.time() + 30
    book.add(claim_batch(Claim(1, FIZZBUZZ, fire, 1), at=fire - 1), 0.0)
    one = locked(book, "next_record_time", lambda n: 0.002 + 0.00001 * n, limit=1000, margin=0.001)
    assert one == pytest.approx(fire - 0.001 - 0.00201, abs=1e-4)
    # 10,000 lines due at the same instant need ten statements, all before that instant.
    book.add(claim_batch(*[Claim(i, FIZZBUZZ, fire, 1) for i in range(2, 10_002)],
                         at=fire - 1), 0.0)
    many = locked(book, "next_record_time", lambda n: 0.002 + 0.00001 * n, limit=1000, margin=0.001)
    assert many == pytest.approx(fire - 0.001 - 11 * 0.012, abs=1e-3)
    assert locked(book, "next_record_time", lambda n: 0.0, limit=1000, margin=0.0) == pytest.approx(
        fire, abs=1e-4)


def test_take_for_record_coalesces_lines_due_close_together() -> None:
    book = JobBook()
    now = time.time()
    book.add(claim_batch(*[Claim(i, FIZZBUZZ, now + 1 + i * 0.001, 1) for i in range(1, 6)],
                         at=now - 1), 0.0)
    # Recording ahead of time: what fires within the slack of the first line.
    taken = locked(book, "take_for_record", now, slack=0.0015, limit=10)
    assert [job.id for job in taken] == [1, 2]
    assert [job.id for job in locked(book, "take_for_record", now, slack=1.0, limit=2)] == [3, 4]
    book.retry(taken)
    # Behind time: everything due by now, and the slack after it.
    assert [job.id for job in locked(book, "take_for_record", now + 1.003, slack=0.0,
                                                   limit=10)] == [1, 2]
    assert [job.id for job in locked(book, "take_for_record", now + 1.0, slack=0.0, limit=10)] == [5]


def test_lines_due_at_one_instant_are_recorded_together() -> None:
    book = JobBook()
    fire = time.time() + 10
    book.add(claim_batch(*[Claim(i, FIZZBUZZ, fire, 1) for i in range(1, 2501)],
                         at=fire - 1), 0.0)
    sizes = []
    while taken := locked(book, "take_for_record", fire - 0.1, slack=0.002, limit=1000):
        sizes.append(len(taken))
    assert sizes == [1000, 1000, 500]


def test_waiting_for_records_to_settle() -> None:
    book = JobBook()
    book.add(claim_batch(Claim(1, FIZZ, 0, 1)), 0.0)
    taken = locked(book, "take_for_record", time.time(), slack=0.0, limit=1)
    assert book.wait_settled(0.05) is False
    book.settle(taken, recorded={1})
    assert book.wait_settled(0.05) is True
    assert [job.id for job in book.unprinted()] == [1] and len(book) == 0


# ---------------------------------------------------------------------------- timing


def test_statement_time_rises_at_once_and_decays_slowly() -> None:
    expected = StatementTime(base=0.001, per_row=0.00001)
    expected.observe(1, 0.050)  # a slow statement: trusted at once
    assert expected(1) == pytest.approx(0.050, abs=1e-4)
    for _ in range(10):
        expected.observe(1, 0.001)
    assert 0.001 < expected(1) < 0.050
    expected.observe(1000, 0.5)
    assert expected(1000) >= 0.5


def test_continuity_breaks_on_a_gap_a_step_back_or_an_error() -> None:
    seen = Continuity(max_gap=1.5)
    assert seen.seconds == 0.0
    for at in (100.0, 101.0, 102.4, 103.0):
        seen.observe(at)
    assert (seen.since, seen.seconds) == (100.0, 3.0)
    seen.observe(104.6)  # 1.6 s without an observation: a freeze or a cut
    assert (seen.since, seen.seconds) == (104.6, 0.0)
    seen.observe(104.0)  # the clock went back: start again
    assert seen.since == 104.0
    seen.broken()
    assert (seen.since, seen.last) == (None, None)


def test_connection_timeouts_notice_a_dead_peer_within_a_third_of_the_lease() -> None:
    params = Timeouts.for_lease(10.0).params()
    idle, interval = params["keepalives_idle"], params["keepalives_interval"]
    # Cut right after an answer: probes go out `idle` seconds later and every `interval`
    # after; the kernel gives up at the first probe timer, after one unanswered probe, that
    # finds user_timeout passed since the last answer.
    user = params["tcp_user_timeout"] / 1000
    noticed = next(idle + k * interval for k in range(1, 100) if idle + k * interval >= user)
    assert params["keepalives"] == 1 and noticed <= 10.0 / 3 + 0.01
    options = params["options"]
    for setting in ("statement_timeout=", "lock_timeout=", "tcp_user_timeout=",
                    "tcp_keepalives_idle=1", "idle_in_transaction_session_timeout="):
        assert f"-c {setting}" in options
    assert params["connect_timeout"] >= 2
    # During an outage each attempt is short: one whose lost SYN waits for its retransmission
    # (1 s, then 3 s) must not keep the worker away once the network is back.
    assert Timeouts.for_lease(60.0).params(reconnecting=True)["connect_timeout"] == 2
    assert Timeouts.for_lease(60.0).params()["connect_timeout"] == 20


def test_a_link_reconnects_with_short_attempts_after_a_failure(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from fizzbuzz_cli import link as link_module

    seen: list[bool] = []

    def connect(url: str, timeouts: Timeouts, application: str,
                reconnecting: bool = False) -> object:
        seen.append(reconnecting)
        raise psycopg.OperationalError("connection timeout expired")

    monkeypatch.setattr(link_module, "connect", connect)
    link = link_module.Link("postgresql://nowhere", "test", Timeouts.for_lease(10.0),
                            link_module.Outage())
    for _ in range(2):
        with pytest.raises(link_module.LinkDown):
            link.open()
    assert seen == [False, True]


def test_backoff_counts_time_already_spent() -> None:
    backoff = Backoff(first=0.1, cap=1.0)
    delays = [backoff.next() for _ in range(6)]
    assert all(d <= 1.25 for d in delays) and delays[-1] >= 0.75
    assert backoff.next(spent=2.0) == 0.0
    backoff.reset()
    assert backoff.next() <= 0.125


# ---------------------------------------------------------------------------- announcements


def test_announcement_payloads() -> None:
    assert parse_announcement("1893456000.000000 742") == (1893456000.0, 742)
    assert parse_announcement("1893456000.5") == (1893456000.5, None)
    assert parse_snapshot("100:105:101,103") == (100, 105, {101, 103})
    assert parse_snapshot("100:100:") == (100, 100, set())


def test_a_next_announcement_keeps_tasks_its_snapshot_could_not_see() -> None:
    due = DueTracker()
    now = time.monotonic()
    due.announced = [(now, 50.0, 99), (now, 40.0, 103), (now, 30.0, 120)]
    due.next_announced("60.0 100:110:103")  # saw xid 99, not 103 (running) nor 120 (later)
    assert due.due == 30.0
    due.announced = [(now, 50.0, 99)]
    due.next_announced("60.0 100:110:")
    assert due.due == 60.0  # everything announced was visible to it
    due.next_announced("- 100:110:")
    assert due.due is None
    due.next_announced("garbage")
    assert due.due is None
    due.inserted("70.5 130")
    assert due.due == 70.5 and due.is_due(70.4, ahead=0.25) and not due.is_due(70.0, 0.25)


def test_a_clock_skew_past_half_a_second_is_warned_about(monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """The database's clock cannot be skewed on one machine; the measurement is given."""
    from fizzbuzz_cli import claims
    from fizzbuzz_cli.worker.clock import DbClock

    clock = DbClock()
    for offset, warned in ((0.4, False), (0.6, True), (-0.7, True)):
        caplog.clear()
        monkeypatch.setattr(claims, "database_clock", lambda conn, o=offset: (o, 0.001))
        with caplog.at_level("WARNING", logger="fizz.worker"):
            clock.measure(None)  # type: ignore[arg-type]
        assert clock.offset == offset
        assert any("clock is" in r.message for r in caplog.records) is warned
    assert "ahead of the database's" in caplog.records[0].message
