"""The job book: every task a worker holds, from its claim to its printed line.

A job is PENDING (claimed; its lease kept by the keeper), then RECORDING (the recorder is
completing it in the database, fenced by the claim), then RECORDED (complete: it will be
printed at its time, whatever happens), then printed and gone. A PENDING job may instead
be lost (its claim is no longer this worker's), cancelled (deleted) or handed back.

The book is the only state the worker's threads share. It owns one lock, with a condition
for the recorder (new PENDING jobs), one for the printer (new RECORDED jobs) and one for
anyone waiting for records to settle, so that each change wakes only the thread it
concerns; every method takes the lock, none blocks on anything else, and none calls out
while holding it (`on_freed` is called after, and must not take it). The threads each get
the book and nothing else of the worker: the dispatcher adds, the recorder takes PENDING
jobs and settles them, the printer takes RECORDED jobs, the keeper reads what is held.
Every method is O(jobs it touches), except the recorder's timing with a backlog larger
than one statement (one pass over the pending jobs per statement).
"""

from __future__ import annotations

import enum
import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fizzbuzz_cli.claims import Claim, ClaimBatch, Run


class State(enum.Enum):
    PENDING = "pending"
    RECORDING = "recording"
    RECORDED = "recorded"
    GONE = "gone"  # printed, lost, cancelled or handed back


@dataclass(eq=False, slots=True)
class Job:
    claim: Claim
    start: float  # local epoch seconds at which the task starts (never before it is due)
    fire: float  # local epoch seconds at which it prints its line
    offset: float  # the database clock minus ours when it was claimed
    state: State = State.PENDING
    recorded: float = 0.0  # local epoch seconds at which its record was answered

    @property
    def id(self) -> int:
        return self.claim.id

    @property
    def run(self) -> Run:
        return Run(self.claim, self.start + self.offset)


def job_for(claim: Claim, offset: float, claimed_at: float) -> Job:
    """The job of a fresh claim. It starts at its due time on the database's clock, or, when
    that has passed, at the claim itself (the database's time of the claim): an overdue task
    starts when it is claimed. Never early: a microsecond of margin against float rounding."""
    start = max(claim.due, claimed_at) - offset + 1e-6
    return Job(claim, start, start + claim.type.duration, offset)


class JobBook:
    def __init__(self, on_freed: Callable[[], None] = lambda: None) -> None:
        self.lock = threading.Lock()
        self.recorder_wake = threading.Condition(self.lock)  # PENDING jobs to look at
        self.printer_wake = threading.Condition(self.lock)  # RECORDED jobs to print
        self._settled = threading.Condition(self.lock)  # a record came back
        self._jobs: dict[int, Job] = {}
        self._pending: list[tuple[float, int, Job]] = []  # by fire time; may hold stale jobs
        self._pending_count = 0  # PENDING jobs (the heap may hold others, skipped lazily)
        self._printable: list[tuple[float, int, Job]] = []  # RECORDED, by fire time
        self._seq = itertools.count()
        self._on_freed = on_freed
        self.cutoff: float | None = None  # database time of the last claim read back
        self._suspect: tuple[float | None] | None = None  # a claim's answer was lost (cutoff then)
        self.closed = False
        self.printed = 0

    # ------------------------------------------------------------------ everyone

    def __len__(self) -> int:
        """Tasks in flight: claimed and not yet printed, lost or handed back."""
        with self.lock:
            return len(self._jobs)

    def jobs(self, *states: State) -> list[Job]:
        with self.lock:
            return [job for job in self._jobs.values() if job.state in states]

    def close(self) -> None:
        with self.lock:
            self.closed = True
            for condition in (self.recorder_wake, self.printer_wake, self._settled):
                condition.notify_all()

    # ------------------------------------------------------------------ dispatcher

    def add(self, batch: ClaimBatch, offset: float) -> int:
        """File a batch of fresh claims; returns how many older jobs they superseded (a task
        this worker lost and claimed again). A fresh claim of a task also proves that no
        earlier record of it by this worker committed (a recorded task is Complete for
        good): an older job whose record is still unanswered is never to be printed."""
        superseded = 0
        with self.lock:
            for claim in batch.claims:
                job = job_for(claim, offset, batch.at)
                old = self._jobs.get(claim.id)
                if old is not None and old.state in (State.PENDING, State.RECORDING):
                    self._set(old, State.GONE)
                    superseded += 1
                self._jobs[claim.id] = job
                self._pending_count += 1
                heapq.heappush(self._pending, (job.fire, next(self._seq), job))
            if batch.claims:
                self.cutoff = batch.at if self.cutoff is None else max(self.cutoff, batch.at)
                self.recorder_wake.notify()
        return superseded

    def cancel(self, ids: Iterable[int]) -> list[Job]:
        """Drop PENDING jobs of tasks that were deleted; returns those dropped."""
        with self.lock:
            dropped = [job for i in ids if (job := self._jobs.get(i)) is not None
                       and job.state is State.PENDING]
            self._forget(dropped)
        self._freed(dropped)
        return dropped

    # ------------------------------------------------------------------ recorder

    def next_record_time(self, time_for: Callable[[int], float], limit: int,
                         margin: float) -> float | None:
        """When (local epoch) the next batch must start recording so that every PENDING
        job is recorded before its line is due, given that a statement for n runs takes
        time_for(n) seconds and takes at most `limit` runs. None: nothing is pending.
        Call with the lock held (from within `recorder_wake`)."""
        self._drop_stale_pending()
        if not self._pending:
            return None
        first = self._pending[0][0]
        count = self._pending_count
        if count <= limit:
            return first - margin - time_for(count)
        # A backlog: everything due within the time the whole backlog takes counts as due
        # with the first (a conservative bound, computed in one pass).
        statements = math.ceil(count / limit)
        window = first + margin + statements * time_for(limit)
        soon = sum(1 for fire, _, job in self._pending
                   if fire <= window and job.state is State.PENDING)
        return first - margin - math.ceil(soon / limit) * time_for(limit)

    def take_for_record(self, now: float, slack: float, limit: int) -> list[Job]:
        """The PENDING jobs that fire within `slack` of the earliest one (or of now, when
        that is already past), earliest first, up to `limit`: now RECORDING. Call with the
        lock held."""
        taken: list[Job] = []
        self._drop_stale_pending()
        if not self._pending:
            return taken
        until = max(now, self._pending[0][0]) + slack
        while self._pending and len(taken) < limit:
            fire, _, job = self._pending[0]
            if not self._is_pending(job):
                heapq.heappop(self._pending)
                continue
            if fire > until:
                break
            heapq.heappop(self._pending)
            self._set(job, State.RECORDING)
            taken.append(job)
        return taken

    def settle(self, jobs: list[Job], recorded: set[int]) -> list[Job]:
        """After a record: the recorded jobs go to the printer; the others were lost (not
        this worker's to run any more) and are dropped. Returns the lost ones."""
        lost = []
        now = time.time()
        with self.lock:
            for job in jobs:
                if job.id in recorded and job.state is State.RECORDING:
                    self._set(job, State.RECORDED)
                    job.recorded = now
                    heapq.heappush(self._printable, (job.fire, next(self._seq), job))
                else:
                    lost.append(job)
            self._forget(lost)
            self.printer_wake.notify()
            self._settled.notify_all()
        self._freed(lost)
        return lost

    def retry(self, jobs: list[Job]) -> None:
        """A record that could not be made (and is known not to have been): back to
        PENDING, to be recorded again (late) or handed back."""
        with self.lock:
            for job in jobs:
                if job.state is State.RECORDING:
                    self._set(job, State.PENDING)
                    heapq.heappush(self._pending, (job.fire, next(self._seq), job))
            self.recorder_wake.notify()
            self._settled.notify_all()

    # ------------------------------------------------------------------ printer

    def next_print_time(self) -> float | None:
        """Call with the lock held (from within `printer_wake`)."""
        return self._printable[0][0] if self._printable else None

    def take_printable(self, now: float) -> list[Job]:
        """Call with the lock held."""
        ready = []
        while self._printable and self._printable[0][0] <= now:
            ready.append(heapq.heappop(self._printable)[2])
        return ready

    def done(self, jobs: list[Job]) -> None:
        """These jobs' lines are out."""
        with self.lock:
            self._forget(jobs)
            self.printed += len(jobs)
        self._freed(jobs)

    def unprinted(self) -> list[Job]:
        """RECORDED jobs whose lines will not be printed (stdout is gone): taken out."""
        with self.lock:
            left = [job for job in self._jobs.values() if job.state is State.RECORDED]
            self._printable = []
            self._forget(left)
        self._freed(left)
        return left

    # ------------------------------------------------------------------ keeper

    def held(self) -> tuple[list[Claim], list[Claim], float | None]:
        """(claims whose lease the worker keeps: PENDING jobs; claims it holds: PENDING and
        RECORDING jobs; the claim cut-off), read together, so that every claim made at or
        before the cut-off that is still this worker's is in the second list. (A RECORDING
        job's record ends within moments: its lease needs no renewal.)"""
        with self.lock:
            pending = [job.claim for job in self._jobs.values() if job.state is State.PENDING]
            recording = [job.claim for job in self._jobs.values()
                         if job.state is State.RECORDING]
            return pending, pending + recording, self.cutoff

    def suspect_orphans(self) -> None:
        """A claim's answer was lost: rows it claimed may be Claimed under this worker's
        name without a job. They become orphans once a later claim's answer is read (its
        time is the cut-off that covers them)."""
        with self.lock:
            if self._suspect is None:
                self._suspect = (self.cutoff,)

    def orphans_suspected(self) -> bool:
        with self.lock:
            return self._suspect is not None

    def orphans_checked(self, cutoff: float | None) -> None:
        """Orphans were handed back up to `cutoff`: a lost claim before it is dealt with."""
        with self.lock:
            if self._suspect is not None and cutoff is not None and (
                    self._suspect[0] is None or cutoff > self._suspect[0]):
                self._suspect = None

    def lost(self, claims: Iterable[Claim]) -> list[Job]:
        """A renewal found these claims no longer this worker's: drop those still PENDING
        (a RECORDING job is settled by its record; a RECORDED one was completed by us)."""
        with self.lock:
            gone = [job for c in claims if (job := self._jobs.get(c.id)) is not None
                    and job.claim == c and job.state is State.PENDING]
            self._forget(gone)
        self._freed(gone)
        return gone

    # ------------------------------------------------------------------ stopping

    def take_pending(self, which: Callable[[Job], bool]) -> list[Job]:
        """Remove the PENDING jobs that match (to hand them back)."""
        with self.lock:
            taken = [job for job in self._jobs.values()
                     if job.state is State.PENDING and which(job)]
            self._forget(taken)
        self._freed(taken)
        return taken

    def wait_settled(self, timeout: float) -> bool:
        """Wait until no job is RECORDING; False on timeout."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while any(job.state is State.RECORDING for job in self._jobs.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._settled.wait(left)
        return True

    # ------------------------------------------------------------------ inside

    def _set(self, job: Job, state: State) -> None:
        if job.state is State.PENDING:
            self._pending_count -= 1
        if state is State.PENDING:
            self._pending_count += 1
        job.state = state

    def _is_pending(self, job: Job) -> bool:
        return job.state is State.PENDING and self._jobs.get(job.id) is job

    def _forget(self, jobs: Iterable[Job]) -> None:
        for job in jobs:
            self._set(job, State.GONE)
            if self._jobs.get(job.id) is job:
                del self._jobs[job.id]

    def _drop_stale_pending(self) -> None:
        while self._pending and not self._is_pending(self._pending[0][2]):
            heapq.heappop(self._pending)

    def _freed(self, jobs: list[Job]) -> None:
        if jobs:
            self._on_freed()
