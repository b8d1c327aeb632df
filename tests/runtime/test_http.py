"""The server's HTTP/1.1 layer (runtimes/http.py) on raw sockets, where clients differ from tritonclient and httpx:
pipelined requests, HTTP/1.0, `Expect: 100-continue`, chunked bodies, refusals before and after the body, oversized
or slow headers, malformed requests and smuggling forms, idle keep-alive connections, and a client that leaves
mid-body. Each is answered as its section of RFC 9112 says, with a JSON error, never a 5xx, and the server keeps
serving (and gives back the memory it held) afterwards.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.runtime.conftest import Served

TIMEOUT_S = 3
BODY = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
                              {"name": "h", "datatype": "FP16", "shape": [1, 3], "data": [1, 2, 3]},
                              {"name": "ids", "datatype": "INT64", "shape": [1], "data": [7]},
                              {"name": "mask", "datatype": "BOOL", "shape": [1], "data": [True]},
                              {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}).encode()
INFER = "/v2/models/mixed/infer"


@pytest.fixture(scope="module")
def served(server_factory: Callable[..., Served], model_dirs: dict[str, Path]) -> Served:
    return server_factory(model_dirs["mixed"], MLPACK_BODY_TIMEOUT=str(TIMEOUT_S), MLPACK_MAX_BODY_BYTES=str(1 << 20),
                          MLPACK_MAX_BUFFERED_BYTES=str(8 << 20))


@pytest.fixture
def sock(served: Served) -> Iterator[socket.socket]:
    host, port = served.host.split(":")
    connection = socket.create_connection((host, int(port)), timeout=30)
    yield connection
    connection.close()


def post(path: str, body: bytes, *extra: str, version: str = "1.1") -> bytes:
    head = [f"POST {path} HTTP/{version}", "Host: test", "Content-Type: application/json",
            f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def read_answer(sock: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One answer off `sock` (`buffer` keeps what arrived after it)."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer; got {bytes(buffer)!r}"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside an answer"
        rest += chunk
    buffer[:] = rest[length:]
    return int(lines[0].split()[1]), headers, rest[:length]


def closed(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def error_of(body: bytes) -> str:
    return json.loads(body)["error"]


def test_pipelined_requests_are_answered_in_order(sock: socket.socket) -> None:
    sock.sendall(post(INFER, BODY) + b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n" + post("/nope", b"{}") +
                 post(INFER, BODY))
    buffer = bytearray()
    answers = [read_answer(sock, buffer) for _ in range(4)]
    assert [status for status, _, _ in answers] == [200, 200, 404, 200]
    assert json.loads(answers[0][2])["model_name"] == "mixed" and json.loads(answers[1][2]) == {"live": True}


def test_clients_sending_at_once_get_every_answer_in_order_then_the_close(served: Served) -> None:
    """Answers made in one turn of the loop are held to its end (runtimes/writes.py): sixteen clients whose
    pipelined requests arrive together, the last asking to close, each get all their answers, in order (the request
    ids say which), before the server closes their connection."""
    host, port = served.host.split(":")
    clients = [socket.create_connection((host, int(port)), timeout=30) for _ in range(16)]
    try:
        for number, client in enumerate(clients):
            ids = [f"{number}-{turn}" for turn in range(4)]
            bodies = [json.dumps({**json.loads(BODY), "id": request_id}).encode() for request_id in ids]
            client.sendall(b"".join(post(INFER, body, *(("Connection: close",) if turn == 3 else ()))
                                    for turn, body in enumerate(bodies)))
        for number, client in enumerate(clients):
            buffer = bytearray()
            answers = [read_answer(client, buffer) for _ in range(4)]
            assert [(status, json.loads(body)["id"]) for status, _, body in answers] == \
                [(200, f"{number}-{turn}") for turn in range(4)]
            assert answers[3][1]["connection"] == "close" and not buffer and closed(client)
    finally:
        for client in clients:
            client.close()


def test_http_10_is_answered_and_closed_unless_kept_alive(sock: socket.socket, served: Served) -> None:
    sock.sendall(post(INFER, BODY, version="1.0"))
    status, headers, _ = read_answer(sock, bytearray())
    assert status == 200 and headers["connection"] == "close" and closed(sock)
    host, port = served.host.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as kept:
        buffer = bytearray()
        for _ in range(2):
            kept.sendall(post(INFER, BODY, "Connection: keep-alive", version="1.0"))
            status, headers, _ = read_answer(kept, buffer)
            assert status == 200 and headers["connection"] == "keep-alive"


def test_expect_100_continue_then_the_answer(sock: socket.socket) -> None:
    head, _, body = post(INFER, BODY, "Expect: 100-continue").partition(b"\r\n\r\n")
    sock.sendall(head + b"\r\n\r\n")
    buffer = bytearray()
    status, _, _ = read_answer(sock, buffer)
    assert status == 100
    sock.sendall(body)
    assert read_answer(sock, buffer)[0] == 200


def test_a_refused_expect_100_is_answered_before_the_body_and_closed(sock: socket.socket) -> None:
    sock.sendall(b"POST /v2/models/nope/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    status, _, body = read_answer(sock, bytearray())
    assert status == 404 and "unknown model 'nope'" in error_of(body) and closed(sock)


def test_chunked_bodies_are_read(sock: socket.socket) -> None:
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (BODY[:10], BODY[10:]))
    sock.sendall(f"POST {INFER} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + chunks +
                 b"0\r\n\r\n")
    assert read_answer(sock, bytearray())[0] == 200


def test_a_refused_small_body_keeps_the_connection(sock: socket.socket) -> None:
    buffer = bytearray()
    sock.sendall(post("/v2/models/nope/infer", BODY))
    status, _, body = read_answer(sock, buffer)
    assert status == 404 and "unknown model 'nope'" in error_of(body)
    sock.sendall(post(INFER, BODY))
    assert read_answer(sock, buffer)[0] == 200


def test_a_body_over_the_limit_is_refused_unread_and_closed(sock: socket.socket, served: Served) -> None:
    sock.sendall(f"POST {INFER} HTTP/1.1\r\nHost: t\r\nContent-Length: {2 << 20}\r\n\r\n".encode() + b"[" * 1000)
    status, headers, body = read_answer(sock, bytearray())
    assert status == 413 and "MLPACK_MAX_BODY_BYTES" in error_of(body) and headers["connection"] == "close"
    assert closed(sock)


@pytest.mark.parametrize(("raw", "status", "words"), [
    (b"GET /v2 HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 70000 + b"\r\n\r\n", 431, "headers are over"),
    (b"GARBAGE\r\n\r\n", 400, "malformed HTTP request"),
    (b"POST /v2/models/mixed/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400, "malformed HTTP request"),
    (b"POST /v2/models/mixed/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd",
     400, "malformed HTTP request"),
    (b"GET /v2 HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n", 431,
     "headers, over"),
])
def test_malformed_and_oversized_requests_are_4xx_and_closed(sock: socket.socket, raw: bytes, status: int,
                                                             words: str) -> None:
    sock.sendall(raw)
    got, _, body = read_answer(sock, bytearray())
    assert got == status and words in error_of(body), body
    assert closed(sock)


def test_slow_headers_and_slow_bodies_are_408(sock: socket.socket, served: Served) -> None:
    sock.sendall(b"POST /v2/models/mixed/infer HTTP/1.1\r\nHost: t\r\n")  # and nothing more
    started = time.monotonic()
    status, _, body = read_answer(sock, bytearray())
    assert status == 408 and "headers did not arrive" in error_of(body)
    assert TIMEOUT_S - 0.1 <= time.monotonic() - started < TIMEOUT_S + 5
    host, port = served.host.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as slow:
        slow.sendall(post(INFER, BODY)[:-10])
        status, _, body = read_answer(slow, bytearray())
        assert status == 408 and "body did not arrive" in error_of(body)


def test_an_idle_keep_alive_connection_is_closed(sock: socket.socket) -> None:
    buffer = bytearray()
    sock.sendall(post(INFER, BODY))
    assert read_answer(sock, buffer)[0] == 200
    started = time.monotonic()
    assert closed(sock) and time.monotonic() - started < 10


def test_a_client_leaving_mid_body_gives_its_memory_back(served: Served) -> None:
    """Eight clients each declare 1 MiB, send half and leave: the budget (8 MiB) is free again, so a request that
    needs most of it is served, and nothing was logged as an error."""
    host, port = served.host.split(":")
    for _ in range(8):
        with socket.create_connection((host, int(port)), timeout=30) as leaving:
            leaving.sendall(f"POST {INFER} HTTP/1.1\r\nHost: t\r\nContent-Length: {1 << 20}\r\n\r\n".encode()
                            + b" " * (1 << 19))
    time.sleep(0.5)
    big = BODY + b" " * ((1 << 20) - len(BODY) - 1)
    answer = httpx.post(served.url + INFER, content=big, timeout=30)
    assert answer.status_code == 200, answer.text
    assert not [line for line in served.log_lines() if line.get("level") == "error"]
