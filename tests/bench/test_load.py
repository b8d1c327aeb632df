"""The load generator and its statistics: percentiles against numpy's, throughput from known figures, and real
closed-loop runs against a Python callable and a real HTTP server on loopback (no mocks)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np
import pytest

from mlpk.packager.bench.load import HttpPost, LoadResult, RequestFailed, percentile, run_load


@pytest.mark.parametrize("values", [[1.0], [3.0, 1.0, 2.0], list(range(1, 101)), [0.5, 9.0, 2.25, 2.25, 100.0]])
@pytest.mark.parametrize("p", [0, 1, 50, 90, 99, 99.9, 100])
def test_percentile_matches_numpy(values: list[float], p: float) -> None:
    assert percentile(values, p) == pytest.approx(float(np.percentile(values, p)))


def test_percentile_of_known_lists() -> None:
    hundred = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert (percentile(hundred, 50), percentile(hundred, 90), percentile(hundred, 99)) == pytest.approx(
        (50.5, 90.1, 99.01))
    assert percentile([10.0, 20.0], 50) == 15.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], 101)


def test_result_figures() -> None:
    result = LoadResult(4, tuple(float(v) for v in range(1, 201)), errors=3, seconds=2.0, first_error="HTTP 500: x")
    assert result.requests == 203
    assert result.throughput == 100.0  # answered requests per second: failures do not count
    summary = result.summary()
    assert summary["p50_ms"] == 100.5 and summary["p90_ms"] == pytest.approx(180.1)
    assert summary["p99_ms"] == pytest.approx(198.01) and summary["min_ms"] == 1 and summary["max_ms"] == 200
    assert summary["errors"] == 3 and summary["first_error"] == "HTTP 500: x" and "latencies_ms" not in summary
    assert result.to_dict()["latencies_ms"][:3] == [1.0, 2.0, 3.0]
    empty = LoadResult(1, (), errors=5, seconds=1.0, first_error="boom")
    assert empty.throughput == 0.0 and empty.percentile(50) is None and empty.summary()["p99_ms"] is None


def test_run_load_by_request_count_counts_errors_and_keeps_the_first() -> None:
    calls = 0
    lock = threading.Lock()

    def send() -> None:
        nonlocal calls
        with lock:
            calls += 1
            mine = calls
        if mine % 5 == 0:
            raise RequestFailed(f"failure number {mine // 5}")

    result = run_load(send, concurrency=3, requests=50)
    assert calls == 50 and result.requests == 50
    assert result.errors == 10 and len(result.latencies_ms) == 40
    assert result.first_error is not None and result.first_error.startswith("failure number")
    assert result.concurrency == 3 and result.seconds > 0


def test_run_load_by_duration_is_closed_loop() -> None:
    """Each of N workers waits for its answer: with a 20 ms `send`, 4 workers answer about 200 requests a second."""
    in_flight = peak = 0
    lock = threading.Lock()

    def send() -> None:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        threading.Event().wait(0.02)
        with lock:
            in_flight -= 1

    result = run_load(send, concurrency=4, duration_s=0.5)
    assert peak == 4
    assert 0.5 <= result.seconds < 1.5
    assert 40 <= len(result.latencies_ms) <= 110
    assert result.errors == 0 and min(result.latencies_ms) >= 19


def test_run_load_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="below 1"):
        run_load(lambda: None, concurrency=0, requests=1)
    with pytest.raises(ValueError, match="exactly one"):
        run_load(lambda: None, concurrency=1)
    with pytest.raises(ValueError, match="exactly one"):
        run_load(lambda: None, concurrency=1, duration_s=1, requests=1)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    connections: ClassVar[set[int]] = set()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Handler.connections.add(id(self.connection))
        status, answer = (200, b'{"outputs": []}') if self.path == "/ok" and body == b'{"x": 1}' else \
            (500, b'{"error": "nope"}')
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Handler.connections = set()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_post_over_keep_alive_connections(http_server: str) -> None:
    result = run_load((f"{http_server}/ok", b'{"x": 1}'), concurrency=3, requests=60)
    assert result.errors == 0 and len(result.latencies_ms) == 60
    assert len(_Handler.connections) <= 3, "one keep-alive connection per worker thread"


def test_http_post_counts_non_2xx_and_objections_as_errors(http_server: str) -> None:
    failing = run_load((f"{http_server}/other", b'{"x": 1}'), concurrency=2, requests=10)
    assert failing.errors == 10 and failing.latencies_ms == ()
    assert failing.first_error == 'HTTP 500: {"error": "nope"}'

    send = HttpPost(f"{http_server}/ok", b'{"x": 1}', check=lambda status, body: f"objected to {body!r}")
    objected = run_load(send, concurrency=1, requests=3)
    send.close()
    assert objected.errors == 3 and objected.first_error == "objected to b'{\"outputs\": []}'"


def test_http_post_without_a_server_fails_each_request() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        result = run_load((f"http://127.0.0.1:{port}/x", b"{}"), concurrency=2, requests=6)
    assert result.errors == 6 and result.first_error is not None and "no answer from" in result.first_error
    with pytest.raises(ValueError, match="not an http:// URL"):
        HttpPost("https://example.invalid/x", b"")
