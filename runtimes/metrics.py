"""Prometheus metrics of the server (prometheus_client, in its text exposition format at GET /metrics).

Labels are route templates (`/v2/models/{model}/infer`), never raw paths, so a scan of random URLs cannot grow the
series without bound.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from mlpk.runtimes.model import Model
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
        self.in_flight = Gauge("mlpack_requests_in_flight", "HTTP requests being served", registry=self.registry)
        self.ready = Gauge("mlpack_model_ready", "1 when the model version is loaded and warmed up",
                           ("model", "version"), registry=self.registry)

    def observe_inference(self, model: Model, seconds: float) -> None:
        self.inference.labels(model.name, model.version).observe(seconds)

    def observe_request(self, endpoint: str, method: str, status: int | str, seconds: float) -> None:
        code = str(status)
        self.requests.labels(endpoint, method, code).inc()
        self.latency.labels(endpoint, code).observe(seconds)

    def set_ready(self, repository: Repository) -> None:
        """The ready gauge of every loaded version, as its readiness says now."""
        for served in repository.served:
            self.ready.labels(served.name, served.version).set(1 if served.readiness.is_set() else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
