"""A run to judge: one database, workers (on this machine or on hosts), `fizz serve` with a
client speaking the original project's worker protocol, tasks, and faults; then a verdict
from the history (see history.py).

    with Cluster.on(server, network) as run:
        a, b = run.host(), run.host()
        run.worker("w1", host=a); run.worker("w2", host=b)
        run.add("Fizz", delay=2, n=300, spread=10)
        run.network.cut(a); ...; run.network.restore(a)
        verdict = run.finish(timeout=60)
        assert verdict.ok, verdict.summary()
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
from types import TracebackType

import psycopg

from harness import procs
from harness.history import DURATION, Line, Verdict, judge, read_rows
from harness.netns import Host, Network
from harness.pgserver import FaultServer


class Cluster:
    def __init__(self, url: str, remote_url: str | None = None, network: Network | None = None,
                 lease: float = 10.0) -> None:
        self.url, self.remote_url = url, remote_url or url
        self.network, self.lease = network, lease
        self.verbose = bool(os.environ.get("FIZZ_HARNESS_VERBOSE"))  # -vv for the workers
        self.processes: list[procs.FizzProcess] = []
        self.clients: list[OriginalWorker] = []

    @classmethod
    def on(cls, server: FaultServer, network: Network | None = None,
           lease: float = 10.0) -> Cluster:
        """A run on a fresh database of the harness's own server."""
        url, remote = server.new_database()
        return cls(url, remote, network, lease)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------ cast

    def host(self) -> Host:
        assert self.network is not None, "this run has no network"
        return self.network.add_host()

    def worker(self, name: str, *args: str, host: Host | None = None,
               ready: bool = True) -> procs.FizzProcess:
        url = self.remote_url if host is not None else self.url
        process = procs.worker(name, url, "--lease", f"{self.lease:g}", *args, host=host,
                               verbose=self.verbose)
        self.processes.append(process)
        return process.ready() if ready else process

    def serve(self, name: str = "serve", *args: str) -> str:
        """`fizz serve` on this machine; returns its base URL."""
        port = _free_port()
        process = procs.server(name, self.url, port, *args)
        self.processes.append(process)
        process.ready()
        return f"127.0.0.1:{port}"

    def original_worker(self, base: str, name: str = "original", holding: int = 0
                        ) -> OriginalWorker:
        """Start a client of the original worker protocol; with `holding`, first give it
        that many Buzz tasks of its own (due now, before any fizz worker can claim them) and
        wait until it has pulled them all."""
        client = OriginalWorker(base, name)
        self.clients.append(client)
        client.start()
        if holding:
            self.add("Buzz", n=holding)
            deadline = time.monotonic() + 15
            while len(client.pulled) < holding:
                assert time.monotonic() < deadline, "the original-protocol client pulls nothing"
                time.sleep(0.05)
        return client

    # ------------------------------------------------------------------ tasks

    def add(self, kind: str, delay: float = 0.0, n: int = 1, spread: float = 0.0) -> list[int]:
        """n tasks due `delay` seconds from now (the database's now), spread evenly."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            return [r[0] for r in conn.execute(
                "INSERT INTO tasks (tasktype, status, time) SELECT %s, 'Waiting', "
                "now() + (%s + %s * i / greatest(%s, 1)) * interval '1 second' "
                "FROM generate_series(0, %s - 1) AS i RETURNING id",
                [kind, delay, spread, n, n])]

    def sql(self, text: str, params: object = None) -> list[tuple]:  # type: ignore[type-arg]
        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(text, params)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def statuses(self) -> dict[str, int]:
        return dict(self.sql("SELECT status, count(*) FROM tasks GROUP BY status"))

    def settle(self, timeout: float) -> bool:
        """Wait until every task is Complete and every due line has had time to come."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = self.sql("SELECT count(*) FROM tasks WHERE status <> 'Complete'")[0][0]
            if left == 0:
                last = self.sql("SELECT extract(epoch FROM max(completed_at))::float8 "
                                "FROM tasks")[0][0] or 0.0
                time.sleep(max(0.0, min(last + 0.5 - time.time(), 5.0)))
                return True
            time.sleep(0.1)
        return False

    # ------------------------------------------------------------------ verdict

    def lines(self) -> list[Line]:
        found = [Line(p.name, at, text) for p in self.processes
                 if p.name != "serve" for at, text in p.out]
        found += [Line(c.name, at, text) for c in self.clients for at, text in c.out]
        return found

    def finish(self, timeout: float = 60.0, window: float = 0.25) -> Verdict:
        """Let every task complete (up to `timeout`), stop everyone, and judge."""
        self.settle(timeout)
        for client in self.clients:
            client.stop()
        for process in self.processes:
            process.stop()
        kills = {p.pid: at for p in self.processes if (at := p.killed_at()) is not None}
        rows = read_rows(self.url)
        if dump := os.environ.get("FIZZ_HARNESS_DUMP"):  # everything, for a post-mortem
            with open(dump, "w") as out:
                for p in self.processes:
                    out.write(f"=== {p.name} pid {p.pid} events {p.events}\n{p.log()}\n")
                for line in sorted(self.lines(), key=lambda line: line.at):
                    out.write(f"LINE {line.at:.6f} {line.source} {line.text}\n")
                for row in rows:
                    out.write(f"ROW {row}\n")
        return judge(rows, self.lines(), kills, window)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()}" for p in self.processes)

    def close(self) -> None:
        for client in self.clients:
            client.stop()
        for process in self.processes:
            if process.proc.poll() is None:
                process.proc.kill()
                process.wait()


class OriginalWorker(threading.Thread):
    """A client of `fizz serve` doing what the original project's worker did: next -> pull
    -> run -> complete, one task at a time. It prints a task's line only once the server
    accepted its completion (a completion refused means someone else ran the task)."""

    def __init__(self, base: str, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.base = base
        self.out: list[tuple[float, str]] = []
        self.pulled: list[int] = []
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=15)

    def run(self) -> None:
        conn = http.client.HTTPConnection(*self.base.split(":"), timeout=10)
        while not self._halt.is_set():
            try:
                status, task = _call(conn, "GET", "/tasks/next")
                if status != 200 or _epoch(task["time"]) > time.time():
                    self._halt.wait(0.2)
                    continue
                status, task = _call(conn, "POST", f"/tasks/pull/{task['id']}")
                if status != 200:
                    continue
                self.pulled.append(task["id"])
                self._halt.wait(DURATION[task["type"]])
                if self._complete(conn, task["id"]):
                    text = (f"{task['type']} {task['id']}" if task["type"] != "FizzBuzz" else
                            f"FizzBuzz {time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())}"
                            f".{int(time.time() % 1 * 1e6):06d}Z")
                    self.out.append((time.time(), text))
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                conn.close()
                self._halt.wait(0.5)

    def _complete(self, conn: http.client.HTTPConnection, task_id: int) -> bool:
        """Complete, retrying through outages until the server gives a definite answer:
        200 (ours: print it) or 404 (no longer claimed: someone else ran it)."""
        while not self._halt.is_set():
            try:
                status, _ = _call(conn, "POST", f"/tasks/{task_id}")
            except (OSError, http.client.HTTPException, ValueError):
                conn.close()
                status = 0
            if status in (200, 404):
                return status == 200
            self._halt.wait(0.5)
        return False


def _call(conn: http.client.HTTPConnection, method: str, path: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    conn.request(method, path, headers={"Content-Length": "0"} if method == "POST" else {})
    response = conn.getresponse()
    body = response.read()
    return response.status, json.loads(body) if body else {}


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
