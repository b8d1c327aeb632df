"""Prometheus metrics of the server (prometheus_client, in its text exposition format at GET /metrics).

Labels are route templates (`/v2/models/{model}/infer`), never raw paths, so a scan of random URLs cannot grow the
series without bound.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The server's metrics in a registry of their own (several servers can live in one test process)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, model: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("mlpack_requests", "Requests (HTTP, and gRPC with method GRPC) by endpoint, method and status",
                                ("endpoint", "method", "status"), registry=self.registry)
        self.latency = Histogram("mlpack_request_duration_seconds", "HTTP request latency by endpoint and status",
                                 ("endpoint", "status"), buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.inference = Histogram("mlpack_inference_duration_seconds", "Time inside onnxruntime session.run",
                                   ("model",), buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("mlpack_requests_in_flight", "HTTP requests being served", registry=self.registry)
        self.ready = Gauge("mlpack_model_ready", "1 when the model is loaded and warmed up", ("model",),
                           registry=self.registry)
        self._model = model
        self._inference = self.inference.labels(model)

    def observe_inference(self, seconds: float) -> None:
        self._inference.observe(seconds)

    def observe_request(self, endpoint: str, method: str, status: int | str, seconds: float) -> None:
        code = str(status)
        self.requests.labels(endpoint, method, code).inc()
        self.latency.labels(endpoint, code).observe(seconds)

    def set_ready(self, ready: bool) -> None:
        self.ready.labels(self._model).set(1 if ready else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
