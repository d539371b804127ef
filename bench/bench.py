"""fizz worker benchmark: lateness, drain rate, many sleepers, bulk add, and scale.

Starts its own PostgreSQL through fizz's embedded code (a temporary folder, default
settings: fsync on), runs every scenario with real `fizz` processes, repeats each run
(--repeat, default 5, after one warm-up run that is not counted) and reports medians as a
table and as JSON.

    python bench/bench.py                      # everything, 5 runs each
    python bench/bench.py lateness drain -r 5  # some scenarios
    python bench/bench.py --json out.json      # also write the results to a file

Scenarios (the issue's targets in brackets):
  lateness  500 FizzBuzz tasks spread over 5 s (one per 10 ms slot, at a random point of
            the slot's first 5 ms), 2 idle workers; lateness = printed time - scheduled
            time [p50 <= 1 ms, p99 <= 2 ms, never early]; also when the line arrived, and
            the kill -9 window: from each run's record to its line (from the workers' own
            fizz_worker_record_to_line_seconds histogram). Also 50 bursts of 10 tasks due
            at the same instant (reported, no target).
  drain     20,000 FizzBuzz tasks already due, appearing at once (one COPY) in front of 2
            idle workers, stdout to /dev/null; tasks/s from the COPY's commit to the last
            completion [>= 20,000/s]. Also from a cold start: the tasks are in the table
            first, then 2 workers start (process start-up included).
  burst     2,000 Fizz tasks added in one COPY, due at the moment of the add, 2 idle
            workers: when each line arrives against due + 3 s [p99 <= 25 ms].
  sleepers  10,000 Fizz tasks due at the same instant, 1 idle worker: when the lines arrive
            relative to due + 3 s [all within 3.3 s of the due time], peak memory (VmHWM).
  bulk      100,000 tasks through `fizz add --file` (JSON lines), end to end [>= 100,000/s].
  scale     lateness and drain again with 1,000,000 Complete and 1,000,000 future Waiting
            tasks in the table [within 10% of the empty-table figures].
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fizzbuzz_cli import db  # noqa: E402
from fizzbuzz_cli.embedded import EmbeddedServer  # noqa: E402

UTC = timezone.utc
FIZZ = [sys.executable, "-m", "fizzbuzz_cli"]


# ---------------------------------------------------------------------------- plumbing


class Bench:
    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.count = 0

    @contextmanager
    def database(self) -> Iterator[str]:
        """A fresh, migrated database for one run."""
        self.count += 1
        name = f"fizz_bench_{os.getpid()}_{self.count}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = make_conninfo(self.admin_url, dbname=name)
        with psycopg.connect(url, autocommit=True) as conn:
            db.migrate(conn)
        try:
            yield url
        finally:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


class WorkerProcess:
    """A real `fizz work` process; collects its stdout lines with their arrival time."""

    def __init__(self, url: str, *args: str, keep_output: bool = True) -> None:
        self.lines: list[tuple[float, str]] = []
        self.ready = threading.Event()
        self.metrics_url: str | None = None
        self.histogram: dict[float, float] = {}  # le -> cumulative count, read at stop
        self.proc = subprocess.Popen(
            [*FIZZ, "work", "--database-url", url, "--metrics-port", "0", *args],
            stdout=subprocess.PIPE if keep_output else subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, bufsize=1,
        )
        self.peak_kib = 0
        self._threads = [threading.Thread(target=self._read_err, daemon=True)]
        if keep_output:
            self._threads.append(threading.Thread(target=self._read_out, daemon=True))
        self._threads.append(threading.Thread(target=self._watch_memory, daemon=True))
        for thread in self._threads:
            thread.start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.time(), line.rstrip("\n")))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if "metrics on " in line:
                self.metrics_url = line.rsplit("metrics on ", 1)[1].strip()
            if " ready: " in line:
                self.ready.set()
            if "ERROR" in line or "Traceback" in line:
                print(f"  worker: {line.rstrip()}", file=sys.stderr)

    def _watch_memory(self) -> None:
        status = Path(f"/proc/{self.proc.pid}/status")
        while self.proc.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            except OSError:
                return
            time.sleep(0.05)

    def read_window(self) -> None:
        """The worker's record-to-line histogram (cumulative counts by upper bound)."""
        import urllib.request

        if self.metrics_url is None:
            return
        text = urllib.request.urlopen(self.metrics_url, timeout=5).read().decode()
        for line in text.splitlines():
            if line.startswith("fizz_worker_record_to_line_seconds_bucket"):
                bound = line.split('le="', 1)[1].split('"', 1)[0]
                self.histogram[math.inf if bound == "+Inf" else float(bound)] = float(
                    line.rsplit(" ", 1)[1])

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.read_window()
        self.proc.terminate()
        self.proc.wait(timeout=30)
        for thread in self._threads:
            thread.join(timeout=5)


def start_workers(url: str, n: int, *args: str, keep_output: bool = True) -> list[WorkerProcess]:
    workers = [WorkerProcess(url, *args, keep_output=keep_output) for _ in range(n)]
    for worker in workers:
        if not worker.ready.wait(30):
            raise RuntimeError("a worker did not become ready")
    time.sleep(0.3)  # let them settle into their idle wait
    return workers


def copy_tasks(url: str, rows: list[tuple[str, datetime]]) -> float:
    """Insert rows in one COPY, in binary as `fizz add --file` does (db.COPY_TASKS); returns
    the database clock (epoch) right after the commit."""
    with psycopg.connect(url) as conn:
        with conn.cursor().copy(db.COPY_TASKS) as copy:
            copy.set_types(["varchar", "varchar", "timestamptz"])
            for kind, when in rows:
                copy.write_row((kind, "Waiting", when))
        conn.commit()
        return conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()[0]


def db_now(url: str) -> datetime:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT clock_timestamp()").fetchone()[0]


def checkpoint(admin_url: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def finished_since(conn: psycopg.Connection, since: float) -> tuple[float, int]:
    """(epoch of the last completion, how many) among tasks completed after `since`."""
    return conn.execute(
        "SELECT extract(epoch FROM max(completed_at))::float8, count(*) FROM tasks "
        "WHERE status = 'Complete' AND completed_at >= to_timestamp(%s)", [since]).fetchone()


def wait_until(condition: Callable[[], bool], timeout: float, step: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the benchmark run did not finish in time")
        time.sleep(step)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def parse_printed(line: str) -> float:
    return datetime.fromisoformat(line.split(" ", 1)[1].replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------------------- scenarios


def lateness_run(url: str, slots: int = 500, per_slot: int = 1, slot_ms: float = 10.0,
                 jitter_ms: float = 5.0) -> dict[str, float]:
    workers = start_workers(url, 2)
    try:
        rng = random.Random(7)
        start = db_now(url) + timedelta(seconds=1)
        times = [start + timedelta(milliseconds=i * slot_ms + rng.uniform(0, jitter_ms))
                 for i in range(slots) for _ in range(per_slot)]
        copy_tasks(url, [("FizzBuzz", t) for t in times])
        total = len(times)
        wait_until(lambda: sum(len(w.lines) for w in workers) >= total,
                   timeout=slots * slot_ms / 1000 + 30)
    finally:
        for worker in workers:
            worker.stop()
    lines = sorted((parse_printed(line), at) for w in workers for at, line in w.lines)
    scheduled = sorted(t.timestamp() for t in times)
    # Slots are at least 5 ms apart, so the k-th print belongs to the k-th task as long as
    # lateness stays under 5 ms; an early print shows as a negative lateness.
    late_ms = [(p - s) * 1000 for (p, _), s in zip(lines, scheduled, strict=True)]
    arrival_ms = [(a - s) * 1000 for (_, a), s in zip(lines, scheduled, strict=True)]
    return {"tasks": len(lines), "p50_ms": percentile(late_ms, 50),
            "p99_ms": percentile(late_ms, 99), "max_ms": max(late_ms), "min_ms": min(late_ms),
            "early": sum(1 for x in late_ms if x < 0),
            "arrival_p50_ms": percentile(arrival_ms, 50),
            "arrival_p99_ms": percentile(arrival_ms, 99), **window(workers),
            "per_worker": [len(w.lines) for w in workers]}


def window(workers: list[WorkerProcess]) -> dict[str, float]:
    """The kill -9 window: from each run's record to its line, p50 and p99 in ms, from the
    workers' histograms (merged; interpolated within a bucket)."""
    merged: dict[float, float] = {}
    for worker in workers:
        for bound, count in worker.histogram.items():
            merged[bound] = merged.get(bound, 0.0) + count
    if not merged or not merged.get(math.inf):
        return {}
    bounds = sorted(merged)
    total = merged[math.inf]

    def quantile(q: float) -> float:
        target, lower, below = q * total, 0.0, 0.0
        for bound in bounds:
            if merged[bound] >= target:
                if math.isinf(bound):
                    return lower * 1000
                share = (target - below) / max(merged[bound] - below, 1e-9)
                return (lower + (bound - lower) * share) * 1000
            lower, below = bound, merged[bound]
        return lower * 1000

    return {"window_p50_ms": quantile(0.5), "window_p99_ms": quantile(0.99)}


def drain_run(url: str, tasks: int = 20_000) -> dict[str, float]:
    workers = start_workers(url, 2, keep_output=False)
    try:
        due = db_now(url) - timedelta(seconds=1)
        committed = copy_tasks(url, [("FizzBuzz", due)] * tasks)
        with psycopg.connect(url, autocommit=True) as conn:
            def done() -> bool:  # index-only probes, so polling does not load the server
                row = conn.execute(
                    "SELECT NOT EXISTS (SELECT 1 FROM tasks WHERE status = 'Waiting' "
                    "AND time <= now()) AND NOT EXISTS (SELECT 1 FROM tasks "
                    "WHERE status = 'Claimed')")
                return row.fetchone()[0]
            wait_until(done, timeout=120, step=0.02)
            last, count = finished_since(conn, committed)
    finally:
        for worker in workers:
            worker.stop()
    seconds = last - committed
    return {"tasks": count, "seconds": seconds, "tasks_per_s": count / seconds}


def drain_cold_run(url: str, tasks: int = 20_000) -> dict[str, float]:
    due = db_now(url) - timedelta(seconds=1)
    copy_tasks(url, [("FizzBuzz", due)] * tasks)
    started = time.time()
    procs = [subprocess.Popen([*FIZZ, "work", "--drain", "--database-url", url],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(2)]
    for proc in procs:
        proc.wait(timeout=120)
    with psycopg.connect(url) as conn:
        last, count = finished_since(conn, started - 1)
    seconds = last - started
    return {"tasks": count, "seconds": seconds, "tasks_per_s": count / seconds}


def sleepers_run(url: str, tasks: int = 10_000) -> dict[str, float]:
    workers = start_workers(url, 1)
    try:
        due = db_now(url) + timedelta(seconds=1.5)
        copy_tasks(url, [("Fizz", due)] * tasks)
        wait_until(lambda: len(workers[0].lines) >= tasks, timeout=60)
        peak = workers[0].peak_kib
    finally:
        for worker in workers:
            worker.stop()
    arrivals = [(at - due.timestamp()) for at, _ in workers[0].lines]
    return {"tasks": len(arrivals), "first_s": min(arrivals), "last_s": max(arrivals),
            "peak_mib": peak / 1024, **window(workers)}


def burst_run(url: str, tasks: int = 2000) -> dict[str, float]:
    """2,000 Fizz added in one COPY, due at the moment of the add (the COPY's own now()),
    in front of 2 idle workers: when does each line arrive, against due + 3 s?"""
    workers = start_workers(url, 2)
    try:
        due = db_now(url)
        copy_tasks(url, [("Fizz", due)] * tasks)
        wait_until(lambda: sum(len(w.lines) for w in workers) >= tasks, timeout=60)
    finally:
        for worker in workers:
            worker.stop()
    late_ms = [(at - due.timestamp() - 3.0) * 1000 for w in workers for at, _ in w.lines]
    return {"tasks": len(late_ms), "p50_ms": percentile(late_ms, 50),
            "p99_ms": percentile(late_ms, 99), "max_ms": max(late_ms),
            "early": sum(1 for x in late_ms if x < 0), **window(workers)}


def bulk_run(url: str, tasks: int = 100_000) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="fizz-bench-"))
    try:
        path = folder / "tasks.jsonl"
        kinds = ("Fizz", "Buzz", "FizzBuzz")
        with path.open("w") as out:
            for i in range(tasks):
                out.write(json.dumps({"type": kinds[i % 3],
                                      "time": f"2030-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z"})
                          + "\n")
        started = time.perf_counter()
        done = subprocess.run([*FIZZ, "add", "--file", str(path), "--database-url", url],
                              capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"tasks": int(done.stdout), "seconds": seconds, "tasks_per_s": tasks / seconds}


def fill_history(url: str) -> None:
    """1,000,000 Complete tasks and 1,000,000 Waiting ones a year from now."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("""INSERT INTO tasks (tasktype, status, time, completed_at)
            SELECT 'FizzBuzz', 'Complete', now() - n * interval '1 second', now()
            FROM generate_series(1, 1000000) AS n""")
        conn.execute("""INSERT INTO tasks (tasktype, status, time)
            SELECT 'Fizz', 'Waiting', now() + interval '365 days' + n * interval '1 second'
            FROM generate_series(1, 1000000) AS n""")
        conn.execute("VACUUM ANALYZE tasks")


# ---------------------------------------------------------------------------- driver


SCENARIOS = ["lateness", "burst", "drain", "sleepers", "bulk", "scale"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"any of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("-r", "--repeat", type=int, default=5)
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    args = parser.parse_args()
    chosen = args.scenarios or SCENARIOS
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario {', '.join(sorted(unknown))}: use {', '.join(SCENARIOS)}")

    home = Path(tempfile.mkdtemp(prefix="fizz-bench-", dir="/tmp"))
    server = EmbeddedServer(home)  # default settings: fsync on, as users run it
    try:
        server.ensure_running()
        bench = Bench(server.url(dbname="postgres"))
        results = run_all(bench, chosen, args.repeat)
        with psycopg.connect(bench.admin_url) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    results["machine"] = {**machine(), "postgresql": version, "fsync": "on"}
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def run_all(bench: Bench, chosen: list[str], repeat: int) -> dict[str, object]:
    results: dict[str, object] = {"repeat": repeat}

    def repeated(name: str, run: Callable[[str], dict[str, float]],
                 prepare: Callable[[str], None] | None = None) -> None:
        runs = []
        for i in range(repeat + 1):
            with bench.database() as url:
                if prepare:
                    prepare(url)
                checkpoint(bench.admin_url)  # no run competes with the set-up's disk writes
                result = run(url)
            if i == 0:
                print(f"  {name} warm-up (not counted): {short(result)}", file=sys.stderr)
                continue
            runs.append(result)
            print(f"  {name} run {i}: {short(result)}", file=sys.stderr)
        results[name] = {"median": median(runs), "runs": runs}

    if "lateness" in chosen:
        repeated("lateness", lateness_run)
        repeated("lateness_bursts", lambda url: lateness_run(url, slots=50, per_slot=10,
                                                             slot_ms=100.0, jitter_ms=0.0))
    if "burst" in chosen:
        repeated("burst", burst_run)
    if "drain" in chosen:
        repeated("drain", drain_run)
        repeated("drain_cold", drain_cold_run)
    if "sleepers" in chosen:
        repeated("sleepers", sleepers_run)
    if "bulk" in chosen:
        repeated("bulk", bulk_run)
    if "scale" in chosen:
        repeated("scale_lateness", lateness_run, fill_history)
        repeated("scale_drain", drain_run, fill_history)
    return results


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs)
            for key, value in runs[0].items() if isinstance(value, (int, float))}


def short(run: dict[str, object]) -> str:
    return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in run.items())


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": str(os.cpu_count()), "cpu": cpu, "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}",
            "memory_gib": f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f}"}


def report(results: dict[str, object]) -> None:
    from rich.console import Console
    from rich.table import Table

    def m(name: str) -> dict[str, float]:
        return results[name]["median"] if name in results else {}  # type: ignore[index]

    table = Table(title=f"fizz benchmark (median of {results['repeat']} runs)")
    for column in ("scenario", "result", "target"):
        table.add_column(column)
    if "lateness" in results:
        for name in ("lateness", "scale_lateness"):
            if name in results:
                r = m(name)
                table.add_row(name, f"p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms, max "
                              f"{r['max_ms']:.3f} ms, early {r['early']:.0f}",
                              "p50 <= 1 ms, p99 <= 2 ms, none early")
        r = m("lateness_bursts")
        table.add_row("lateness, bursts of 10", f"p50 {r['p50_ms']:.3f} ms, p99 "
                      f"{r['p99_ms']:.3f} ms, max {r['max_ms']:.3f} ms", "-")
    if "burst" in results:
        r = m("burst")
        table.add_row("burst: 2,000 Fizz due at the add", f"lines p50 {r['p50_ms']:.1f} ms, p99 "
                      f"{r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms after due + 3 s",
                      "p99 <= 25 ms")
    for name in ("lateness", "burst", "sleepers"):
        if name in results and "window_p99_ms" in m(name):
            r = m(name)
            table.add_row(f"kill -9 window ({name})", f"record to line p50 "
                          f"{r['window_p50_ms']:.1f} ms, p99 {r['window_p99_ms']:.1f} ms", "-")
    for name in ("drain", "drain_cold", "scale_drain"):
        if name in results:
            r = m(name)
            table.add_row(name, f"{r['tasks_per_s']:,.0f} tasks/s ({r['tasks']:,.0f} in "
                          f"{r['seconds']:.3f} s)", ">= 20,000 tasks/s" if name != "drain_cold"
                          else "-")
    if "sleepers" in results:
        r = m("sleepers")
        table.add_row("sleepers", f"lines {r['first_s']:.3f}-{r['last_s']:.3f} s after due, "
                      f"peak {r['peak_mib']:.0f} MiB", "all within 3.3 s")
    if "bulk" in results:
        r = m("bulk")
        table.add_row("bulk add", f"{r['tasks_per_s']:,.0f} tasks/s ({r['seconds']:.2f} s)",
                      ">= 100,000 tasks/s")
    Console(stderr=True, width=120).print(table)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
