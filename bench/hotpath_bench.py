"""What the operator view's schema objects cost the workers' statements, measured directly.

The index on completed_at and the counting triggers (schema.sql, "operator view") must not
slow the claim and record statements, which run thousands of times a second. bench.py's
lateness and drain scenarios show it end to end, but on a shared 2-core machine their noise
is far larger than a statement's cost; this compares the statements themselves, side by
side, interleaved, on two databases of the same server: one with the full schema ("with"),
one without those objects ("without"). Statement times are medians over many rounds, as the
client sees them (one round trip each), fsync on.

    python bench/hotpath_bench.py             # 30 rounds
    python bench/hotpath_bench.py -n 60 --json out.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench as worker_bench  # bench/bench.py: its plumbing is reused
from fizzbuzz_cli import claims
from fizzbuzz_cli.claims import Run

WITHOUT = """
    DROP INDEX tasks_completed_at_idx;
    DROP TRIGGER fizz_tasks_count_inserted ON tasks;
    DROP TRIGGER fizz_tasks_count_deleted ON tasks;
    DROP TRIGGER fizz_tasks_count_truncated ON tasks;
    DROP TRIGGER fizz_tasks_count_retyped ON tasks"""

# Completed tasks already in the table, as a worker leaves them (so the index has entries).
HISTORY = 1_000_000


def timed(work: callable) -> tuple[float, object]:
    started = time.perf_counter()
    result = work()
    return (time.perf_counter() - started) * 1000, result


def one_round(conn: psycopg.Connection, samples: dict[str, list[float]]) -> None:
    # A batch of 1000 due tasks: one claim, one record (bench.py's drain in one statement).
    conn.execute("INSERT INTO tasks (tasktype, status, time) SELECT 'FizzBuzz', 'Waiting', "
                 "now() - interval '1 second' FROM generate_series(1, 1000)")
    ms, batch = timed(lambda: claims.claim_due(conn, "w", ahead=0, limit=1000, lease=30))
    samples["claim 1000"].append(ms)
    runs = [Run(c, c.due) for c in batch.claims]  # type: ignore[attr-defined]
    ms, done = timed(lambda: claims.record_runs(conn, "w", runs))
    assert len(done) == 1000  # type: ignore[arg-type]
    samples["record 1000"].append(ms)
    # Single tasks: one claim, one record each (bench.py's lateness, one task per slot).
    for _ in range(20):
        ms, _row = timed(lambda: conn.execute(
            "INSERT INTO tasks (tasktype, status, time) VALUES ('FizzBuzz', 'Waiting', "
            "now() - interval '1 second')"))
        samples["insert 1"].append(ms)
        ms, batch = timed(lambda: claims.claim_due(conn, "w", ahead=0, limit=1000, lease=30))
        samples["claim 1"].append(ms)
        runs = [Run(c, c.due) for c in batch.claims]  # type: ignore[attr-defined]
        ms, _done = timed(lambda runs=runs: claims.record_runs(conn, "w", runs))
        samples["record 1"].append(ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--rounds", type=int, default=30)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="fizz-bench-", dir="/tmp"))
    server = worker_bench.EmbeddedServer(home)
    results: dict[str, dict[str, list[float]]] = {}
    try:
        server.ensure_running()
        bench = worker_bench.Bench(server.url(dbname="postgres"))
        with bench.database() as with_url, bench.database() as without_url:
            with psycopg.connect(without_url, autocommit=True) as conn:
                conn.execute(WITHOUT)
            conns = {}
            for name, url in (("with", with_url), ("without", without_url)):
                conn = psycopg.connect(url, autocommit=True)
                conn.execute(f"""INSERT INTO tasks (tasktype, status, time, completed_at,
                                                    started_at, worker)
                    SELECT 'Fizz', 'Complete', t, t, t, 'old-host:1:abcdef'
                    FROM (SELECT now() - interval '1 day' - n * interval '1 ms' AS t
                          FROM generate_series(1, {HISTORY}) AS n) s""")
                conn.execute("VACUUM ANALYZE tasks")
                # The record statement's plan flips, on some tables, to a sequential scan of
                # the whole table in a nested loop (reported with issue 7's RECORD_RUNS);
                # both sides would pay it and hide what is measured here. This keeps the
                # plan the workers get on most tables: the batch's ids by primary key.
                conn.execute("SET enable_seqscan = off")
                conns[name] = conn
                results[name] = {k: [] for k in ("claim 1000", "record 1000", "insert 1",
                                                 "claim 1", "record 1")}
            worker_bench.checkpoint(bench.admin_url)
            for i in range(args.rounds + 1):
                order = ("with", "without") if i % 2 else ("without", "with")
                for name in order:
                    samples = results[name] if i else {k: [] for k in results[name]}
                    one_round(conns[name], samples)  # round 0 warms up, uncounted
            for conn in conns.values():
                conn.close()
        with psycopg.connect(bench.admin_url) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    table = {}
    print(f"{'statement':<14}{'without (ms)':>14}{'with (ms)':>12}{'change':>10}",
          file=sys.stderr)
    for kind in results["with"]:
        a = statistics.median(results["without"][kind])
        b = statistics.median(results["with"][kind])
        table[kind] = {"without_ms": a, "with_ms": b, "change": b / a - 1,
                       "samples": len(results["with"][kind])}
        print(f"{kind:<14}{a:>14.3f}{b:>12.3f}{(b / a - 1) * 100:>9.1f}%", file=sys.stderr)
    out = {"rounds": args.rounds, "history": HISTORY, "median": table, "raw": results,
           "machine": {**worker_bench.machine(), "postgresql": version, "fsync": "on"}}
    print(json.dumps({k: v for k, v in out.items() if k != "raw"}))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
