"""Prometheus metrics of the server (prometheus_client, in its text exposition format at GET /metrics).

Labels are route templates (`/v2/models/{model}/infer`), never raw paths, so a scan of random URLs cannot grow the
series without bound.

The series every request touches (its count and latency, its model's run time, batch size, queue depth and runs in
progress) are kept as plain numbers and handed to prometheus_client when scraped (a custom collector, its documented
extension point): prometheus_client's own counters take a lock per increment, a share of a small request's time
worth saving, and here one thread counts them all (the server's event loop: HTTP, gRPC and the ends of runs all come
back to it).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from mlpk.runtimes.repository import Repository

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class _Histogram:
    """One histogram series: counts per bucket (the last for +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts by upper bound, as the exposition format has them."""
        running = 0
        out: list[tuple[str, float]] = []
        for bound, count in zip((*(floatToGoString(b) for b in self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class _Hot:
    """The per-request series (module docstring), collected at scrape time."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.latency: dict[tuple[str, str], _Histogram] = {}
        self.inference: dict[tuple[str, str], _Histogram] = {}
        self.batch: dict[tuple[str, str], _Histogram] = {}
        self.load: dict[tuple[str, str], tuple[int, int]] = {}  # (calls waiting, runs in worker threads)

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("mlpack_requests", "Requests (HTTP, and gRPC with method GRPC) by endpoint, "
                                       "method and status", labels=("endpoint", "method", "status"))
        for request_labels, count in list(self.requests.items()):
            requests.add_metric(request_labels, count)
        yield requests
        histograms: tuple[tuple[str, str, tuple[str, ...], dict[tuple[str, str], _Histogram]], ...] = (
                ("mlpack_request_duration_seconds", "Request latency by endpoint and status", ("endpoint", "status"),
                 self.latency),
                ("mlpack_inference_duration_seconds", "Time inside onnxruntime session.run, per run",
                 ("model", "version"), self.inference),
                ("mlpack_batch_size", "Calls a run of the model served (dynamic batching)", ("model", "version"),
                 self.batch))
        for name, text, labels, series in histograms:
            family = HistogramMetricFamily(name, text, labels=labels)
            for values, histogram in list(series.items()):
                family.add_metric(list(values), histogram.buckets(), histogram.total)
            yield family
        depth = GaugeMetricFamily("mlpack_queue_depth", "Inference calls waiting for a run",
                                  labels=("model", "version"))
        active = GaugeMetricFamily("mlpack_runs_active", "Runs of the model version in worker threads now",
                                   labels=("model", "version"))
        for key, (waiting, running) in list(self.load.items()):
            depth.add_metric(key, waiting)
            active.add_metric(key, running)
        yield depth
        yield active


class Metrics:
    """The server's metrics in a registry of their own (several servers can live in one test process)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._hot = _Hot()
        self.registry.register(self._hot)  # a collector is anything with collect()
        self.in_flight = Gauge("mlpack_requests_in_flight", "Requests being served (HTTP and gRPC)",
                               registry=self.registry)
        self._in_flight: list[Callable[[], int]] = []  # read when scraped: nothing to count per request
        self.in_flight.set_function(lambda: sum(count() for count in self._in_flight))
        self.ready = Gauge("mlpack_model_ready", "1 when the model version is loaded and warmed up",
                           ("model", "version"), registry=self.registry)
        self.shed = Counter("mlpack_requests_shed", "Inference calls not run (scheduler.py), by reason: queue_full "
                            "(429), timeout (504), client_gone", ("model", "version", "reason"),
                            registry=self.registry)
        self.batch_counted = False  # runs of one call count in mlpack_batch_size once some model batches

    def count_in_flight(self, count: Callable[[], int]) -> None:
        """Add `count()` (a transport's requests in flight) to mlpack_requests_in_flight."""
        self._in_flight.append(count)

    def observe_shed(self, model: str, version: str, reason: str) -> None:
        self.shed.labels(model, version, reason).inc()

    def set_load(self, model: str, version: str, waiting: int, running: int) -> None:
        self._hot.load[(model, version)] = (waiting, running)

    def observe_run(self, model: str, version: str, seconds: float, calls: int) -> None:
        """One run of a model version: its time inside onnxruntime, and the calls it served."""
        key = (model, version)
        hot = self._hot
        series = hot.inference.get(key)
        if series is None:
            series = hot.inference[key] = _Histogram(_LATENCY_BUCKETS)
        series.observe(seconds)
        if calls > 1 or self.batch_counted:
            batch = hot.batch.get(key)
            if batch is None:
                batch = hot.batch[key] = _Histogram(_BATCH_BUCKETS)
            batch.observe(calls)

    def observe_request(self, endpoint: str, method: str, status: int | str, seconds: float) -> None:
        code = str(status)
        hot = self._hot
        key = (endpoint, method, code)
        hot.requests[key] = hot.requests.get(key, 0) + 1
        series = hot.latency.get((endpoint, code))
        if series is None:
            series = hot.latency[(endpoint, code)] = _Histogram(_LATENCY_BUCKETS)
        series.observe(seconds)

    def set_ready(self, repository: Repository) -> None:
        """The ready gauge of every loaded version, as its readiness says now."""
        for served in repository.served:
            self.ready.labels(served.name, served.version).set(1 if served.readiness.is_set() else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
