"""CPU per request, measured alternately so that every figure shares the machine's
conditions (it is shared: CPU time per request is steadier there than requests/s):

- fizz serve, and a second fizz serve holding 10,000 idle connections (GET and POST);
- the "floor": the least an asyncio server can do for GET /tasks/<id> with psycopg's
  AsyncConnectionPool (no parsing beyond the id, no routing, no log, no limits);
- the same SQL through psycopg directly (requests/s only: 16 threads in this process).

    python bench/http_cpu.py              # 5 rounds of 5 s each, medians

Both fizz servers get --idle-timeout 3600 and --max-connections 10100, so the idle
connections stay open throughout. Needs wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_bench import (
    GET_SCRIPT,
    POST_SCRIPT,
    PRELOADED,
    direct,
    fizz_serve,
    idle_connections,
    still_open,
)

from bench import Bench, machine
from fizzbuzz_cli.embedded import EmbeddedServer

FLOOR_PORT_FILE = "floor.port"


def floor_server(url: str, folder: str) -> None:
    """The least server: one asyncio stream per connection, the id from the path, the
    pool, the statement, the task as JSON."""
    from psycopg_pool import AsyncConnectionPool

    from fizzbuzz_cli import db

    async def main() -> None:
        pool = AsyncConnectionPool(url, kwargs={"autocommit": True}, min_size=16,
                                   max_size=16, open=False)
        await pool.open(wait=True)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    task_id = int(head.split(b" ", 2)[1].rsplit(b"/", 1)[1])
                    async with pool.connection() as conn:
                        cur = conn.cursor(row_factory=db.TASK_ROW)
                        await cur.execute(db.GET_TASK, [task_id])
                        task = await cur.fetchone()
                    body = json.dumps(task.to_json()).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        Path(folder, FLOOR_PORT_FILE).write_text(str(server.sockets[0].getsockname()[1]))
        await server.serve_forever()

    asyncio.run(main())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(base: str, pid: int, seconds: float, post: bool = False) -> dict[str, float]:
    before = cpu_seconds(pid)
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(POST_SCRIPT if post else GET_SCRIPT % (7, PRELOADED))
    try:
        out = subprocess.run(["wrk", "-t2", "-c16", f"-d{seconds:g}s", "-s", str(script),
                              base + ("/tasks" if post else "/tasks/1")],
                             capture_output=True, text=True, check=True).stdout
    finally:
        script.unlink()
    used = cpu_seconds(pid) - before
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {"rps": requests / seconds, "cpu_us_per_request": used / requests * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-r", "--rounds", type=int, default=5)
    parser.add_argument("-d", "--seconds", type=float, default=5.0)
    parser.add_argument("--serve-floor", nargs=2, metavar=("URL", "FOLDER"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_floor:
        floor_server(*args.serve_floor)
        return
    if not shutil.which("wrk"):
        parser.error("wrk is needed as the load generator (Debian: apt-get install wrk)")
    home = Path(tempfile.mkdtemp(prefix="fizz-cpu-", dir="/tmp"))
    server = EmbeddedServer(home)
    names = ("GET fizz serve", "GET fizz serve, 10,000 idle", "GET floor", "GET direct",
             "POST fizz serve", "POST fizz serve, 10,000 idle")
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    idle = {"--idle-timeout": "3600", "--max-connections": "10100"}
    options = [x for pair in idle.items() for x in pair]
    try:
        server.ensure_running()
        bench = Bench(server.url(dbname="postgres"))
        with bench.database() as url:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("INSERT INTO tasks (tasktype, status, time) SELECT 'Fizz', "
                             "'Waiting', now() FROM generate_series(1, %s)", [PRELOADED])
                conn.execute("VACUUM ANALYZE tasks")
            floor = subprocess.Popen([sys.executable, __file__, "--serve-floor", url,
                                      str(home)])
            try:
                with fizz_serve(url, *options) as plain, fizz_serve(url, *options) as busy, \
                        idle_connections(busy, 10_000) as held:
                    pids = {plain: _listener_pid(plain), busy: _listener_pid(busy)}
                    while not (home / FLOOR_PORT_FILE).exists():
                        time.sleep(0.05)
                    floor_base = f"http://127.0.0.1:{(home / FLOOR_PORT_FILE).read_text()}"
                    for base in (plain, busy, floor_base):  # warm-up, not counted
                        measure(base, pids.get(base, floor.pid), 2)
                    for _ in range(args.rounds):
                        rows[names[0]].append(measure(plain, pids[plain], args.seconds))
                        rows[names[1]].append(measure(busy, pids[busy], args.seconds))
                        rows[names[2]].append(measure(floor_base, floor.pid, args.seconds))
                        rows[names[3]].append(direct(url, "get", args.seconds))
                        rows[names[4]].append(measure(plain, pids[plain], args.seconds, True))
                        rows[names[5]].append(measure(busy, pids[busy], args.seconds, True))
                    assert still_open(held) == 10_000, "idle connections were closed"
            finally:
                floor.terminate()
                floor.wait()
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    median = {name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
              for name, runs in rows.items()}
    ceiling = median["GET direct"]["rps"]
    for name, m in median.items():
        cpu = m.get("cpu_us_per_request")
        share = f"  {m['rps'] / ceiling:4.0%} of direct" if name.startswith("GET") else ""
        print(f"{name:30} {m['rps']:8,.0f} req/s{share}"
              + (f"  {cpu:5.0f} us of CPU per request" if cpu else ""), file=sys.stderr)
    print(json.dumps({"median": median, "rounds": rows, "machine": machine()}))


def _listener_pid(base: str) -> int:
    port = base.rsplit(":", 1)[1]
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True,
                         text=True, check=True).stdout
    return int(re.search(r"pid=(\d+)", out).group(1))  # type: ignore[union-attr]


if __name__ == "__main__":
    main()
