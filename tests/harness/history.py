"""Judging a run from its history: every line every worker printed (with when it arrived)
and every row's end state.

Fizz and Buzz lines carry their task's id; FizzBuzz lines carry only the time they were
printed, so they are matched to FizzBuzz tasks by time (each line to the earliest unmatched
task due no later than the line's time). The verdict counts:

- doubled: a task printed more than once;
- early: a line before its task's time (+ its sleep);
- stuck: a task left Waiting or Claimed;
- lost: a Complete task whose line never came. A loss is excused only when its run was
  recorded by a worker that was then killed outright (kill -9) within `window` seconds of
  the record: the documented price of "record, then print".
- lateness: line arrival - (due + sleep), per line.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

import psycopg

DURATION = {"Fizz": 3.0, "Buzz": 5.0, "FizzBuzz": 0.0}
_ID_LINE = re.compile(r"^(Fizz|Buzz) (\d+)$")
_FIZZBUZZ_LINE = re.compile(r"^FizzBuzz (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6})Z$")


@dataclass(frozen=True)
class Row:
    id: int
    type: str
    due: float  # epoch seconds
    status: str
    worker: str | None
    attempts: int
    completed_at: float | None

    @property
    def line_due(self) -> float:
        return self.due + DURATION[self.type]


@dataclass(frozen=True)
class Line:
    source: str  # which process printed it
    at: float  # when it arrived (epoch seconds)
    text: str


@dataclass
class Verdict:
    tasks: int = 0
    printed: int = 0
    doubled: list[int] = field(default_factory=list)
    early: list[str] = field(default_factory=list)
    stuck: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    excused: list[int] = field(default_factory=list)  # lost inside a kill -9 window
    unknown: list[str] = field(default_factory=list)  # lines matching no task
    lateness: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.doubled or self.early or self.stuck or self.lost or self.unknown)

    def late(self, quantile: float = 1.0) -> float:
        if not self.lateness:
            return 0.0
        ordered = sorted(self.lateness)
        return ordered[min(int(quantile * len(ordered)), len(ordered) - 1)]

    def summary(self) -> str:
        p50 = statistics.median(self.lateness) if self.lateness else 0.0
        return (f"{self.tasks} tasks, {self.printed} lines: doubled {len(self.doubled)}, "
                f"early {len(self.early)}, stuck {len(self.stuck)}, lost {len(self.lost)} "
                f"(+{len(self.excused)} in a kill -9 window), unknown {len(self.unknown)}; "
                f"lateness p50 {p50 * 1000:.0f} ms, max {self.late() * 1000:.0f} ms"
                + (f"\n  doubled: {self.doubled[:20]}" if self.doubled else "")
                + (f"\n  stuck: {self.stuck[:20]}" if self.stuck else "")
                + (f"\n  lost: {self.lost[:20]}" if self.lost else "")
                + (f"\n  early: {self.early[:5]}" if self.early else "")
                + (f"\n  unknown: {self.unknown[:5]}" if self.unknown else ""))


def read_rows(url: str) -> list[Row]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [Row(*r) for r in conn.execute(
            "SELECT id, tasktype, extract(epoch FROM time)::float8, status, worker, attempts, "
            "extract(epoch FROM completed_at)::float8 FROM tasks ORDER BY id")]


def judge(rows: list[Row], lines: list[Line], kills: dict[int, float] | None = None,
          window: float = 0.25) -> Verdict:
    """The verdict on a run. `kills` maps the pid of each worker killed outright to when."""
    kills = kills or {}
    verdict = Verdict(tasks=len(rows), printed=len(lines))
    by_id = {row.id: row for row in rows}
    printed: Counter[int] = Counter()
    fizzbuzz_lines: list[tuple[float, Line]] = []
    for line in lines:
        if match := _ID_LINE.match(line.text):
            row = by_id.get(int(match.group(2)))
            if row is None or row.type != match.group(1):
                verdict.unknown.append(line.text)
                continue
            printed[row.id] += 1
            verdict.lateness.append(line.at - row.line_due)
            if line.at < row.line_due:
                verdict.early.append(f"{line.text} arrived {row.line_due - line.at:.3f} s early")
        elif match := _FIZZBUZZ_LINE.match(line.text):
            when = datetime.fromisoformat(match.group(1)).replace(tzinfo=timezone.utc)
            fizzbuzz_lines.append((when.timestamp(), line))
        else:
            verdict.unknown.append(line.text)
    verdict.doubled = sorted(i for i, n in printed.items() if n > 1)
    _match_fizzbuzz(rows, fizzbuzz_lines, printed, verdict)
    for row in rows:
        if row.status != "Complete":
            verdict.stuck.append(row.id)
        elif printed[row.id] == 0:
            if _in_kill_window(row, kills, window):
                verdict.excused.append(row.id)
            else:
                verdict.lost.append(row.id)
    return verdict


def _match_fizzbuzz(rows: list[Row], lines: list[tuple[float, Line]], printed: Counter[int],
                    verdict: Verdict) -> None:
    """Each FizzBuzz line (by the time it states, in order) to the earliest unmatched
    FizzBuzz task: if that task is due after the stated time, the line came too early (or
    belongs to no task: a line printed twice shows up as one too many, or one task lost)."""
    tasks = sorted((row.due, row.id) for row in rows if row.type == "FizzBuzz"
                   and row.status == "Complete")
    matched = 0
    for stated, line in sorted(lines, key=lambda pair: pair[0]):
        if matched == len(tasks):
            verdict.doubled.append(-1)  # more FizzBuzz lines than FizzBuzz tasks
            continue
        due, task_id = tasks[matched]
        if stated < due:
            verdict.early.append(f"{line.text} is before the next FizzBuzz due ({due:.6f})")
        matched += 1
        printed[task_id] += 1
        verdict.lateness.append(line.at - due)


def _in_kill_window(row: Row, kills: dict[int, float], window: float) -> bool:
    if not row.worker or row.completed_at is None:
        return False
    parts = row.worker.split(":")
    if len(parts) < 2 or not parts[-2].isdigit():
        return False
    killed = kills.get(int(parts[-2]))
    return killed is not None and row.completed_at <= killed <= row.completed_at + window
