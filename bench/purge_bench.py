"""fizz purge benchmark: does purging a million completed tasks move the workers' lateness?

Starts its own PostgreSQL through fizz's embedded code (default settings: fsync on, as users
run it). Each run, on a fresh database holding 1,000,000 Complete tasks completed 30 days
ago (and vacuumed, analysed, checkpointed), with 2 idle `fizz work` processes:

  1. baseline: FizzBuzz tasks due every 10 ms (at a random point of each slot's first
     5 ms, as bench.py's lateness scenario) for --baseline seconds, added a second ahead in
     chunks of one second; lateness = printed time - scheduled time;
  2. purge: the same stream of tasks for as long as a purge of everything completed over a
     day ago runs, in a process of its own with the library's defaults (what `fizz purge
     --before 1d` and `--retain 1d` run); lateness of the tasks due while it ran.

The target (issue 10): the purge moves the lateness p99 by at most 1 ms. Reported per run
and as medians; raw runs as JSON.

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
import time
from datetime import timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench as worker_bench  # bench/bench.py: its plumbing is reused

SLOT_MS = 10.0  # one task per slot
JITTER_MS = 5.0
CHUNK_S = 1.0  # tasks are added a chunk (one second of slots) at a time, a chunk ahead

PURGE = """
import json, sys, time
from datetime import timedelta
from fizzbuzz_cli import db, purge
with db.session(sys.argv[1]) as conn:
    started = time.monotonic()
    done = purge.purge(conn, purge.Age(ago=timedelta(days=1)))
    print(json.dumps({"deleted": done.deleted, "batches": done.batches,
                      "seconds": time.monotonic() - started}))
"""


def fill(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("""INSERT INTO tasks (tasktype, status, time, started_at, completed_at)
            SELECT 'FizzBuzz', 'Complete', t, t, t
            FROM (SELECT now() - interval '30 days' - n * interval '1 ms' AS t
                  FROM generate_series(1, %s) AS n) AS s""", [rows])
        conn.execute("VACUUM ANALYZE tasks")


class Stream:
    """Adds one task per slot, a chunk ahead, until stopped; remembers what it scheduled."""

    def __init__(self, url: str, seed: int) -> None:
        self.url, self.rng = url, random.Random(seed)
        self.times: list[float] = []

    def run(self, until: callable, at_least: float = 0.0) -> tuple[float, float]:
        """Add tasks until `until()` is true (checked each chunk) and `at_least` seconds
        passed; (epoch of the first slot, epoch after the last)."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            start = worker_bench.db_now(self.url) + timedelta(seconds=CHUNK_S)
            began = time.monotonic()
            chunk_start = start
            per_chunk = int(CHUNK_S * 1000 / SLOT_MS)
            while True:
                times = [chunk_start + timedelta(milliseconds=i * SLOT_MS +
                                                 self.rng.uniform(0, JITTER_MS))
                         for i in range(per_chunk)]
                with conn.cursor().copy("COPY tasks (tasktype, status, time) FROM STDIN") as cp:
                    for when in times:
                        cp.write_row(("FizzBuzz", "Waiting", when))
                self.times += [t.timestamp() for t in times]
                chunk_start += timedelta(seconds=CHUNK_S)
                # Sleep until the chunk just added starts being due.
                time.sleep(max(chunk_start.timestamp() - CHUNK_S - time.time(), 0))
                if until() and time.monotonic() - began >= at_least:
                    return start.timestamp(), chunk_start.timestamp()


def lateness(workers: list[worker_bench.WorkerProcess], times: list[float]) -> list[float]:
    worker_bench.wait_until(lambda: sum(len(w.lines) for w in workers) >= len(times), 60)
    printed = sorted(worker_bench.parse_printed(line) for w in workers for _, line in w.lines)
    for worker in workers:
        worker.lines.clear()
    # Slots are 10 ms apart: the k-th line is the k-th task while lateness stays under 5 ms.
    return [(p - s) * 1000 for p, s in zip(printed, sorted(times), strict=True)]


def summary(late_ms: list[float]) -> dict[str, float]:
    pct = worker_bench.percentile
    return {"tasks": len(late_ms), "p50_ms": pct(late_ms, 50), "p99_ms": pct(late_ms, 99),
            "max_ms": max(late_ms), "early": sum(1 for x in late_ms if x < 0)}


def one_run(bench: worker_bench.Bench, rows: int, baseline_s: float, seed: int) -> dict:
    with bench.database() as url:
        fill(url, rows)
        worker_bench.checkpoint(bench.admin_url)
        workers = worker_bench.start_workers(url, 2)
        try:
            stream = Stream(url, seed)
            stream.run(lambda: True, at_least=baseline_s)
            base = summary(lateness(workers, stream.times))

            stream = Stream(url, seed + 1)
            purger = subprocess.Popen([sys.executable, "-c", PURGE, url], stdout=subprocess.PIPE,
                                      text=True, cwd=worker_bench.ROOT)
            stream.run(lambda: purger.poll() is not None)
            purged = json.loads(purger.communicate()[0])
            during = summary(lateness(workers, stream.times))
        finally:
            for worker in workers:
                worker.stop()
        with psycopg.connect(url) as conn:
            left = conn.execute("SELECT count(*) FROM tasks WHERE status = 'Complete' "
                                "AND completed_at < now() - interval '1 day'").fetchone()[0]
    return {"baseline": base, "purging": during, "purge": {**purged, "left": left,
            "rows_per_s": purged["deleted"] / purged["seconds"]},
            "p99_moved_ms": during["p99_ms"] - base["p99_ms"],
            "p50_moved_ms": during["p50_ms"] - base["p50_ms"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-r", "--repeat", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline", type=float, default=20.0, help="seconds of baseline")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="fizz-bench-", dir="/tmp"))
    server = worker_bench.EmbeddedServer(home)
    runs = []
    try:
        server.ensure_running()
        bench = worker_bench.Bench(server.url(dbname="postgres"))
        for i in range(args.repeat):
            run = one_run(bench, args.rows, args.baseline, seed=7 + 2 * i)
            runs.append(run)
            b, p, g = run["baseline"], run["purging"], run["purge"]
            print(f"  run {i + 1}: baseline p50 {b['p50_ms']:.3f} p99 {b['p99_ms']:.3f} max "
                  f"{b['max_ms']:.3f} ms ({b['tasks']} tasks) | purging p50 {p['p50_ms']:.3f} "
                  f"p99 {p['p99_ms']:.3f} max {p['max_ms']:.3f} ms ({p['tasks']} tasks) | "
                  f"purged {g['deleted']:,} in {g['seconds']:.1f} s ({g['rows_per_s']:,.0f}/s, "
                  f"{g['left']} left) | p99 moved {run['p99_moved_ms']:+.3f} ms",
                  file=sys.stderr)
        with psycopg.connect(bench.admin_url) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    med = statistics.median
    result = {
        "repeat": args.repeat, "rows": args.rows, "runs": runs,
        "median": {"baseline_p99_ms": med(r["baseline"]["p99_ms"] for r in runs),
                   "purging_p99_ms": med(r["purging"]["p99_ms"] for r in runs),
                   "p99_moved_ms": med(r["p99_moved_ms"] for r in runs),
                   "p50_moved_ms": med(r["p50_moved_ms"] for r in runs),
                   "purge_rows_per_s": med(r["purge"]["rows_per_s"] for r in runs),
                   "purge_seconds": med(r["purge"]["seconds"] for r in runs)},
        "machine": {**worker_bench.machine(), "postgresql": version, "fsync": "on"},
    }
    m = result["median"]
    print(f"median of {args.repeat}: lateness p99 {m['baseline_p99_ms']:.3f} ms -> "
          f"{m['purging_p99_ms']:.3f} ms while purging (moved {m['p99_moved_ms']:+.3f} ms, "
          f"target <= 1 ms); purge {m['purge_rows_per_s']:,.0f} rows/s "
          f"({m['purge_seconds']:.0f} s)", file=sys.stderr)
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
