"""fizz purge benchmark: does purging a million completed tasks move the workers' lateness?

Starts its own PostgreSQL through fizz's embedded code (default settings: fsync on, as users
run it). Each run, on a fresh database holding 1,000,000 Complete tasks completed 30 days
ago (vacuumed, analysed, checkpointed), with 2 idle `fizz work` processes, a stream of
FizzBuzz tasks comes due every 10 ms (at a random point of each slot's first 5 ms, as
bench.py's lateness scenario), added a second ahead; lateness = printed time - scheduled
time.

Meanwhile a purge of everything completed over a day ago runs with the library's defaults
(what `fizz purge --before 1d` and `--retain 1d` run), in a process of its own, in windows:
--window seconds purging, --window seconds not, and so on until the million rows are gone
(then one more quiet window). Each task counts for the kind of window it was due in. The
windows alternate so that both kinds see the same machine: on a shared machine, a baseline
taken before the purge and one taken during it measure the neighbours more than the purge.

The target (issue 10): purging moves the lateness p99 by at most 1 ms. Reported per run
and as medians: the p99 of all tasks of each kind of window, and (robust to a neighbour's
stall landing in one window) the median of the windows' own p99s; raw runs as JSON.

    python bench/purge_bench.py              # 3 runs
    python bench/purge_bench.py -r 5 --json bench/results/purge.json
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench as worker_bench  # bench/bench.py: its plumbing is reused

SLOT_MS = 10.0  # one task per slot
JITTER_MS = 5.0
CHUNK_S = 1.0  # tasks are added a chunk (one second of slots) at a time, a chunk ahead

# The purging process: purges for as many seconds as each line of stdin says, then reports.
PURGER = """
import json, sys, threading, time
from datetime import timedelta
from fizzbuzz_cli import db, purge
with db.session(sys.argv[1]) as conn:
    for line in sys.stdin:
        stop = threading.Event()
        timer = threading.Timer(float(line), stop.set)
        timer.start()
        started = time.monotonic()
        done = purge.purge(conn, purge.Age(ago=timedelta(days=1)), stop=stop)
        timer.cancel()
        print(json.dumps({"deleted": done.deleted, "batches": done.batches,
                          "seconds": time.monotonic() - started,
                          "finished": not stop.is_set()}), flush=True)
"""


def fill(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("""INSERT INTO tasks (tasktype, status, time, started_at, completed_at,
                                           worker)
            SELECT 'FizzBuzz', 'Complete', t, t, t, 'old-host:1:abcdef'
            FROM (SELECT now() - interval '30 days' - n * interval '1 ms' AS t
                  FROM generate_series(1, %s) AS n) AS s""", [rows])
        conn.execute("VACUUM ANALYZE tasks")


class Stream(threading.Thread):
    """Adds one task per slot, a chunk ahead, until stopped; remembers what it scheduled."""

    def __init__(self, url: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.url, self.rng = url, random.Random(seed)
        self.times: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            chunk_start = worker_bench.db_now(self.url) + timedelta(seconds=CHUNK_S)
            per_chunk = int(CHUNK_S * 1000 / SLOT_MS)
            while not self.halt.is_set():
                times = [chunk_start + timedelta(milliseconds=i * SLOT_MS +
                                                 self.rng.uniform(0, JITTER_MS))
                         for i in range(per_chunk)]
                with conn.cursor().copy("COPY tasks (tasktype, status, time) FROM STDIN") as cp:
                    for when in times:
                        cp.write_row(("FizzBuzz", "Waiting", when))
                self.times += [t.timestamp() for t in times]
                chunk_start += timedelta(seconds=CHUNK_S)
                # Wait until the chunk just added starts being due.
                self.halt.wait(max(chunk_start.timestamp() - CHUNK_S - time.time(), 0))


def lateness(workers: list[worker_bench.WorkerProcess], times: list[float]) -> list[float]:
    """Lateness (ms) of each task, in the order of `times` sorted."""
    worker_bench.wait_until(lambda: sum(len(w.lines) for w in workers) >= len(times), 60)
    printed = sorted(worker_bench.parse_printed(line) for w in workers for _, line in w.lines)
    # Slots are 10 ms apart: the k-th line is the k-th task while lateness stays under 5 ms.
    return [(p - s) * 1000 for p, s in zip(printed, sorted(times), strict=True)]


def summary(late_ms: list[float]) -> dict[str, float]:
    pct = worker_bench.percentile
    return {"tasks": len(late_ms), "p50_ms": pct(late_ms, 50), "p99_ms": pct(late_ms, 99),
            "max_ms": max(late_ms), "early": sum(1 for x in late_ms if x < 0)}


def one_run(bench: worker_bench.Bench, rows: int, window: float, seed: int) -> dict:
    with bench.database() as url:
        fill(url, rows)
        worker_bench.checkpoint(bench.admin_url)
        workers = worker_bench.start_workers(url, 2)
        purger = subprocess.Popen([sys.executable, "-c", PURGER, url], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, cwd=worker_bench.ROOT)
        stream = Stream(url, seed)
        windows: list[tuple[float, float, bool]] = []  # (from, to, purging)
        deleted = batches = 0
        purging_s = 0.0
        try:
            stream.start()
            time.sleep(CHUNK_S + 0.5)  # the first tasks come due
            while True:
                began = time.time()
                time.sleep(window)
                windows.append((began, time.time(), False))
                began = time.time()
                assert purger.stdin is not None and purger.stdout is not None
                purger.stdin.write(f"{window}\n")
                purger.stdin.flush()
                report = json.loads(purger.stdout.readline())
                windows.append((began, time.time(), True))
                deleted, batches = deleted + report["deleted"], batches + report["batches"]
                purging_s += report["seconds"]
                if report["finished"]:
                    break
            began = time.time()
            time.sleep(window)
            windows.append((began, time.time(), False))
            stream.halt.set()
            stream.join()
            late = lateness(workers, stream.times)
        finally:
            purger.kill()
            stream.halt.set()
            for worker in workers:
                worker.stop()
    due = sorted(stream.times)
    kinds: dict[bool, list[float]] = {False: [], True: []}
    per_window: list[list[float]] = [[] for _ in windows]
    for when, ms in zip(due, late, strict=True):
        for i, (start, end, purging) in enumerate(windows):
            if start <= when < end:
                kinds[purging].append(ms)
                per_window[i].append(ms)
                break
    quiet, busy = summary(kinds[False]), summary(kinds[True])
    # Robust to a neighbour's stall landing in one window: the median of the windows' p99s.
    for kind, figures in ((False, quiet), (True, busy)):
        p99s = [worker_bench.percentile(w, 99) for w, (_, _, purging) in
                zip(per_window, windows, strict=True) if purging is kind and len(w) >= 100]
        figures["window_p99s_ms"] = p99s
        figures["median_window_p99_ms"] = statistics.median(p99s) if p99s else None
    return {"quiet": quiet, "purging": busy, "windows": windows,
            "late_tasks": [(when, ms) for when, ms in zip(due, late, strict=True) if ms > 5],
            "window_p99_moved_ms": (busy["median_window_p99_ms"] or 0) -
                                   (quiet["median_window_p99_ms"] or 0),
            "purge": {"deleted": deleted, "batches": batches, "seconds": purging_s,
                      "rows_per_s": deleted / purging_s},
            "p99_moved_ms": busy["p99_ms"] - quiet["p99_ms"],
            "p50_moved_ms": busy["p50_ms"] - quiet["p50_ms"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-r", "--repeat", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--window", type=float, default=10.0,
                        help="seconds of each purging and each quiet window")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="fizz-bench-", dir="/tmp"))
    server = worker_bench.EmbeddedServer(home)
    runs = []
    try:
        server.ensure_running()
        bench = worker_bench.Bench(server.url(dbname="postgres"))
        for i in range(args.repeat):
            run = one_run(bench, args.rows, args.window, seed=7 + i)
            runs.append(run)
            q, p, g = run["quiet"], run["purging"], run["purge"]
            print(f"  run {i + 1}: quiet p50 {q['p50_ms']:.3f} p99 {q['p99_ms']:.3f} max "
                  f"{q['max_ms']:.3f} ms ({q['tasks']} tasks) | purging p50 {p['p50_ms']:.3f} "
                  f"p99 {p['p99_ms']:.3f} max {p['max_ms']:.3f} ms ({p['tasks']} tasks) | "
                  f"purged {g['deleted']:,} in {g['seconds']:.1f} s ({g['rows_per_s']:,.0f}/s) "
                  f"| p99 moved {run['p99_moved_ms']:+.3f} ms | median window p99 quiet "
                  f"{q['median_window_p99_ms']:.3f}, purging {p['median_window_p99_ms']:.3f} ms "
                  f"(moved {run['window_p99_moved_ms']:+.3f} ms)", file=sys.stderr)
        with psycopg.connect(bench.admin_url) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    med = statistics.median
    result = {
        "repeat": args.repeat, "rows": args.rows, "window_s": args.window, "runs": runs,
        "median": {"quiet_p99_ms": med(r["quiet"]["p99_ms"] for r in runs),
                   "purging_p99_ms": med(r["purging"]["p99_ms"] for r in runs),
                   "p99_moved_ms": med(r["p99_moved_ms"] for r in runs),
                   "window_p99_moved_ms": med(r["window_p99_moved_ms"] for r in runs),
                   "p50_moved_ms": med(r["p50_moved_ms"] for r in runs),
                   "purge_rows_per_s": med(r["purge"]["rows_per_s"] for r in runs),
                   "purge_seconds": med(r["purge"]["seconds"] for r in runs)},
        "machine": {**worker_bench.machine(), "postgresql": version, "fsync": "on"},
    }
    m = result["median"]
    print(f"median of {args.repeat}: lateness p99 {m['quiet_p99_ms']:.3f} ms quiet, "
          f"{m['purging_p99_ms']:.3f} ms purging (moved {m['p99_moved_ms']:+.3f} ms; the median "
          f"window p99 moved {m['window_p99_moved_ms']:+.3f} ms; target <= 1 ms); purge "
          f"{m['purge_rows_per_s']:,.0f} rows/s ({m['purge_seconds']:.0f} s of purging)",
          file=sys.stderr)
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
