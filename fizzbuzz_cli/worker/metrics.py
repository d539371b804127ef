"""What a worker measures about itself, and `--metrics-port`: Prometheus text over HTTP.

Each thread gets the WorkerMetrics object and records what it sees (the printer: tasks run
and how late they started; the dispatcher: claim round trips; the recorder: record round
trips and runs dropped; the keeper: renewals and reaps). The HTTP endpoint is a small
standard-library server on a thread of its own, bound to 127.0.0.1 unless told otherwise;
it answers GET /metrics and nothing else.

Threading: metrics lock their own state (see fizzbuzz_cli.prometheus); the server thread
only renders.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fizzbuzz_cli import __version__
from fizzbuzz_cli.errors import FizzError
from fizzbuzz_cli.prometheus import Registry

log = logging.getLogger("fizz.worker")


class WorkerMetrics:
    def __init__(self, worker: str, in_flight: Callable[[], float],
                 database_up: Callable[[], float]) -> None:
        self.registry = r = Registry()
        r.gauge("fizz_worker_info", "This worker: its id and fizz version (always 1).",
                lambda: 1, worker=worker, version=__version__)
        self.tasks_run = r.counter("fizz_worker_tasks_run_total",
                                   "Tasks whose line this worker printed, by type.")
        r.gauge("fizz_worker_tasks_in_flight",
                "Tasks claimed and not yet printed or handed back.", in_flight)
        r.gauge("fizz_worker_database_up",
                "1 while every connection of this worker reaches the database.", database_up)
        self.lateness = r.histogram(
            "fizz_worker_lateness_seconds",
            "How late each task started: its line's time minus its sleep minus its due time.")
        self.window = r.histogram(
            "fizz_worker_record_to_line_seconds",
            "From each run's record (its answer) to its line: what a kill -9 in between loses.",
            (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02,
             0.03, 0.05, 0.1, 0.25, 0.5, 1.0))
        self.claims = r.histogram("fizz_worker_claim_seconds",
                                  "Round trip of each claim statement.")
        self.records = r.histogram("fizz_worker_record_seconds",
                                   "Round trip of each record (completion) statement.")
        self.renewals = r.histogram("fizz_worker_renewal_seconds",
                                    "Round trip of each lease renewal statement.")
        self.dropped = r.counter("fizz_worker_tasks_dropped_total",
                                 "Claims found no longer this worker's (lost, deleted).")
        self.handed_back = r.counter("fizz_worker_tasks_handed_back_total",
                                     "Claims this worker handed back to Waiting.")
        self.reaped = r.counter("fizz_worker_tasks_reaped_total",
                                "Other holders' expired claims this worker handed back.")

    def render(self) -> str:
        return self.registry.render()


class MetricsServer:
    """GET /metrics on host:port, on a thread of its own."""

    def __init__(self, metrics: WorkerMetrics, host: str, port: int) -> None:
        render = metrics.render

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self._send(404, b"only /metrics is served here\n", "text/plain")
                    return
                self._send(200, render().encode(), "text/plain; version=0.0.4")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes are not worth a log line each

        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise FizzError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None
        self.server.daemon_threads = True
        self.address = f"http://{host}:{self.server.server_address[1]}/metrics"
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.5},
                                        name="fizz-metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("metrics on %s", self.address)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
