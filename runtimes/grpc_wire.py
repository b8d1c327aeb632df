"""gRPC's unary calls over HTTP/2 (RFC 9113; gRPC's PROTOCOL-HTTP2.md), served on asyncio beside the HTTP server.

Why not grpcio's server: measured here (bench/grpc_vs_http.py, one core), grpc.aio spent about 250 us of server CPU
per ModelInfer call and 135-160 us on a call that does nothing, the h2 library's state machine about 95 us on a
call that does nothing, while the HTTP path serves a whole binary inference call in about 65 us. This module is the
part of HTTP/2 that unary gRPC calls use, written for that: frames are parsed with slicing, a request's header
block is decoded by `hpack` (python-hyper's HPACK, which keeps the dynamic table in step) and remembered while the
table stays the same (gRPC clients send the same block call after call), the answers' header blocks are literals
made once (never indexed, so they need no table of ours), and the answer to a call that runs at once is written in
one piece with no task made for it.

What a peer may do and what it gets:
- the connection preface, SETTINGS (acknowledged, and followed), PING (answered), WINDOW_UPDATE (flow control both
  ways: each answer is sent within the peer's connection and stream windows and the peer's largest frame; the
  rest waits for its WINDOW_UPDATE), PRIORITY (ignored), GOAWAY (no new calls on it; the calls in flight finish),
  RST_STREAM (the call is cancelled: a waiting call leaves its queue), CONTINUATION, padding, frames of unknown
  types (ignored);
- the limits it is told in SETTINGS are enforced: streams at once (REFUSED_STREAM past them), the header block's
  size, the largest frame, the flow control windows (FLOW_CONTROL_ERROR); a frame against the protocol closes the
  connection with GOAWAY and its error code, as the RFC asks;
- the headers and the message of a call must arrive within `message_timeout_s`, a connection's preface too.

A call is `:method POST`, `content-type: application/grpc[+proto]`, `:path /SERVICE/METHOD` and exactly one
length-prefixed message; `grpc-timeout` sets its deadline. A compressed message (no compression is offered: the
answers say `grpc-accept-encoding: identity`) is UNIMPLEMENTED; a message larger than `max_message_bytes` is
RESOURCE_EXHAUSTED as soon as its length prefix arrives; an unknown method UNIMPLEMENTED. A message's bytes are
held on the server's memory budget while it is read and handled. Errors are answered as gRPC asks: trailers only,
`grpc-status`, `grpc-message` (percent-encoded), and any trailing metadata the application adds.
"""

from __future__ import annotations

import asyncio
import enum
import re
import struct
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import hpack
import hpack.exceptions

from mlpk.runtimes import logs
from mlpk.runtimes.budget import Budget, Lease
from mlpk.runtimes.errors import Overloaded, TooLarge
from mlpk.runtimes.writes import Writes

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types and flags (RFC 9113 section 6)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# error codes (section 7)
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x5, 0x6, 0x7, 0x8, 0x9
ENHANCE_YOUR_CALM = 0xB

# settings (section 6.5.2)
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 0x1, 0x2, 0x3, 0x4, 0x5
MAX_HEADER_LIST_SIZE = 0x6

DEFAULT_WINDOW = 65_535
DEFAULT_FRAME = 16_384
MAX_WINDOW = 2**31 - 1

# what this server tells its peers
STREAMS_AT_ONCE = 256
STREAM_WINDOW = 4 * 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
FRAME_SIZE = 1024 * 1024
HEADER_LIST_SIZE = 64 * 1024


class Status(enum.IntEnum):
    """gRPC's status codes."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    RESOURCE_EXHAUSTED = 8
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14


class Abort(Exception):
    """Ends a call with `status` (not OK), `message` and trailing metadata."""

    def __init__(self, status: Status, message: str, trailers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.trailers = tuple(trailers)


class Context:
    """What a handler knows of its call besides the message: the client's deadline, its metadata, the message's
    size; `at_end` takes what must run when the call is over, however it ends (answered, failed, cancelled)."""

    __slots__ = ("at_end", "deadline", "headers", "size")

    def __init__(self, deadline: float | None, headers: list[tuple[bytes, bytes]]) -> None:
        self.deadline = deadline  # time.monotonic() value, or None
        self.headers = headers
        self.size = 0
        self.at_end: list[Callable[[], None]] = []


@dataclass(frozen=True, slots=True)
class Method:
    """One method: its request parser, its answer's writer, and the handler, which returns the answer or an
    awaitable of it and raises Abort for any other ending."""

    parse: Callable[[bytes], Any]
    write: Callable[[Any], bytes]
    handle: Callable[[Any, Context], Any]


@dataclass(frozen=True, slots=True)
class Limits:
    max_message_bytes: int
    message_timeout_s: float


Observe = Callable[[str, str, float], None]  # (path, the status's name, seconds) of each call that ends


# --- HPACK output (RFC 7541) ---------------------------------------------------------------------------------------
def _integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(text: bytes) -> bytes:
    return _integer(len(text), 7) + text  # not Huffman-coded


Field = tuple[bytes, bytes]
_STATIC = {(b":status", b"200"): 8}  # the static table's entries these answers use
# Fields of every answer: added to the client's dynamic table the first time, one byte each after that.
_INDEXED = frozenset({(b"content-type", b"application/grpc"), (b"grpc-accept-encoding", b"identity"),
                      (b"grpc-status", b"0")})
RESPONSE_FIELDS: tuple[Field, ...] = ((b":status", b"200"), (b"content-type", b"application/grpc"),
                                      (b"grpc-accept-encoding", b"identity"))
OK_FIELDS: tuple[Field, ...] = ((b"grpc-status", b"0"),)
_MESSAGE_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


class _Encoder:
    """The header blocks of one connection's answers. The fields of _INDEXED go into the client's dynamic table once
    (literal with incremental indexing) and are referred to by index after that; every other field is a literal
    never indexed, which leaves the table alone, so the table holds those three and nothing else is ever evicted.
    A block that changes nothing in the table is the same bytes every time: kept."""

    def __init__(self) -> None:
        self.table: list[Field] = []  # the entries this encoder added, newest first (index 62 + position)
        self.size = 0
        self.limit = 4096  # the client's SETTINGS_HEADER_TABLE_SIZE (its default until it says otherwise)
        self.resized = False
        self._blocks: dict[tuple[Field, ...], bytes] = {}

    def resize(self, limit: int) -> None:
        """The client's SETTINGS_HEADER_TABLE_SIZE changed: the next block empties the table and sets its size."""
        self.limit = min(limit, 4096)
        self.table, self.size, self.resized = [], 0, True
        self._blocks.clear()

    def block(self, fields: tuple[Field, ...]) -> bytes:
        known = self._blocks.get(fields)
        if known is not None:
            return known
        out = bytearray()
        changed = self.resized
        if self.resized:  # two updates: to 0 (whatever the client's table held is gone), then to the size we use
            out += _integer(0, 5, 0x20) + _integer(self.limit, 5, 0x20)
            self.resized = False
        for field in fields:
            static = _STATIC.get(field)
            if static is not None:
                out += _integer(static, 7, 0x80)
            elif field in self.table:
                out += _integer(62 + self.table.index(field), 7, 0x80)
            elif field in _INDEXED and self.size + len(field[0]) + len(field[1]) + 32 <= self.limit:
                self.table.insert(0, field)
                self.size += len(field[0]) + len(field[1]) + 32
                changed = True
                out += b"\x40" + _string(field[0]) + _string(field[1])
            else:
                out += b"\x10" + _string(field[0]) + _string(field[1])
        block = bytes(out)
        if changed:
            self._blocks.clear()
        elif len(self._blocks) < 16:
            self._blocks[fields] = block
        return block


def _error_fields(status: Status, message: str, trailers: Iterable[tuple[str, str]]) -> tuple[Field, ...]:
    fields = [*RESPONSE_FIELDS, (b"grpc-status", str(int(status)).encode())]
    if message:
        fields.append((b"grpc-message", urllib.parse.quote(message, safe=_MESSAGE_SAFE).encode()))
    fields += [(name.lower().encode(), value.encode("latin-1")) for name, value in trailers]
    return tuple(fields)


_HEAD = struct.Struct(">HBBBI")  # a frame's 9 bytes: its 24-bit length (as 16 + 8 bits), type, flags, stream


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    size = len(payload)
    return _HEAD.pack(size >> 8, size & 0xFF, kind, flags, stream) + payload


_TIMEOUT = re.compile(rb"(\d{1,8})([HMSmun])")
_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


class ProtocolFault(Exception):
    """A frame against the protocol: the connection ends with GOAWAY and `code`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Stream:
    """One call."""

    __slots__ = ("answered", "context", "dispatched", "encoding", "ended", "expected", "id", "lease", "message",
                 "method", "path", "pending", "recv_window", "send_window", "started", "status", "task", "unacked")

    def __init__(self, stream_id: int, send_window: int, lease: Lease) -> None:
        self.id = stream_id
        self.method: Method | None = None
        self.path = ""
        self.context: Context | None = None
        self.message = bytearray()
        self.expected = -1  # the message's length once its prefix arrived
        self.ended = False  # the peer sent END_STREAM
        self.answered = False  # we answered (or the peer reset the stream)
        self.dispatched = False  # its handler was called
        self.status = Status.CANCELLED  # how it ended, once answered
        self.encoding = b""
        self.recv_window = STREAM_WINDOW
        self.unacked = 0
        self.send_window = send_window
        self.pending = memoryview(b"")  # the answer's DATA still waiting for window (then come the OK trailers)
        self.task: asyncio.Task[Any] | None = None
        self.lease = lease
        self.started = time.monotonic()


class GrpcConnection(asyncio.Protocol):
    """One client's HTTP/2 connection."""

    def __init__(self, server: GrpcServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.preface = False
        self.streams: dict[int, _Stream] = {}
        self.last_stream = 0
        self.decoder = hpack.Decoder(max_header_list_size=HEADER_LIST_SIZE)  # its table: 4096 bytes, the default
        self._known_blocks: dict[bytes, list[tuple[bytes, bytes]]] = {}
        self._table_mark: object = None
        self.header_stream_id = 0  # a header block continues (CONTINUATION) on this stream
        self.header_block = b""
        self.header_end_stream = False
        self.peer_frame = DEFAULT_FRAME
        self.peer_window = DEFAULT_WINDOW  # the peer's initial stream window
        self.send_window = DEFAULT_WINDOW  # the connection's
        self.recv_window = CONNECTION_WINDOW
        self.recv_unacked = 0
        self.encoder = _Encoder()
        self.going_away = False
        self.closed = False
        self.opened = time.monotonic()
        self.blocked: list[_Stream] = []  # streams with data waiting for window

    # --- asyncio ------------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(self)
        settings = b"".join(key.to_bytes(2, "big") + value.to_bytes(4, "big") for key, value in (
            (MAX_CONCURRENT_STREAMS, STREAMS_AT_ONCE), (INITIAL_WINDOW_SIZE, STREAM_WINDOW),
            (MAX_FRAME_SIZE, FRAME_SIZE), (MAX_HEADER_LIST_SIZE, HEADER_LIST_SIZE)))
        self._write(_frame(SETTINGS, 0, 0, settings) + _frame(
            WINDOW_UPDATE, 0, 0, (CONNECTION_WINDOW - DEFAULT_WINDOW).to_bytes(4, "big")))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for stream in list(self.streams.values()):
            self._forget(stream, cancel=True)
        self.transport = None

    def pause_writing(self) -> None:
        if self.transport is not None:  # a peer that does not read: read nothing more from it until it does
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.buffer:  # the rest of a frame (a large one comes in many pieces): added in place
            self.buffer += data
            buffer: bytes | bytearray = self.buffer
        else:
            buffer = data
        try:
            if not self.preface:
                if len(buffer) < len(PREFACE):
                    if not PREFACE.startswith(buffer):
                        raise ProtocolFault(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                    self.buffer = bytearray(buffer)
                    return
                if not buffer.startswith(PREFACE):
                    raise ProtocolFault(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self.preface = True
                buffer = buffer[len(PREFACE):]
            at, size = 0, len(buffer)
            out: list[bytes] = []
            unpack = _HEAD.unpack_from
            while size - at >= 9:
                high, low, kind, flags, stream_id = unpack(buffer, at)
                length = high << 8 | low
                if length > FRAME_SIZE:
                    raise ProtocolFault(FRAME_SIZE_ERROR, f"a frame of {length} bytes, past SETTINGS_MAX_FRAME_SIZE "
                                                             f"{FRAME_SIZE}")
                if size - at < 9 + length:
                    break
                payload = bytes(buffer[at + 9:at + 9 + length])  # (a copy only of a bytearray: a header block is a
                # key of _known_blocks; bytes(b) of bytes b is b itself)
                at += 9 + length
                self._frame(kind, flags, stream_id & 0x7FFFFFFF, payload, out)
                if self.closed:
                    return
            if at == size:
                self.buffer = bytearray()
            elif buffer is self.buffer:
                del self.buffer[:at]
            else:
                self.buffer = bytearray(buffer[at:])
            if self.recv_unacked >= CONNECTION_WINDOW // 2:
                out.append(_frame(WINDOW_UPDATE, 0, 0, self.recv_unacked.to_bytes(4, "big")))
                self.recv_window += self.recv_unacked
                self.recv_unacked = 0
            if out:
                self._write(b"".join(out))
        except ProtocolFault as err:
            self._fail(err.code, str(err))

    def _write(self, data: bytes) -> None:
        """Write `data` after what this connection wrote before (runtimes/writes.py holds it to the turn's end)."""
        if self.transport is not None:
            self.server.writes.write(self.transport, data)

    def close(self) -> None:
        """Close the connection once what it wrote is out."""
        if self.transport is not None:
            self.server.writes.flush()
            self.transport.close()

    # --- frames -------------------------------------------------------------------------------------------------
    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes, out: list[bytes]) -> None:
        if self.header_stream_id and (kind != CONTINUATION or stream_id != self.header_stream_id):
            raise ProtocolFault(PROTOCOL_ERROR, "a header block was interrupted by another frame")
        if kind == DATA:
            self._data(flags, stream_id, payload, out)
        elif kind == HEADERS:
            self._headers(flags, stream_id, payload, out)
        elif kind == CONTINUATION:
            if not self.header_stream_id:
                raise ProtocolFault(PROTOCOL_ERROR, "CONTINUATION without a header block to continue")
            self._header_fragment(payload, flags, out)
        elif kind == SETTINGS:
            self._settings(flags, stream_id, payload, out)
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload, out)
        elif kind == PING:
            if stream_id or len(payload) != 8:
                raise ProtocolFault(PROTOCOL_ERROR if stream_id else FRAME_SIZE_ERROR, "a malformed PING")
            if not flags & ACK:
                out.append(_frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            if not stream_id or len(payload) != 4:
                raise ProtocolFault(PROTOCOL_ERROR if not stream_id else FRAME_SIZE_ERROR, "a malformed RST_STREAM")
            if stream_id > self.last_stream:
                raise ProtocolFault(PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
            stream = self.streams.get(stream_id)
            if stream is not None:  # the client cancelled the call
                stream.answered = True
                stream.status = Status.CANCELLED
                self._forget(stream, cancel=True)
        elif kind == GOAWAY:
            self.going_away = True
            self._close_if_done()
        elif kind == PRIORITY:
            if len(payload) != 5:
                raise ProtocolFault(FRAME_SIZE_ERROR, "a PRIORITY frame that is not 5 bytes")
        elif kind == PUSH_PROMISE:
            raise ProtocolFault(PROTOCOL_ERROR, "a client may not send PUSH_PROMISE")
        # any other type is an extension this server does not know: ignored (section 4.1)

    def _data(self, flags: int, stream_id: int, payload: bytes, out: list[bytes]) -> None:
        if not stream_id:
            raise ProtocolFault(PROTOCOL_ERROR, "DATA on stream 0")
        flow = len(payload)
        self.recv_window -= flow
        if self.recv_window < 0:
            raise ProtocolFault(FLOW_CONTROL_ERROR, "DATA past the connection's flow control window")
        self.recv_unacked += flow  # everything is taken at once: held for a call, or dropped
        if flags & PADDED:
            payload = _unpad(payload)
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self.last_stream:
                raise ProtocolFault(PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            return  # a stream this server answered or reset already
        if stream.ended:
            self._reset(stream, STREAM_CLOSED, out)
            return
        stream.recv_window -= flow
        if stream.recv_window < 0:
            self._reset(stream, FLOW_CONTROL_ERROR, out)
            return
        stream.ended = bool(flags & END_STREAM)
        if not self._take(stream, payload, out):
            return
        if stream.ended:
            self._call(stream, out)
            return
        stream.unacked += flow
        if stream.unacked >= STREAM_WINDOW // 2:
            out.append(_frame(WINDOW_UPDATE, 0, stream.id, stream.unacked.to_bytes(4, "big")))
            stream.recv_window += stream.unacked
            stream.unacked = 0

    def _take(self, stream: _Stream, payload: bytes, out: list[bytes]) -> bool:
        """Add `payload` to the call's message, held on the budget; refuse a message past the limits (False)."""
        if not payload:
            return True
        message = stream.message
        try:
            stream.lease.hold(len(payload), lambda: f"a gRPC message of at least {len(message) + len(payload)} bytes")
        except (TooLarge, Overloaded) as err:
            trailers = (("retry-after", str(err.retry_after_s)),) if isinstance(err, Overloaded) else ()
            self._answer_error(stream, Status.RESOURCE_EXHAUSTED, err.message, trailers, out)
            return False
        message += payload
        if stream.expected < 0 and len(message) >= 5:
            stream.expected = int.from_bytes(message[1:5], "big")
            limit = self.server.limits.max_message_bytes
            if stream.expected > limit:
                self._answer_error(stream, Status.RESOURCE_EXHAUSTED,
                                   f"a gRPC message of {stream.expected} bytes is larger than the server takes "
                                   f"({limit} bytes, MLPACK_MAX_BODY_BYTES); send smaller batches", (), out)
                return False
        if stream.expected >= 0 and len(message) > stream.expected + 5:
            self._answer_error(stream, Status.INVALID_ARGUMENT,
                               f"{self._name(stream)} is a unary method: send exactly one message", (), out)
            return False
        return True

    def _headers(self, flags: int, stream_id: int, payload: bytes, out: list[bytes]) -> None:
        if not stream_id:
            raise ProtocolFault(PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & PADDED:
            payload = _unpad(payload)
        if flags & PRIORITY_FLAG:
            if len(payload) < 5:
                raise ProtocolFault(FRAME_SIZE_ERROR, "a HEADERS frame too short for its priority")
            payload = payload[5:]
        self.header_stream_id = stream_id
        self.header_block = b""
        self.header_end_stream = bool(flags & END_STREAM)
        self._header_fragment(payload, flags, out)

    def _header_fragment(self, fragment: bytes, flags: int, out: list[bytes]) -> None:
        self.header_block += fragment
        if len(self.header_block) > HEADER_LIST_SIZE:
            raise ProtocolFault(ENHANCE_YOUR_CALM, f"a header block of over {HEADER_LIST_SIZE} bytes "
                                                      "(SETTINGS_MAX_HEADER_LIST_SIZE)")
        if not flags & END_HEADERS:
            return
        stream_id, block, end_stream = self.header_stream_id, self.header_block, self.header_end_stream
        self.header_stream_id, self.header_block = 0, b""
        headers = self._decode(block)  # every block is decoded, to keep the table in step with the peer's
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers from the client
            if not end_stream:
                raise ProtocolFault(PROTOCOL_ERROR, f"a second header block on stream {stream_id} without "
                                                       "END_STREAM")
            if stream.ended:
                self._reset(stream, STREAM_CLOSED, out)
                return
            stream.ended = True
            self._call(stream, out)
            return
        if stream_id <= self.last_stream:
            if stream_id % 2 == 0:
                raise ProtocolFault(PROTOCOL_ERROR, f"HEADERS on stream {stream_id}, which a client cannot open")
            return  # trailers on a stream this server answered already
        if stream_id % 2 == 0:
            raise ProtocolFault(PROTOCOL_ERROR, f"HEADERS on stream {stream_id}, which a client cannot open")
        self.last_stream = stream_id
        if self.going_away or self.server.draining or len(self.streams) >= STREAMS_AT_ONCE:
            out.append(_frame(RST_STREAM, 0, stream_id, REFUSED_STREAM.to_bytes(4, "big")))
            return
        stream = _Stream(stream_id, self.peer_window, self.server.budget.lease())
        self.streams[stream_id] = stream
        stream.ended = end_stream
        self._open(stream, headers, out)

    def _decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """The header list of `block`. A block seen before while the dynamic table is as it was then is not
        decoded again: decoding it would give the same list and leave the table as it is."""
        table = self.decoder.header_table.dynamic_entries
        mark = table[0] if table else None
        if mark is not self._table_mark:
            self._known_blocks.clear()
            self._table_mark = mark
        known = self._known_blocks.get(block)
        if known is not None:
            return known
        size = self.decoder.header_table.maxsize
        try:
            headers = cast("list[tuple[bytes, bytes]]", self.decoder.decode(block, raw=True))
        except hpack.exceptions.OversizedHeaderListError as err:
            raise ProtocolFault(ENHANCE_YOUR_CALM, f"a header list too large: {err}") from None
        except hpack.exceptions.HPACKError as err:
            raise ProtocolFault(COMPRESSION_ERROR, f"a header block that does not decode: {err}") from None
        table = self.decoder.header_table.dynamic_entries
        if (table[0] if table else None) is self._table_mark and size == self.decoder.header_table.maxsize and \
                len(self._known_blocks) < 64:
            self._known_blocks[block] = headers  # it left the table as it was
        else:
            self._known_blocks.clear()
            self._table_mark = table[0] if table else None
        return headers

    def _open(self, stream: _Stream, headers: list[tuple[bytes, bytes]], out: list[bytes]) -> None:
        """A new call: check its headers, find its method."""
        path = method_name = content_type = encoding = timeout = b""
        for name, value in headers:
            if name == b":path":
                path = value
            elif name == b":method":
                method_name = value
            elif name == b"content-type":
                content_type = value
            elif name == b"grpc-timeout":
                timeout = value
            elif name == b"grpc-encoding":
                encoding = value
        stream.path = path.decode("latin-1")
        deadline = None
        if timeout:
            found = _TIMEOUT.fullmatch(timeout)
            if found is None:
                self._answer_error(stream, Status.INVALID_ARGUMENT, f"grpc-timeout {timeout.decode('latin-1')!r:.40} "
                                   "is not a timeout (1 to 8 digits and one of H M S m u n)", (), out)
                return
            deadline = stream.started + int(found[1]) * _UNITS[found[2]]
        stream.context = Context(deadline, headers)
        if method_name != b"POST" or not (content_type == b"application/grpc" or
                                           content_type.startswith((b"application/grpc+", b"application/grpc;"))):
            self._answer_error(stream, Status.UNIMPLEMENTED,
                               f"not a gRPC call: {method_name.decode('latin-1')} with content-type "
                               f"{content_type.decode('latin-1')!r:.60} (gRPC calls are POST application/grpc)",
                               (), out)
            return
        method = self.server.methods.get(stream.path)
        if method is None:
            self._answer_error(stream, Status.UNIMPLEMENTED, f"unknown method {stream.path!r:.120}", (), out)
            return
        stream.method = method
        stream.encoding = b"" if encoding == b"identity" else encoding
        if stream.ended:
            self._call(stream, out)

    # --- calls --------------------------------------------------------------------------------------------------
    def _name(self, stream: _Stream) -> str:
        return stream.path.rsplit("/", 1)[-1] or "the method"

    def _call(self, stream: _Stream, out: list[bytes]) -> None:
        """Run the call whose message is complete."""
        message = stream.message
        if stream.method is None or stream.context is None:
            return
        if len(message) < 5 or len(message) != stream.expected + 5:
            self._answer_error(stream, Status.INVALID_ARGUMENT, f"{self._name(stream)} is a unary method: send "
                               f"exactly one message (got {len(message)} bytes, not one length-prefixed message)",
                               (), out)
            return
        if message[0]:
            encoding = stream.encoding.decode("latin-1")
            self._answer_error(stream, Status.UNIMPLEMENTED if encoding else Status.INTERNAL,
                               f"a message compressed with {encoding!r:.40}; this server takes identity (uncompressed) "
                               "messages only" if encoding else "a compressed message without grpc-encoding", (), out)
            return
        deadline = stream.context.deadline
        if deadline is not None and deadline <= time.monotonic():
            self._answer_error(stream, Status.DEADLINE_EXCEEDED, "the call's deadline passed before it was read",
                               (), out)
            return
        method = stream.method
        stream.context.size = len(message) - 5
        try:
            request = method.parse(bytes(memoryview(message)[5:]))
        except Exception as err:  # noqa: BLE001 - protobuf's DecodeError, or its message's RuntimeWarning
            self._answer_error(stream, Status.INVALID_ARGUMENT,
                               f"the {self._name(stream)} request is not a valid message: {err}", (), out)
            return
        stream.dispatched = True
        self.server.in_flight += 1
        try:
            answer = method.handle(request, stream.context)
        except Abort as err:
            self._answer_error(stream, err.status, err.message, err.trailers, out)
            return
        except Exception as err:  # noqa: BLE001 - a bug in the handler: UNKNOWN, logged
            self._internal_error(stream, err, out)
            return
        if isinstance(answer, Awaitable):
            stream.task = task = self.loop.create_task(_awaited(answer))
            task.add_done_callback(lambda done: self._answered(stream, done))
            return
        self._answer(stream, method.write(answer), out)

    def _answered(self, stream: _Stream, task: asyncio.Task[Any]) -> None:
        stream.task = None
        if task.cancelled() or stream.answered or self.closed:
            self._forget(stream)
            return
        out: list[bytes] = []
        err = task.exception()
        if isinstance(err, Abort):
            self._answer_error(stream, err.status, err.message, err.trailers, out)
        elif err is not None:
            self._internal_error(stream, err, out)
        else:
            assert stream.method is not None
            self._answer(stream, stream.method.write(task.result()), out)
        if out:
            self._write(b"".join(out))

    def _internal_error(self, stream: _Stream, err: BaseException, out: list[bytes]) -> None:
        logs.get().error("internal error", exc_info=err, extra={"fields": {"path": stream.path}})
        self._answer_error(stream, Status.UNKNOWN, "internal error", (), out)

    def _answer(self, stream: _Stream, message: bytes, out: list[bytes]) -> None:
        """Headers, the message and the OK trailers (the message within the peer's windows; the rest waits)."""
        encoder = self.encoder
        out.append(_frame(HEADERS, END_HEADERS, stream.id, encoder.block(RESPONSE_FIELDS)))
        data = len(message).to_bytes(5, "big") + message  # the first byte (0: not compressed) is the length's top
        stream.answered = True
        stream.status = Status.OK
        if len(data) <= self.send_window and len(data) <= stream.send_window and len(data) <= self.peer_frame \
                and not self.blocked:
            self.send_window -= len(data)
            stream.send_window -= len(data)
            out.append(_frame(DATA, 0, stream.id, data))
            out.append(_frame(HEADERS, END_HEADERS | END_STREAM, stream.id, encoder.block(OK_FIELDS)))
            self._done(stream, out)
            return
        stream.pending = memoryview(data)
        self.blocked.append(stream)
        self._flush(out)

    def _answer_error(self, stream: _Stream, status: Status, message: str, trailers: Iterable[tuple[str, str]],
                      out: list[bytes]) -> None:
        """Trailers only: the call ends with `status`."""
        if stream.answered:
            return
        stream.answered = True
        stream.status = status
        stream.message = bytearray()
        stream.lease.release()
        block = self.encoder.block(_error_fields(status, message, trailers))
        out.append(_frame(HEADERS, END_HEADERS | END_STREAM, stream.id, block))
        self._done(stream, out)

    def _done(self, stream: _Stream, out: list[bytes]) -> None:
        """Our side of `stream` ended: it is closed once the peer's is too, else told to stop sending."""
        if not stream.ended:
            out.append(_frame(RST_STREAM, 0, stream.id, NO_ERROR.to_bytes(4, "big")))
        self._forget(stream)

    def _flush(self, out: list[bytes]) -> None:
        """Send what waits for window, oldest answer first."""
        while self.blocked:
            stream = self.blocked[0]
            while stream.pending:
                room = min(self.send_window, stream.send_window, self.peer_frame)
                if room <= 0:
                    return
                piece = bytes(stream.pending[:room])
                stream.pending = stream.pending[room:]
                self.send_window -= len(piece)
                stream.send_window -= len(piece)
                out.append(_frame(DATA, 0, stream.id, piece))
            out.append(_frame(HEADERS, END_HEADERS | END_STREAM, stream.id, self.encoder.block(OK_FIELDS)))
            self.blocked.pop(0)
            self._done(stream, out)

    def _reset(self, stream: _Stream, code: int, out: list[bytes]) -> None:
        out.append(_frame(RST_STREAM, 0, stream.id, code.to_bytes(4, "big")))
        stream.answered = True
        self._forget(stream, cancel=True)

    def _forget(self, stream: _Stream, *, cancel: bool = False) -> None:
        """Drop `stream`, whose call is over (`cancel`: stop its handler first, which then drops it)."""
        if stream.task is not None:
            if cancel:
                stream.task.cancel()
            return  # _answered forgets it
        if self.streams.pop(stream.id, None) is not None:
            stream.lease.release()
            if stream in self.blocked:
                self.blocked.remove(stream)
            if stream.dispatched:
                self.server.in_flight -= 1
            if stream.context is not None:
                for end in stream.context.at_end:
                    end()
            if stream.method is not None:  # (an unknown path is not a label: clients could make them without end)
                self.server.observe(stream.path, stream.status.name, time.monotonic() - stream.started)
            self._close_if_done()

    def _close_if_done(self) -> None:
        if (self.going_away or self.server.draining) and not self.streams:
            self.close()

    def _window_update(self, stream_id: int, payload: bytes, out: list[bytes]) -> None:
        if len(payload) != 4:
            raise ProtocolFault(FRAME_SIZE_ERROR, "a WINDOW_UPDATE that is not 4 bytes")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if not stream_id:
            if not increment:
                raise ProtocolFault(PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise ProtocolFault(FLOW_CONTROL_ERROR, "the connection's window past 2^31-1")
        else:
            stream = self.streams.get(stream_id)
            if stream is None:
                if stream_id > self.last_stream:
                    raise ProtocolFault(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
                return
            if not increment:
                self._reset(stream, PROTOCOL_ERROR, out)
                return
            stream.send_window += increment
            if stream.send_window > MAX_WINDOW:
                self._reset(stream, FLOW_CONTROL_ERROR, out)
                return
        if self.blocked:
            self._flush(out)

    def _settings(self, flags: int, stream_id: int, payload: bytes, out: list[bytes]) -> None:
        if stream_id:
            raise ProtocolFault(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise ProtocolFault(FRAME_SIZE_ERROR, "a SETTINGS acknowledgement with a payload")
            return
        if len(payload) % 6:
            raise ProtocolFault(FRAME_SIZE_ERROR, "a SETTINGS frame whose length is not a multiple of 6")
        for at in range(0, len(payload), 6):
            key, value = int.from_bytes(payload[at:at + 2], "big"), int.from_bytes(payload[at + 2:at + 6], "big")
            if key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ProtocolFault(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE past 2^31-1")
                for stream in self.streams.values():
                    stream.send_window += value - self.peer_window
                self.peer_window = value
            elif key == MAX_FRAME_SIZE:
                if not DEFAULT_FRAME <= value <= 2**24 - 1:
                    raise ProtocolFault(PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value} out of range")
                self.peer_frame = value
            elif key == HEADER_TABLE_SIZE:
                self.encoder.resize(value)
            elif key == ENABLE_PUSH and value > 1:
                raise ProtocolFault(PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH past 1")
        out.append(_frame(SETTINGS, ACK, 0))
        if self.blocked:
            self._flush(out)

    def _fail(self, code: int, message: str) -> None:
        """End the connection for a protocol error."""
        if self.transport is None or self.closed:
            return
        logs.get().info("closing a gRPC connection", extra={"fields": {"reason": message, "code": code}})
        self._write(_frame(GOAWAY, 0, 0, self.last_stream.to_bytes(4, "big") + code.to_bytes(4, "big") +
                           message.encode()[:200]))
        self.closed = True
        for stream in list(self.streams.values()):
            self._forget(stream, cancel=True)
        self.close()

    def sweep(self, now: float, timeout_s: float) -> None:
        """Close a connection whose preface did not come in time; end calls whose message did not."""
        if not self.preface:
            if now - self.opened > timeout_s:
                self._fail(PROTOCOL_ERROR, "no connection preface")
            return
        out: list[bytes] = []
        for stream in list(self.streams.values()):
            if not stream.ended and not stream.answered and now - stream.started > timeout_s:
                self._answer_error(stream, Status.DEADLINE_EXCEEDED,
                                   f"the request message did not all arrive within {timeout_s:g} s "
                                   "(MLPACK_BODY_TIMEOUT)", (), out)
        if out:
            self._write(b"".join(out))

    def drain(self) -> None:
        """No new calls on this connection: GOAWAY, and close once the calls in flight are answered."""
        if self.transport is None or self.closed:
            return
        self._write(_frame(GOAWAY, 0, 0, self.last_stream.to_bytes(4, "big") + NO_ERROR.to_bytes(4, "big")))
        self._close_if_done()


def _unpad(payload: bytes) -> bytes:
    if not payload:
        raise ProtocolFault(PROTOCOL_ERROR, "a padded frame without its pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise ProtocolFault(PROTOCOL_ERROR, "padding as long as the frame")
    return payload[1:len(payload) - pad]


async def _awaited(answer: Awaitable[Any]) -> Any:
    return await answer


class GrpcServer:
    """The listening socket and its connections."""

    def __init__(self, methods: dict[str, Method], limits: Limits, budget: Budget, observe: Observe) -> None:
        self.methods = methods
        self.limits = limits
        self.budget = budget
        self.observe = observe
        self.in_flight = 0  # calls whose handler was called and that are not over
        self.loop = asyncio.get_running_loop()
        self.writes = Writes(self.loop)
        self.connections: set[GrpcConnection] = set()
        self.draining = False
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def listen(self, host: str, port: int) -> None:
        self._server = await self.loop.create_server(lambda: GrpcConnection(self), host, port)
        self._sweeper = self.loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for connection in list(self.connections):
                connection.sweep(now, self.limits.message_timeout_s)

    async def stop(self, grace_s: float) -> None:
        """Stop listening, tell every client (GOAWAY), and wait up to `grace_s` for the calls in flight."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.drain()
        deadline = time.monotonic() + grace_s
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
