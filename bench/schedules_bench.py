"""Recurring tasks benchmark: what the materialiser costs, idle and busy, and the engine.

Starts its own PostgreSQL through fizz's embedded code (a temporary folder, default
settings: fsync on), and reports medians as a table and as JSON.

    python bench/schedules_bench.py                  # everything
    python bench/schedules_bench.py --json out.json  # also write the results to a file

Scenarios:
  idle    10,000 active daily schedules, none due: one materialise() pass (what every
          worker and server pays each time it wakes with nothing to do), 200 passes.
  busy    1,000 schedules --every 1s: one pass at each simulated second inserts one task
          per schedule (1,000 rows, one statement per schedule, one transaction per 100
          schedules), 20 passes; also as schedules materialised per second.
  engine  microseconds per next occurrence: --every 1s, */5 * * * * in Europe/Paris,
          30 2 * * * in America/New_York (1,000 occurrences each, through real jumps).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench import Bench, machine  # noqa: E402
from fizzbuzz_cli import schedules  # noqa: E402
from fizzbuzz_cli.embedded import EmbeddedServer  # noqa: E402
from fizzbuzz_cli.recurrence import parse_schedule_spec  # noqa: E402

UTC = timezone.utc
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def clone(conn: psycopg.Connection, schedule_id: int, copies: int) -> None:
    """More schedules like one that exists, in one statement (their tasks are not needed)."""
    conn.execute("""
        INSERT INTO fizz_schedules (tasktype, rule_kind, rule, time_zone, start_at, catch_up,
                                    max_catch_up, created_at, next_at, last_occurrence)
        SELECT tasktype, rule_kind, rule, time_zone, start_at, catch_up, max_catch_up,
               created_at, next_at, last_occurrence
        FROM fizz_schedules, generate_series(1, %s) WHERE id = %s""", [copies, schedule_id])


def idle(url: str, count: int = 10_000, passes: int = 200) -> dict[str, float]:
    with psycopg.connect(url, autocommit=True) as conn:
        now = schedules.database_now(conn)
        first = schedules.create_schedule(conn, parse_schedule_spec(
            "Fizz", cron="0 3 * * *", tz="Europe/Paris", now=now), now=now)
        clone(conn, first.id, count - 1)
        conn.execute("VACUUM ANALYZE fizz_schedules")
        times = []
        for _ in range(passes):
            started = time.perf_counter()
            report = schedules.materialise(conn)
            times.append(time.perf_counter() - started)
            assert report.schedules == 0 and report.wait is not None
    return {"pass_ms": statistics.median(times) * 1000,
            "p99_ms": sorted(times)[int(len(times) * 0.99) - 1] * 1000}


def busy(url: str, count: int = 1_000, passes: int = 20) -> dict[str, float]:
    with psycopg.connect(url, autocommit=True) as conn:
        made = schedules.create_schedule(conn, parse_schedule_spec(
            "Fizz", every="1s", now=T0), now=T0)
        clone(conn, made.id, count - 1)
        conn.execute("VACUUM ANALYZE fizz_schedules")
        times = []
        for step in range(1, passes + 1):
            started = time.perf_counter()
            report = schedules.materialise(conn, T0 + timedelta(seconds=step))
            times.append(time.perf_counter() - started)
            assert report.schedules == count, report
    per_pass = statistics.median(times)
    return {"pass_ms": per_pass * 1000, "schedules_per_s": count / per_pass}


def engine() -> dict[str, float]:
    results = {}
    for name, kwargs in [("every_1s", {"every": "1s"}),
                         ("cron_5m_paris", {"cron": "*/5 * * * *", "tz": "Europe/Paris"}),
                         ("cron_0230_new_york", {"cron": "30 2 * * *",
                                                 "tz": "America/New_York"})]:
        rec = parse_schedule_spec("Fizz", now=datetime(2025, 1, 1, tzinfo=UTC),
                                  **kwargs).recurrence  # type: ignore[arg-type]
        started = time.perf_counter()
        for count, _ in enumerate(rec.iter_from(rec.start), 1):
            if count == 1000:
                break
        results[f"{name}_us"] = (time.perf_counter() - started) / 1000 * 1e6
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="fizz-bench-", dir="/tmp"))
    server = EmbeddedServer(home)  # default settings: fsync on, as users run it
    results: dict[str, object] = {}
    try:
        server.ensure_running()
        bench = Bench(server.url(dbname="postgres"))
        with bench.database() as url:
            results["idle"] = idle(url)
        with bench.database() as url:
            results["busy"] = busy(url)
        results["engine"] = engine()
        with psycopg.connect(bench.admin_url) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    results["machine"] = {**machine(), "postgresql": version, "fsync": "on"}
    for name, values in results.items():
        print(f"{name:8} " + ", ".join(f"{k} {v:,.2f}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in values.items()))  # type: ignore[union-attr]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
