"""fizz serve benchmark: requests/s and latency with 16 keep-alive clients, next to the rate
of the same SQL issued directly through psycopg (the ceiling); the same again with 10,000
idle connections open; and bulk adds (POST /tasks with 10,000-task arrays).

    python bench/http_bench.py               # 3 runs of 10 s per measurement, medians
    python bench/http_bench.py -r 5 -d 20    # more and longer runs
    python bench/http_bench.py --idle 0      # without the idle-connections measurements

Needs `wrk` (Debian: apt-get install wrk) as the HTTP load generator: a C program, so the
load it makes costs the 2-core machine little CPU. The server runs as `fizz serve` with its
defaults (one access-log line per request, to a file), after an uncounted 2 s warm-up
(its pool grows to its size; it takes every idle connection). For the idle measurements
it also gets --idle-timeout 3600 and --max-connections 10100, so that all the idle
connections stay open, as idle clients, for the whole measurement. They are plain TCP
connections held by this process (its open-file limit is raised as needed). The ceiling is
one Python process with 16 threads, each with its own connection, running the server's own
SQL (db.INSERT_TASK, db.GET_TASK) in a loop, measured right after the HTTP figure it goes
with. Everything runs on one machine against an embedded
PostgreSQL with fsync on.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
BULK = 10_000  # tasks per array in the bulk measurement
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
BULK_SCRIPT = """
wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
"""


def wrk(base: str, path: str, script: str, seconds: float,
        clients: int = CLIENTS) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script)
    try:
        done = subprocess.run(["wrk", "-t2", f"-c{clients}", f"-d{seconds:g}s", "--latency",
                               "--timeout", "10s", "-s", lua.name, base + path],
                              capture_output=True, text=True, check=True)
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


@contextmanager
def idle_connections(base: str, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections to the server that send nothing (idle clients)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 1000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(count + 1000, hard), hard))
    host, port = base.removeprefix("http://").rsplit(":", 1)
    held = []
    try:
        for _ in range(count):
            held.append(socket.create_connection((host, int(port)), timeout=30))
        yield held
    finally:
        for sock in held:
            sock.close()


def still_open(held: list[socket.socket]) -> int:
    """How many of the held connections the server has not closed."""
    open_ = 0
    for sock in held:
        sock.setblocking(False)
        try:
            open_ += sock.recv(1) != b""
        except BlockingIOError:
            open_ += 1
        except OSError:
            pass
    return open_


@contextmanager
def fizz_serve(url: str, *options: str) -> Iterator[str]:
    with tempfile.NamedTemporaryFile("w", prefix="fizz-serve-", suffix=".log") as log:
        proc = subprocess.Popen([*FIZZ, "serve", "--port", "0", "--database-url", url,
                                 *options], stdout=subprocess.DEVNULL, stderr=log, text=True)
        try:
            yield _wait_for_address(Path(log.name))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        text = Path(log.name).read_text()
        if "Traceback" in text:
            raise RuntimeError(f"fizz serve logged a traceback:\n{text[-3000:]}")


def warm_up(base: str, script: str) -> None:
    """Uncounted: the pool grows to its size, the server has taken every connection."""
    wrk(base, "/tasks/1", script, 2)


def run_once(bench: Bench, seconds: float, idle: int) -> dict[str, dict[str, float]]:
    """One run; each HTTP measurement is followed at once by its ceiling, so that the two
    share the machine's conditions (it is shared: their ratio is steadier than either)."""
    results = {}
    with bench.database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO tasks (tasktype, status, time) SELECT 'Fizz', 'Waiting', "
                         "now() FROM generate_series(1, %s)", [PRELOADED])
            conn.execute("VACUUM ANALYZE tasks")
        get = GET_SCRIPT % (7, PRELOADED)
        with fizz_serve(url) as base:
            warm_up(base, get)
            checkpoint(bench.admin_url)
            results["http_post"] = wrk(base, "/tasks", POST_SCRIPT, seconds)
            checkpoint(bench.admin_url)
            results["direct_post"] = direct(url, "post", seconds)
            checkpoint(bench.admin_url)
            results["http_get"] = wrk(base, "/tasks/1", get, seconds)
            results["direct_get"] = direct(url, "get", seconds)
        if idle:
            with fizz_serve(url, "--idle-timeout", "3600", "--max-connections",
                            str(idle + 100)) as base, idle_connections(base, idle) as held:
                warm_up(base, get)
                checkpoint(bench.admin_url)
                results["http_post_idle"] = wrk(base, "/tasks", POST_SCRIPT, seconds)
                checkpoint(bench.admin_url)
                results["http_get_idle"] = wrk(base, "/tasks/1", get, seconds)
                results["idle"] = {"held": idle, "still_open": still_open(held)}
        with fizz_serve(url) as base:  # last: it adds a million rows or more
            warm_up(base, get)
            tasks = [{"type": "FizzBuzz", "time": f"2030-01-01T00:00:{i % 60:02d}Z"}
                     for i in range(BULK)]
            checkpoint(bench.admin_url)
            bulk = wrk(base, "/tasks", BULK_SCRIPT % json.dumps(tasks), seconds, clients=2)
            results["http_bulk"] = {**bulk, "tasks_per_s": bulk["rps"] * BULK}
    for kind in ("post", "get"):
        for suffix in ("", "_idle"):
            if f"http_{kind}{suffix}" in results:
                http, ceiling = results[f"http_{kind}{suffix}"], results[f"direct_{kind}"]
                results[f"ratio_{kind}{suffix}"] = {"ratio": http["rps"] / ceiling["rps"]}
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
    parser.add_argument("--idle", type=int, default=10_000, metavar="N",
                        help="idle connections for the second set of measurements (0: none)")
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
            runs.append(run_once(bench, args.seconds, args.idle))
            print(f"  run {i + 1}: " + ", ".join(
                f"{k} {v['rps']:,.0f}/s p99 {v['p99_ms']:.2f} ms"
                for k, v in runs[-1].items() if "rps" in v) + ", ratios " + ", ".join(
                f"{k[6:]} {v['ratio']:.0%}" for k, v in runs[-1].items() if "ratio" in v),
                file=sys.stderr)
        with psycopg.connect(bench.admin_url) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    median = {name: {key: statistics.median(run[name][key] for run in runs)
                     for key in runs[0][name]} for name in runs[0]}
    results = {"repeat": args.repeat, "seconds": args.seconds, "clients": CLIENTS,
               "idle_connections": args.idle, "bulk_array": BULK,
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
                   "direct p50 / p99", "HTTP / direct", "median of the runs' ratios"):
        table.add_column(column, justify="right")
    rows = [("POST /tasks", "http_post", "direct_post", "ratio_post"),
            ("GET /tasks/<id>", "http_get", "direct_get", "ratio_get")]
    if "http_get_idle" in m:
        idle = results["idle_connections"]
        rows += [(f"POST /tasks, {idle:,} idle conns", "http_post_idle", "direct_post",
                  "ratio_post_idle"),
                 (f"GET /tasks/<id>, {idle:,} idle conns", "http_get_idle", "direct_get",
                  "ratio_get_idle")]
    for label, http, ceiling, ratio in rows:
        h, d = m[http], m[ceiling]
        table.add_row(label, f"{h['rps']:,.0f}", f"{h['p50_ms']:.2f} / {h['p99_ms']:.2f} ms",
                      f"{d['rps']:,.0f}", f"{d['p50_ms']:.2f} / {d['p99_ms']:.2f} ms",
                      f"{h['rps'] / d['rps']:.0%}", f"{m[ratio]['ratio']:.0%}")
    console = Console(stderr=True, width=130)
    console.print(table)
    bulk = m["http_bulk"]
    console.print(f"POST /tasks with {results['bulk_array']:,}-task arrays (2 clients): "
                  f"{bulk['tasks_per_s']:,.0f} tasks/s, p50 {bulk['p50_ms']:.0f} ms, "
                  f"p99 {bulk['p99_ms']:.0f} ms")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
