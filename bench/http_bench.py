"""fizz serve benchmark: requests/s and p99 latency with 16 keep-alive clients, next to the
rate of the same SQL issued directly through psycopg (the ceiling).

    python bench/http_bench.py               # 3 runs of 10 s per measurement, medians
    python bench/http_bench.py -r 5 -d 20    # more and longer runs

Needs `wrk` (Debian: apt-get install wrk) as the HTTP load generator: a C program, so the
load it makes costs the 2-core machine little CPU. The server runs as `fizz serve` with its
defaults (one access-log line per request, to a file); the ceiling is one Python process
with 16 threads, each with its own connection, running the server's own SQL
(db.INSERT_TASK, db.GET_TASK) in a loop. Everything runs on one machine against an
embedded PostgreSQL with fsync on.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import FIZZ, Bench, checkpoint, machine
from fizzbuzz_cli import db
from fizzbuzz_cli.embedded import EmbeddedServer
from fizzbuzz_cli.tasks import TaskType

CLIENTS = 16
PRELOADED = 100_000  # tasks in the table before the GET runs (ids to fetch)
POST_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"type": "Fizz", "time": "2030-01-01T00:00:00Z"}'
wrk.headers["Content-Type"] = "application/json"
"""
GET_SCRIPT = """
math.randomseed(%d)
request = function()
  return wrk.format("GET", "/tasks/" .. math.random(1, %d))
end
"""


def wrk(base: str, path: str, script: str, seconds: float) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script)
    try:
        done = subprocess.run(["wrk", "-t2", f"-c{CLIENTS}", f"-d{seconds:g}s", "--latency",
                               "-s", lua.name, base + path], capture_output=True, text=True,
                              check=True)
    finally:
        Path(lua.name).unlink()
    out = done.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = _duration(re.search(r"99%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    p50 = _duration(re.search(r"50%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors:
        raise RuntimeError(f"wrk saw failures:\n{out}")
    return {"rps": rate, "p50_ms": p50, "p99_ms": p99}


def _duration(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def direct(url: str, kind: str, seconds: float) -> dict[str, float]:
    """The same statements through psycopg: 16 threads, 16 connections, no HTTP."""
    latencies: list[list[float]] = [[] for _ in range(CLIENTS)]
    stop = time.perf_counter() + seconds
    when = datetime(2030, 1, 1, tzinfo=timezone.utc)

    def client(index: int) -> None:
        rng = random.Random(index)
        mine = latencies[index]
        with psycopg.connect(url, autocommit=True) as conn:
            while (now := time.perf_counter()) < stop:
                if kind == "post":
                    db.add_task(conn, TaskType.FIZZ, when)
                else:
                    db.get_task(conn, rng.randint(1, PRELOADED))
                mine.append(time.perf_counter() - now)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = sorted(x for xs in latencies for x in xs)
    return {"rps": len(every) / seconds, "p50_ms": every[len(every) // 2] * 1000,
            "p99_ms": every[int(len(every) * 0.99)] * 1000}


def run_once(bench: Bench, seconds: float) -> dict[str, dict[str, float]]:
    results = {}
    with bench.database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO tasks (tasktype, status, time) SELECT 'Fizz', 'Waiting', "
                         "now() FROM generate_series(1, %s)", [PRELOADED])
            conn.execute("VACUUM ANALYZE tasks")
        with tempfile.NamedTemporaryFile("w", prefix="fizz-serve-", suffix=".log") as log:
            proc = subprocess.Popen([*FIZZ, "serve", "--port", "0", "--database-url", url],
                                    stdout=subprocess.DEVNULL, stderr=log, text=True)
            try:
                base = _wait_for_address(Path(log.name))
                checkpoint(bench.admin_url)
                results["http_post"] = wrk(base, "/tasks", POST_SCRIPT, seconds)
                checkpoint(bench.admin_url)
                results["http_get"] = wrk(base, "/tasks/1", GET_SCRIPT % (7, PRELOADED), seconds)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        checkpoint(bench.admin_url)
        results["direct_post"] = direct(url, "post", seconds)
        checkpoint(bench.admin_url)
        results["direct_get"] = direct(url, "get", seconds)
    return results


def _wait_for_address(log: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"serving the fizz API on (http://\S+)", log.read_text())
        if found:
            return found.group(1)
        time.sleep(0.05)
    raise RuntimeError(f"fizz serve did not start:\n{log.read_text()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-r", "--repeat", type=int, default=3)
    parser.add_argument("-d", "--seconds", type=float, default=10.0)
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        parser.error("wrk is needed as the load generator (Debian: apt-get install wrk)")
    home = Path(tempfile.mkdtemp(prefix="fizz-bench-", dir="/tmp"))
    server = EmbeddedServer(home)
    runs = []
    try:
        server.ensure_running()
        bench = Bench(server.url(dbname="postgres"))
        for i in range(args.repeat):
            runs.append(run_once(bench, args.seconds))
            print(f"  run {i + 1}: " + ", ".join(f"{k} {v['rps']:,.0f}/s p99 {v['p99_ms']:.2f} ms"
                                               for k, v in runs[-1].items()), file=sys.stderr)
        with psycopg.connect(bench.admin_url) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    median = {name: {key: statistics.median(run[name][key] for run in runs)
                     for key in runs[0][name]} for name in runs[0]}
    results = {"repeat": args.repeat, "seconds": args.seconds, "clients": CLIENTS,
               "median": median, "runs": runs,
               "machine": {**machine(), "postgresql": version, "fsync": "on"}}
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def report(results: dict) -> None:  # type: ignore[type-arg]
    from rich.console import Console
    from rich.table import Table

    m = results["median"]
    table = Table(title=f"fizz serve, {CLIENTS} keep-alive clients (median of "
                        f"{results['repeat']} runs of {results['seconds']:g} s)")
    for column in ("request", "HTTP req/s", "HTTP p50 / p99", "psycopg direct req/s",
                   "direct p50 / p99", "HTTP / direct"):
        table.add_column(column, justify="right")
    for label, key in (("POST /tasks", "post"), ("GET /tasks/<id>", "get")):
        h, d = m[f"http_{key}"], m[f"direct_{key}"]
        table.add_row(label, f"{h['rps']:,.0f}", f"{h['p50_ms']:.2f} / {h['p99_ms']:.2f} ms",
                      f"{d['rps']:,.0f}", f"{d['p50_ms']:.2f} / {d['p99_ms']:.2f} ms",
                      f"{h['rps'] / d['rps']:.0%}")
    Console(stderr=True, width=120).print(table)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
