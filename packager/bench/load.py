"""A closed-loop load generator and the statistics of its latencies; pure Python, reusable by scripts.

Closed loop: each of N workers sends a request, waits for the answer and sends the next, so the load offered adapts
to the server, as N clients that wait on their answers see it (the model of `wrk -c N` and of Triton's
`perf_analyzer --concurrency-range`). Latencies are those of answered requests only; failed requests are counted
as errors, and the first failure is kept so a run where everything failed can say why.
"""

from __future__ import annotations

import http.client
import math
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Send = Callable[[], None]  # sends one request and returns when it is answered; raises when it failed
Check = Callable[[int, bytes], "str | None"]  # (status, body) of a 2xx answer -> what is wrong with it, or None


class RequestFailed(Exception):
    """One request that failed: no answer, a non-2xx status, or an answer that says it is an error."""


def percentile(values: Sequence[float], p: float) -> float:
    """The `p`th percentile (0-100) of `values`, interpolated linearly between the closest ranks (numpy's default
    method, so the figures match `numpy.percentile`)."""
    if not values:
        raise ValueError("the percentile of no values is undefined")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is not between 0 and 100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one load run saw: the latency of every answered request, the failures, and the wall time."""

    concurrency: int
    latencies_ms: tuple[float, ...]  # answered requests, in the order they completed
    errors: int
    seconds: float
    first_error: str | None = None

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + self.errors

    @property
    def throughput(self) -> float:
        """Answered requests per second of wall time."""
        return len(self.latencies_ms) / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, p: float) -> float | None:
        """The `p`th percentile latency in ms, or None when no request was answered."""
        return percentile(self.latencies_ms, p) if self.latencies_ms else None

    def summary(self) -> dict[str, Any]:
        """The figures without the samples (a table row)."""

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        answered = self.latencies_ms
        return {
            "concurrency": self.concurrency, "requests": self.requests, "errors": self.errors,
            "seconds": round(self.seconds, 3), "throughput_rps": round(self.throughput, 2),
            "p50_ms": ms(self.percentile(50)), "p90_ms": ms(self.percentile(90)), "p99_ms": ms(self.percentile(99)),
            "mean_ms": ms(sum(answered) / len(answered) if answered else None),
            "min_ms": ms(min(answered, default=None)), "max_ms": ms(max(answered, default=None)),
            "first_error": self.first_error,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "latencies_ms": [round(v, 3) for v in self.latencies_ms]}


class HttpPost:
    """A `Send` that POSTs one body to one URL over keep-alive connections, one per worker thread (http.client
    connections are not thread-safe). Non-2xx answers, and 2xx answers that `check` objects to, raise RequestFailed
    with the status and the start of the body."""

    def __init__(self, url: str, body: bytes, *, headers: Mapping[str, str] | None = None, timeout: float = 60.0,
                 check: Check | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{url!r} is not an http:// URL")
        self.url = url
        self.body = body
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.check = check
        self._address = (parts.hostname, parts.port or 80, timeout)
        self._path = parts.path + (f"?{parts.query}" if parts.query else "")
        self._local = threading.local()
        self._open: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            host, port, timeout = self._address
            connection = http.client.HTTPConnection(host, port, timeout=timeout)
            self._local.connection = connection
            with self._lock:
                self._open.append(connection)
        return connection

    def __call__(self) -> None:
        connection = self._connection()
        try:
            connection.request("POST", self._path, body=self.body, headers=self.headers)
            answer = connection.getresponse()
            data = answer.read()
        except (OSError, http.client.HTTPException) as err:
            connection.close()  # the next request on this thread reconnects
            raise RequestFailed(f"no answer from {self.url}: {err or type(err).__name__}") from err
        if not 200 <= answer.status < 300:
            raise RequestFailed(f"HTTP {answer.status}: {data[:300].decode('utf-8', 'replace')}")
        problem = self.check(answer.status, data) if self.check else None
        if problem:
            raise RequestFailed(problem)

    def close(self) -> None:
        """Close every connection opened so far (from any thread)."""
        with self._lock:
            for connection in self._open:
                connection.close()
            self._open.clear()


def run_load(send: Send | tuple[str, bytes], concurrency: int, duration_s: float | None = None,
             requests: int | None = None) -> LoadResult:
    """Send requests from `concurrency` threads, each waiting for its answer before the next, for `duration_s`
    seconds or until `requests` have been sent (exactly one of the two). `send` is a `Send`, or (url, body) for a
    JSON POST over keep-alive connections (HttpPost)."""
    owned = None
    if isinstance(send, tuple):
        owned = send = HttpPost(*send)
    if concurrency < 1:
        raise ValueError(f"concurrency {concurrency} is below 1")
    if (duration_s is None) == (requests is None):
        raise ValueError("give exactly one of duration_s and requests")
    lock = threading.Lock()
    stop = threading.Event()
    latencies: list[float] = []
    first_error: list[str] = []
    errors = issued = 0

    def take() -> bool:
        nonlocal issued
        if stop.is_set():
            return False
        if requests is not None:
            with lock:
                if issued >= requests:
                    return False
                issued += 1
        return True

    def worker() -> None:
        nonlocal errors
        while take():
            started = time.perf_counter()
            try:
                send()
            except Exception as err:  # noqa: BLE001 - a failed request is counted, and the load goes on
                with lock:
                    errors += 1
                    first_error[:] = first_error or [str(err) or type(err).__name__]
                continue
            took = (time.perf_counter() - started) * 1000
            with lock:
                latencies.append(took)

    # Daemon threads: a Ctrl-C in the caller must not wait for requests in flight to a server it is about to stop.
    workers = [threading.Thread(target=worker, name=f"load-{i}", daemon=True) for i in range(concurrency)]
    started = time.perf_counter()
    try:
        for thread in workers:
            thread.start()
        if duration_s is not None:
            stop.wait(duration_s)
            stop.set()
        for thread in workers:
            thread.join()
    finally:
        stop.set()
        if owned is not None:
            owned.close()
    seconds = time.perf_counter() - started
    return LoadResult(concurrency, tuple(latencies), errors, seconds, first_error[0] if first_error else None)
