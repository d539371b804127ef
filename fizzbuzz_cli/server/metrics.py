"""Prometheus metrics of `fizz serve`, kept in memory (text exposition format 0.0.4).

Touched only by the event loop's thread: no lock.
"""

from __future__ import annotations

from bisect import bisect_left

from fizzbuzz_cli.tasks import Status, TaskType

CONTENT_TYPE = "text/plain; version=0.0.4"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """Requests by route, method and status; request durations by route."""

    BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        # route -> counts per bucket (not cumulative; the last one is +Inf), then [sum, count]
        self.durations: dict[str, list[float]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method if method in METHODS else "OTHER", status)
        self.requests[key] = self.requests.get(key, 0) + 1
        series = self.durations.get(route)
        if series is None:
            series = self.durations[route] = [0.0] * (len(self.BUCKETS) + 3)
        series[bisect_left(self.BUCKETS, seconds)] += 1
        series[-2] += seconds
        series[-1] += 1

    def render(self, tasks: dict[tuple[str, str], int]) -> str:
        out = ["# HELP fizz_tasks Tasks in the database, by type and status.",
               "# TYPE fizz_tasks gauge"]
        for kind in TaskType:
            for status in Status:
                count = tasks.get((kind.value, status.value), 0)
                out.append(f'fizz_tasks{{type="{kind.value}",status="{status.value}"}} {count}')
        out += ["# HELP fizz_http_requests_total HTTP requests, by route, method and status.",
                "# TYPE fizz_http_requests_total counter"]
        for (route, method, status), count in sorted(self.requests.items()):
            out.append(f'fizz_http_requests_total{{route="{route}",method="{method}",'
                       f'status="{status}"}} {count}')
        out += ["# HELP fizz_http_request_duration_seconds Time to answer an HTTP request.",
                "# TYPE fizz_http_request_duration_seconds histogram"]
        for route, series in sorted(self.durations.items()):
            cumulative = 0.0
            for bound, count in zip(self.BUCKETS, series, strict=False):
                cumulative += count
                out.append(f'fizz_http_request_duration_seconds_bucket{{route="{route}",'
                           f'le="{bound:g}"}} {cumulative:.0f}')
            out.append(f'fizz_http_request_duration_seconds_bucket{{route="{route}",'
                       f'le="+Inf"}} {series[-1]:.0f}')
            out.append(f'fizz_http_request_duration_seconds_sum{{route="{route}"}} '
                       f"{series[-2]:.6f}")
            out.append(f'fizz_http_request_duration_seconds_count{{route="{route}"}} '
                       f"{series[-1]:.0f}")
        return "\n".join(out) + "\n"
