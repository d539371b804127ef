"""Prometheus text exposition (format 0.0.4) for fizz's own metrics: counters, gauges and
histograms kept in memory, rendered on request. No dependency, nothing global: each process
makes a Registry and the things it measures.

Threading: every metric locks its own state; render() may run on any thread.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable

Labels = tuple[tuple[str, str], ...]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if isinstance(value, float) and not value.is_integer() else (
        str(int(value)))


class Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help = name, help_text
        self._lock = threading.Lock()

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        yield from self.samples()

    def samples(self) -> Iterable[str]:
        raise NotImplementedError


class Counter(Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self._values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(tuple(sorted(labels.items())), 0.0)

    def samples(self) -> Iterable[str]:
        with self._lock:
            values = sorted(self._values.items()) or [((), 0.0)]  # never counted: 0
        for labels, value in values:
            yield f"{self.name}{_labels(labels)} {_number(value)}"


class Gauge(Metric):
    """A value read when rendered (from a callable), so it is never stale."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, read: Callable[[], float],
                 labels: Labels = ()) -> None:
        super().__init__(name, help_text)
        self.read, self.labels = read, labels

    def samples(self) -> Iterable[str]:
        yield f"{self.name}{_labels(self.labels)} {_number(self.read())}"


class Histogram(Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str,
                 buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        super().__init__(name, help_text)
        self.buckets = buckets
        self._series: dict[Labels, list[float]] = {}  # bucket counts, then sum and count

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        index = bisect.bisect_left(self.buckets, value)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = [0.0] * (len(self.buckets) + 2)
            if index < len(self.buckets):
                series[index] += 1
            series[-2] += value
            series[-1] += 1

    def count(self, **labels: str) -> int:
        with self._lock:
            series = self._series.get(tuple(sorted(labels.items())))
            return int(series[-1]) if series else 0

    def samples(self) -> Iterable[str]:
        with self._lock:
            copied = sorted((key, list(series)) for key, series in self._series.items())
        for labels, series in copied:
            cumulative = 0.0
            for bound, count in zip(self.buckets, series, strict=False):
                cumulative += count
                yield (f"{self.name}_bucket{_labels((*labels, ('le', _number(bound))))} "
                       f"{_number(cumulative)}")
            yield f"{self.name}_bucket{_labels((*labels, ('le', '+Inf')))} {_number(series[-1])}"
            yield f"{self.name}_sum{_labels(labels)} {_number(series[-2])}"
            yield f"{self.name}_count{_labels(labels)} {_number(series[-1])}"


class Registry:
    def __init__(self) -> None:
        self.metrics: list[Metric] = []

    def add(self, metric: Metric) -> Metric:
        self.metrics.append(metric)
        return metric

    def counter(self, name: str, help_text: str) -> Counter:
        return self.add(Counter(name, help_text))  # type: ignore[return-value]

    def gauge(self, name: str, help_text: str, read: Callable[[], float],
              **labels: str) -> Gauge:
        return self.add(Gauge(name, help_text, read,  # type: ignore[return-value]
                              tuple(sorted(labels.items()))))

    def histogram(self, name: str, help_text: str,
                  buckets: tuple[float, ...] = LATENCY_BUCKETS) -> Histogram:
        return self.add(Histogram(name, help_text, buckets))  # type: ignore[return-value]

    def render(self) -> str:
        return "\n".join(line for metric in self.metrics for line in metric.lines()) + "\n"
