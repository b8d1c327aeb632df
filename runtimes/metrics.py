"""Prometheus metrics of the server (prometheus_client, in its text exposition format at GET /metrics).

Labels are route templates (`/v2/models/{model}/infer`), never raw paths, so a scan of random URLs cannot grow the
series without bound.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from mlpk.runtimes.repository import Repository

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The server's metrics in a registry of their own (several servers can live in one test process)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("mlpack_requests", "Requests (HTTP, and gRPC with method GRPC) by endpoint, method and status",
                                ("endpoint", "method", "status"), registry=self.registry)
        self.latency = Histogram("mlpack_request_duration_seconds", "HTTP request latency by endpoint and status",
                                 ("endpoint", "status"), buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.inference = Histogram("mlpack_inference_duration_seconds", "Time inside onnxruntime session.run",
                                   ("model", "version"), buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("mlpack_requests_in_flight", "Requests being served (HTTP and gRPC)",
                               registry=self.registry)
        self._in_flight: list[Callable[[], int]] = []  # read when scraped: nothing to count per request
        self.in_flight.set_function(lambda: sum(count() for count in self._in_flight))
        self.ready = Gauge("mlpack_model_ready", "1 when the model version is loaded and warmed up",
                           ("model", "version"), registry=self.registry)
        self.batch = Histogram("mlpack_batch_size", "Calls a run of the model served (dynamic batching)",
                               ("model", "version"), buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)
        self.shed = Counter("mlpack_requests_shed", "Inference calls not run (scheduler.py), by reason: queue_full "
                            "(429), timeout (504), client_gone", ("model", "version", "reason"),
                            registry=self.registry)
        self.queue_depth = Gauge("mlpack_queue_depth", "Inference calls waiting for a run", ("model", "version"),
                                 registry=self.registry)
        self.runs_active = Gauge("mlpack_runs_active", "Runs of the model version in worker threads now",
                                 ("model", "version"), registry=self.registry)
        # Each request touches the same few series: their children, looked up once (labels() takes a lock and
        # builds a tuple each time, a share of a small request's time worth keeping).
        self._request_series: dict[tuple[str, str, int | str], tuple[Any, Any]] = {}
        self._run_series: dict[tuple[str, str], tuple[Any, Any]] = {}
        self.batch_counted = False  # runs of one call count in mlpack_batch_size once some model batches

    def count_in_flight(self, count: Callable[[], int]) -> None:
        """Add `count()` (a transport's requests in flight) to mlpack_requests_in_flight."""
        self._in_flight.append(count)

    def observe_shed(self, model: str, version: str, reason: str) -> None:
        self.shed.labels(model, version, reason).inc()

    def set_load(self, model: str, version: str, waiting: int, running: int) -> None:
        self.queue_depth.labels(model, version).set(waiting)
        self.runs_active.labels(model, version).set(running)

    def observe_run(self, model: str, version: str, seconds: float, calls: int) -> None:
        """One run of a model version: its time inside onnxruntime, and the calls it served."""
        series = self._run_series.get((model, version))
        if series is None:
            series = self._run_series[(model, version)] = (self.inference.labels(model, version),
                                                           self.batch.labels(model, version))
        series[0].observe(seconds)
        if calls > 1 or self.batch_counted:
            series[1].observe(calls)

    def observe_request(self, endpoint: str, method: str, status: int | str, seconds: float) -> None:
        series = self._request_series.get((endpoint, method, status))
        if series is None:
            code = str(status)
            series = self._request_series[(endpoint, method, status)] = (
                self.requests.labels(endpoint, method, code), self.latency.labels(endpoint, code))
        series[0].inc()
        series[1].observe(seconds)

    def set_ready(self, repository: Repository) -> None:
        """The ready gauge of every loaded version, as its readiness says now."""
        for served in repository.served:
            self.ready.labels(served.name, served.version).set(1 if served.readiness.is_set() else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
