"""The server's HTTP/2 for gRPC (runtimes/grpc_wire.py) driven frame by frame by h2, python-hyper's HTTP/2 state
machine (an implementation of the RFC this project did not write), against the real server process: a call whose
header block comes in CONTINUATION frames and whose message comes padded and in pieces among a PING and a frame of
an unknown type; an answer larger than the client's flow control window, sent as the window opens; frames against
the protocol answered with GOAWAY and its code; every refusal a gRPC status in trailers (unknown method, not gRPC,
compressed, a bad grpc-timeout, two messages, a message past the limit refused from its length prefix before the
client finished sending it, a message that never finishes); and the connection or server still serving after each.
tritonclient.grpc (grpcio's C core) drives the same server in test_grpc.py, grpc-js (Node.js) in test_grpc_node.py.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from mlpk.runtimes import proto
from tests.conftest import free_port
from tests.runtime import models
from tests.runtime.conftest import Served

INFER = f"/{proto.SERVICE}/ModelInfer"
WIDTH = 2048
GRPC = [(":method", "POST"), (":scheme", "http"), (":authority", "localhost"), ("content-type", "application/grpc"),
        ("te", "trailers")]


def message(body: bytes, compressed: bool = False) -> bytes:
    return bytes((int(compressed),)) + len(body).to_bytes(4, "big") + body


def infer_body(x: np.ndarray) -> bytes:
    request = proto.message("ModelInferRequest")(model_name="heavy", raw_input_contents=[x.tobytes()])
    request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    return request.SerializeToString()


@dataclass
class Answer:
    headers: dict[str, str] = field(default_factory=dict)
    data: bytes = b""
    trailers: dict[str, str] = field(default_factory=dict)
    reset: int | None = None
    data_frames: list[int] = field(default_factory=list)

    @property
    def status(self) -> int:
        return int((self.trailers or self.headers)["grpc-status"])

    @property
    def message_text(self) -> str:
        from urllib.parse import unquote
        return unquote((self.trailers or self.headers).get("grpc-message", ""))

    def output(self) -> np.ndarray:
        assert self.status == 0, self.message_text
        length = int.from_bytes(self.data[1:5], "big")
        assert self.data[0] == 0 and len(self.data) == 5 + length
        response = proto.message("ModelInferResponse").FromString(self.data[5:])
        return np.frombuffer(response.raw_output_contents[0], np.float32).reshape(tuple(response.outputs[0].shape))


class Client:
    """One HTTP/2 connection with h2's state machine; `raw` sends bytes past it."""

    def __init__(self, port: int, window: int | None = None, table: int | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        if table is not None:
            self.conn.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: table})
        self.flush()
        self.answers: dict[int, Answer] = {}
        self.events: list[h2.events.Event] = []

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def start(self, path: str = INFER, extra: list[tuple[str, str]] | None = None,
              headers: list[tuple[str, str]] | None = None) -> int:
        stream = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream, [(":path", path), *(headers if headers is not None else GRPC), *(extra or [])])
        self.answers[stream] = Answer()
        return stream

    def read(self, until: Callable[[], bool], seconds: float = 15) -> None:
        deadline = time.monotonic() + seconds
        while not until():
            assert time.monotonic() < deadline, "no answer in time"
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            for event in self.conn.receive_data(data):
                self.events.append(event)
                answer = self.answers.get(getattr(event, "stream_id", 0) or 0)
                if isinstance(event, h2.events.ResponseReceived) and answer is not None:
                    answer.headers = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived) and answer is not None:
                    answer.data += event.data
                    answer.data_frames.append(len(event.data))
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.TrailersReceived) and answer is not None:
                    answer.trailers = dict(event.headers)
                elif isinstance(event, h2.events.StreamReset) and answer is not None:
                    answer.reset = event.error_code
            self.flush()

    def finished(self, stream: int) -> bool:
        return any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == stream
                   for e in self.events) or bool(self.answers[stream].trailers) or \
            "grpc-status" in self.answers[stream].headers

    def call(self, body: bytes, path: str = INFER, extra: list[tuple[str, str]] | None = None) -> Answer:
        stream = self.start(path, extra)
        self.conn.send_data(stream, body, end_stream=True)
        self.flush()
        self.read(lambda: self.finished(stream))
        return self.answers[stream]

    def close(self) -> None:
        self.sock.close()


def frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream, payload) of each frame in `data`."""
    found, at = [], 0
    while at + 9 <= len(data):
        high, low, kind, flags, stream = struct.unpack_from(">HBBBI", data, at)
        length = high << 8 | low
        found.append((kind, flags, stream & 0x7FFFFFFF, data[at + 9:at + 9 + length]))
        at += 9 + length
    return found


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">HBBBI", len(payload) >> 8, len(payload) & 0xFF, kind, flags, stream) + payload


def goaway_of(sock: socket.socket) -> int:
    """The error code of the GOAWAY the server sends before it closes `sock`."""
    received = b""
    sock.settimeout(10)
    while chunk := sock.recv(65536):
        received += chunk
    codes = [int.from_bytes(payload[4:8], "big") for kind, _, _, payload in frames(received) if kind == 0x7]
    assert codes, f"no GOAWAY in {received!r:.200}"
    return codes[-1]


@pytest.fixture(scope="module")
def heavy(server_factory: Callable[..., Served], tmp_path_factory: pytest.TempPathFactory) -> tuple[int, np.ndarray]:
    """A server of one MatMul (1x2048 @ 2048x2048: an 8 KiB answer), its gRPC port and its weight."""
    directory = models.heavy(tmp_path_factory.mktemp("wire") / "heavy", depth=1, width=WIDTH)
    port = free_port()
    server_factory(directory, MLPACK_GRPC_PORT=str(port), MLPACK_MAX_BODY_BYTES=str(64 * 1024),
                   MLPACK_BODY_TIMEOUT="1")
    weight = numpy_helper.to_array(onnx.load(str(Path(directory) / "model.onnx")).graph.initializer[0])
    return port, weight


def sample(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, WIDTH)).astype(np.float32)


def assert_answers(client: Client, weight: np.ndarray, seed: int) -> None:
    """A ModelInfer call on `client` answers sample(seed) @ weight."""
    np.testing.assert_allclose(client.call(message(infer_body(sample(seed)))).output(), sample(seed) @ weight,
                               rtol=1e-4, atol=1e-4)


def test_a_call_in_continuation_frames_padded_pieces_among_ping_and_unknown_frames(heavy: tuple[int, np.ndarray]
                                                                                    ) -> None:
    port, weight = heavy
    client = Client(port)
    x = sample(1)
    stream = client.start()
    sent = client.conn.data_to_send()
    (kind, flags, stream_id, block), = [f for f in frames(sent) if f[0] == 0x1]
    assert flags & 0x4  # h2 wrote it whole: split it into HEADERS + two CONTINUATIONs by hand
    pieces = [block[:3], block[3:7], block[7:]]
    client.raw(frame(0x1, flags & ~0x4, stream_id, pieces[0]) + frame(0x9, 0, stream_id, pieces[1]) +
               frame(0x9, 0x4, stream_id, pieces[2]))
    client.raw(frame(0x6, 0, 0, b"12345678") + frame(0x20, 0, 0, b"an extension"))  # PING, an unknown type
    body = message(infer_body(x))
    client.conn.send_data(stream, body[:100], pad_length=17)
    client.conn.send_data(stream, body[100:], end_stream=True, pad_length=200)
    client.flush()
    client.read(lambda: client.finished(stream))
    np.testing.assert_allclose(client.answers[stream].output(), x @ weight, rtol=1e-4, atol=1e-4)
    assert any(isinstance(e, h2.events.PingAckReceived) and e.ping_data == b"12345678" for e in client.events)
    assert_answers(client, weight, 2)  # the same connection, the header table in step
    client.close()


def test_a_call_that_arrives_a_few_bytes_at_a_time(heavy: tuple[int, np.ndarray]) -> None:
    port, weight = heavy
    client = Client(port)
    x = sample(9)
    stream = client.start()
    client.conn.send_data(stream, message(infer_body(x)), end_stream=True)
    data = client.conn.data_to_send()
    for at in range(0, len(data), 7):  # frames split across reads, the header block too
        client.raw(data[at:at + 7])
        if at < 200:
            time.sleep(0.002)
    client.read(lambda: client.finished(stream))
    np.testing.assert_allclose(client.answers[stream].output(), x @ weight, rtol=1e-4, atol=1e-4)
    client.close()


def test_an_answer_larger_than_the_clients_window_waits_for_it_to_open(heavy: tuple[int, np.ndarray]) -> None:
    port, weight = heavy
    client = Client(port, window=100)
    x = sample(3)
    answer = client.call(message(infer_body(x)))
    np.testing.assert_allclose(answer.output(), x @ weight, rtol=1e-4, atol=1e-4)
    assert max(answer.data_frames) <= 100 and sum(answer.data_frames) > WIDTH * 4  # 8 KiB in frames of 100 bytes
    client.close()


@pytest.mark.parametrize("table", [0, 100, 4096, 65536])
def test_answers_follow_the_header_table_size_the_client_sets(heavy: tuple[int, np.ndarray], table: int) -> None:
    """The answers' fields go into the client's HPACK table while they fit the size it allows (0: none; 100: one of
    three); h2 checks each block against its table, so a block that assumed more would fail to decode."""
    port, weight = heavy
    client = Client(port, table=table)
    for seed in range(10, 14):
        assert_answers(client, weight, seed)
    assert client.call(message(b""), path=f"/{proto.SERVICE}/Nothing").status == 12
    client.conn.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: 50})  # smaller, mid-connection
    client.flush()
    for seed in range(14, 17):
        assert_answers(client, weight, seed)
    client.close()


@pytest.mark.parametrize("bad", ["preface", "data on stream 0", "push promise", "window update of 0"])
def test_frames_against_the_protocol_end_the_connection_with_goaway(heavy: tuple[int, np.ndarray], bad: str) -> None:
    port, weight = heavy
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(0x4, 0, 0, b"")
    sock.sendall({"preface": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                  "data on stream 0": preface + frame(0x0, 0, 0, b"x"),
                  "push promise": preface + frame(0x5, 0x4, 1, b"\x00\x00\x00\x02"),
                  "window update of 0": preface + frame(0x8, 0, 0, b"\x00\x00\x00\x00")}[bad])
    assert goaway_of(sock) == 0x1  # PROTOCOL_ERROR
    sock.close()
    client = Client(port)  # the server goes on serving
    assert_answers(client, weight, 4)
    client.close()


def test_refusals_are_grpc_statuses_and_the_connection_goes_on(heavy: tuple[int, np.ndarray]) -> None:
    port, weight = heavy
    client = Client(port)
    body = infer_body(sample(5))
    unknown = client.call(message(b""), path=f"/{proto.SERVICE}/NoSuchMethod")
    assert unknown.status == 12 and "NoSuchMethod" in unknown.message_text  # UNIMPLEMENTED
    stream = client.start(headers=[(n, "text/plain" if n == "content-type" else v) for n, v in GRPC])
    client.conn.send_data(stream, message(body), end_stream=True)
    client.flush()
    client.read(lambda: client.finished(stream))
    assert client.answers[stream].status == 12 and "application/grpc" in client.answers[stream].message_text
    gzip = client.call(message(body, compressed=True), extra=[("grpc-encoding", "gzip")])
    assert gzip.status == 12 and "gzip" in gzip.message_text
    assert client.call(message(body, compressed=True)).status == 13  # INTERNAL: compressed, and no encoding named
    timeout = client.call(message(body), extra=[("grpc-timeout", "soon")])
    assert timeout.status == 3 and "grpc-timeout" in timeout.message_text
    twice = client.call(message(body) + message(body))
    assert twice.status == 3 and "exactly one message" in twice.message_text
    garbage = client.call(message(b"\xff\xff\xff"))
    assert garbage.status == 3 and "not a valid message" in garbage.message_text
    mistake = client.call(message(infer_body(np.ones((1, 7), np.float32))))
    assert mistake.status == 3 and "[-1, 2048]" in mistake.message_text  # codec's words, as HTTP's 400
    np.testing.assert_allclose(client.call(message(body)).output(), sample(5) @ weight, rtol=1e-4, atol=1e-4)
    client.close()


def test_a_message_past_the_limit_is_refused_from_its_length_before_it_is_sent(heavy: tuple[int, np.ndarray]) -> None:
    port, weight = heavy
    client = Client(port)
    stream = client.start()
    client.conn.send_data(stream, b"\x00" + (1 << 20).to_bytes(4, "big") + b"\x00" * 1000)  # of 1 MiB; no END_STREAM
    client.flush()
    client.read(lambda: client.finished(stream))
    answer = client.answers[stream]
    assert answer.status == 8 and "65536" in answer.message_text  # RESOURCE_EXHAUSTED, MLPACK_MAX_BODY_BYTES
    assert answer.data == b""
    assert_answers(client, weight, 6)
    client.close()


def test_a_message_that_never_finishes_is_deadline_exceeded(heavy: tuple[int, np.ndarray]) -> None:
    port, weight = heavy
    client = Client(port)
    stream = client.start()
    client.conn.send_data(stream, message(infer_body(sample(7)))[:50])  # and nothing more (MLPACK_BODY_TIMEOUT=1)
    client.flush()
    started = time.monotonic()
    client.read(lambda: client.finished(stream), seconds=10)
    assert client.answers[stream].status == 4 and "MLPACK_BODY_TIMEOUT" in client.answers[stream].message_text
    assert time.monotonic() - started < 5
    assert_answers(client, weight, 8)
    client.close()
