"""The server's bound on memory held for requests (runtimes/budget.py) and its body deadline, measured on the real
server process.

Settings of these tests: MLPACK_MAX_BUFFERED_BYTES = 128 MiB, MLPACK_BODY_TIMEOUT = 4 s, the default body limit
(64 MiB). The documented bound: requests pin at most MLPACK_MAX_BUFFERED_BYTES, so the server's resident memory
stays within that plus what connections, threads and the allocator add, which these tests hold to 200 MB over idle
(its peak, read from the kernel's VmHWM after resetting it at idle).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mlpk.runtimes import budget, codec
from mlpk.runtimes.errors import ClientError, Overloaded, TooLarge
from tests.runtime import models
from tests.runtime.conftest import Served, start_server, stop_server

MiB = 1 << 20
BUDGET = 128 * MiB
BOUND = 200 * 1000 * 1000
DEADLINE_S = 4


def _status(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    assert found, text
    return int(found.group(1)) * 1024


def reset_peak(pid: int) -> None:
    """Reset the process's peak resident set (VmHWM) to its current size (proc(5), clear_refs value 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@pytest.fixture
def bounded(tmp_path: Path) -> Iterator[Served]:
    served = start_server(models.row30(tmp_path / "row30"), tmp_path / "server.log",
                          MLPACK_MAX_BUFFERED_BYTES=str(BUDGET), MLPACK_BODY_TIMEOUT=str(DEADLINE_S))
    try:
        yield served
    finally:
        stop_server(served)


def _connect(served: Served) -> socket.socket:
    host, port = served.host.split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def _head(length: int) -> bytes:
    return (f"POST /v2/models/row30/infer HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP answer (the server closes these connections after it)."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def _send(sock: socket.socket, data: bytes) -> int:
    """Send what the server takes of `data`; it may answer and close first (a refused body)."""
    sent = 0
    try:
        while sent < len(data):
            sent += sock.send(data[sent:sent + MiB])
    except OSError:
        pass
    return sent


def _no_server_errors(served: Served) -> None:
    lines = served.log_lines()
    assert not [line for line in lines if line.get("level") == "error"], served.log_text()[-2000:]
    assert "Traceback" not in served.log_text()


def test_stalled_uploads_hold_at_most_the_budget_and_end_in_408(bounded: Served) -> None:
    """8 uploads declaring 60 MiB each send 30 MiB and stall: two fit the 128 MiB budget and are answered 408 at
    the deadline; the others are refused at once (503 with Retry-After, as a ninth client reads); the server's peak
    memory stays within the bound, and the budget is whole again afterwards."""
    pid = bounded.proc.pid
    idle = _status(pid, "VmRSS")
    reset_peak(pid)
    started = time.monotonic()
    stalled = [_connect(bounded) for _ in range(8)]
    for sock in stalled:
        sock.sendall(_head(60 * MiB))
        _send(sock, b"1" * (30 * MiB))
    probe = _connect(bounded)
    probe.sendall(_head(60 * MiB))
    status, headers, body = _answer(probe)
    assert status == 503, body
    assert headers["retry-after"] == "1"
    assert "MLPACK_MAX_BUFFERED_BYTES" in json.loads(body)["error"]
    statuses = []
    for sock in stalled:
        try:
            statuses.append(_answer(sock)[0])
        except ConnectionResetError:  # refused while it was still sending: the kernel resets such a connection
            statuses.append(503)
    took = time.monotonic() - started
    assert statuses.count(408) == 2 and statuses.count(503) == 6, statuses
    assert DEADLINE_S <= took < DEADLINE_S + 20
    assert _status(pid, "VmHWM") - idle <= BOUND
    # the budget is whole again: a body as large as one of those is read to the end (and then refused as JSON)
    again = _connect(bounded)
    again.sendall(_head(60 * MiB) + b" " * (60 * MiB))
    status, _, body = _answer(again)
    assert status == 400, body
    _no_server_errors(bounded)


def test_large_json_bodies_at_once_stay_within_the_bound(bounded: Served) -> None:
    """Four 57 MiB JSON bodies of 15 M numbers against a [1, 30] input, sent at once: each is refused (413 when its
    parsed numbers alone would need more than the budget, 503 while others hold it) without being parsed, and
    the server's peak memory stays within the bound."""
    numbers = 15_000_000
    body = (b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,30],"data":[' + b"0.1," * (numbers - 1) + b"0.1]}]}")
    assert len(body) > 57 * MiB
    pid = bounded.proc.pid
    idle = _status(pid, "VmRSS")
    reset_peak(pid)
    answers: list[int] = []

    def client() -> None:
        sock = _connect(bounded)
        _send(sock, _head(len(body)) + body)
        try:
            status, _, text = _answer(sock)
        except ConnectionResetError:
            status, text = 503, b""
        answers.append(status)
        if status == 413:
            assert b"MLPACK_MAX_BUFFERED_BYTES" in text

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(answers) and set(answers) <= {413, 503} and 413 in answers, answers
    assert _status(pid, "VmHWM") - idle <= BOUND
    _no_server_errors(bounded)


def test_numbers_past_what_the_model_takes_stop_the_parse(bounded: Served) -> None:
    """A 4 MB body of 1 M numbers fits the budget, but a [1, 30] input takes 30: the parse counts and stops."""
    body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,30],"data":[' + b"0.1," * 999_999 + b"0.1]}]}"
    sock = _connect(bounded)
    sock.sendall(_head(len(body)) + body)
    status, _, text = _answer(sock)
    assert status == 400
    assert "holds more than" in json.loads(text)["error"] and "'x' FP32 [1, 30]" in json.loads(text)["error"]
    good = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 30], "data": [1.0] * 30}]}).encode()
    sock = _connect(bounded)
    sock.sendall(_head(len(good)) + good)
    status, _, text = _answer(sock)
    assert status == 200 and json.loads(text)["outputs"][0]["data"] == [30.0]


def test_a_body_slower_than_the_deadline_is_a_408(bounded: Served) -> None:
    sock = _connect(bounded)
    sock.sendall(_head(1000) + b'{"inputs":')
    started = time.monotonic()
    status, headers, body = _answer(sock)
    assert status == 408
    assert time.monotonic() - started >= DEADLINE_S - 0.5
    error = json.loads(body)["error"]
    assert "10 of 1000 bytes" in error and "MLPACK_BODY_TIMEOUT" in error
    assert headers["connection"] == "close"


def test_an_integer_past_pythons_digit_limit_is_a_400(bounded: Served) -> None:
    body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,30],"data":[' + b"9" * 5000 + b"]}]}"
    sock = _connect(bounded)
    sock.sendall(_head(len(body)) + body)
    status, _, text = _answer(sock)
    assert status == 400 and "malformed JSON" in json.loads(text)["error"]


def test_the_budget_refuses_what_never_fits_and_what_does_not_fit_now() -> None:
    shared = budget.Budget(100)
    first, second = shared.lease(), shared.lease()
    first.hold(60)
    with pytest.raises(Overloaded, match="holding 60 of its 100 bytes"):
        second.hold(50)
    assert second.held == 0 and shared.used == 60
    with pytest.raises(TooLarge, match="needs 101 bytes"):
        first.hold(41)
    first.release()
    first.release()
    assert shared.used == 0
    second.hold(100)
    second.release()
    assert shared.used == 0


def test_many_threads_never_hold_more_than_the_budget() -> None:
    shared = budget.Budget(1000)
    peak = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal peak
        for _ in range(2000):
            lease = shared.lease()
            try:
                lease.hold(300)
                with lock:
                    peak = max(peak, shared.used)
            except Overloaded:
                pass
            finally:
                lease.release()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert shared.used == 0 and 0 < peak <= 900


@pytest.mark.parametrize("value", [[], [[]], [1], [[1, 2], [3, 4]], {"a": [1, [2, [3]]], "b": "x,y,[z"},
                                   [[[0.5] * 7] * 3] * 2, [[0.25, [1]] * 3000] * 2, {"inputs": [{"shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}]}])
def test_the_value_bound_is_never_below_the_values_parsed(value: object) -> None:
    def count(item: object) -> int:
        if isinstance(item, list):
            return sum(count(x) for x in item) + 1
        if isinstance(item, dict):
            return sum(count(x) for x in item.values()) + 1
        return 1

    assert budget.json_values_bound(json.dumps(value).encode()) >= count(value)


def test_counting_stops_at_the_models_size(tmp_path: Path) -> None:
    from mlpk.runtimes import model as model_module
    from mlpk.runtimes.config import Settings

    served = model_module.load(Settings(model_path=models.row30(tmp_path / "m")))
    limit = codec.max_numbers(served, 1000)
    assert limit > 30
    fine = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 30], "data": np.ones(30).tolist()}]}
    assert codec.loads(json.dumps(fine).encode(), served, max_numbers=limit) == fine
    over = json.dumps({"inputs": [{"data": [1.5] * (limit + 1)}]}).encode()
    with pytest.raises(ClientError, match=f"holds more than {limit} numbers"):
        codec.loads(over, served, max_numbers=limit)
    held: list[int] = []
    codec.loads(json.dumps(fine).encode(), served, hold=lambda size, what: held.append(size))
    assert held and held[0] >= budget.PER_JSON_VALUE * 30
