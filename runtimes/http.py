"""HTTP/1.1 for the inference server: connections on asyncio, requests parsed by httptools
(llhttp, the parser of Node.js: request smuggling forms such as Content-Length beside Transfer-Encoding are refused
there), one request at a time per connection (pipelined requests wait their turn; answers keep their order).

Why not an ASGI server: at the sizes inference requests come in, the ASGI machinery itself (a scope, receive and
send coroutines and a task per request, then a framework's request and response objects and a thread hop) cost
several times the model's run; measured side by side in bench/serving.py, this layer plus the same handlers serves
about 1.5x what the same handlers serve as a bare ASGI app on uvicorn, and several times Starlette's.

The application (server.py) sees three calls per request (`App`): `begin` once its headers are in (it may refuse the
request there, before the body is read: an unknown route, a body over the limit, a model version at its queue
limit), `respond` once its body is in (an answer, or an awaitable of one), and `end` once the answer is written or
the client is gone.

Per request it enforces: request line and headers of at most MAX_HEADER_BYTES (431), arriving within
`header_timeout_s` of the request's first byte (408; slow-header clients cannot pin a connection; the server sets
it to MLPACK_BODY_TIMEOUT); a body held on the
memory budget as it arrives (all of a declared Content-Length at once; budget.py), refused past `max_body_bytes` as
soon as that is known (413), and all of it within `body_timeout_s` of the headers (408). A connection idle for
`keepalive_s` between requests is closed. A malformed request is answered 400 and its connection closed; a refusal
before the body is read closes the connection too unless the body is small enough to read and drop (SMALL_BODY).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import http
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httptools

from mlpk.runtimes import logs
from mlpk.runtimes.api import Reply, error_reply
from mlpk.runtimes.codec import dumps
from mlpk.runtimes.budget import Budget, Lease
from mlpk.runtimes.errors import BodyTimeout, ClientError, TooLarge
from mlpk.runtimes.writes import Writes

MAX_HEADER_BYTES = 64 * 1024
TICK_S = 0.25  # how often the connections' deadlines are checked
MAX_HEADERS = 128
SMALL_BODY = 64 * 1024  # a refused request's body up to this size is read and dropped, keeping the connection
_PHRASES = {status.value: status.phrase.encode() for status in http.HTTPStatus}
_STARTS: dict[tuple[int, str], bytes] = {}  # the status line and content type of each kind of answer, made once
_SERVER_ERROR = Reply(500, b'{"error":"internal error in the server; see its log"}')


@dataclass(slots=True)
class Exchange:
    """One request, as far as it has arrived, and what the application keeps on it between its calls."""

    method: str
    path: str
    headers: dict[str, str]
    lease: Lease
    arrived: float = field(default_factory=time.monotonic)
    body: bytes = b""
    keep_alive: bool = True
    http_10: bool = False
    state: Any = None  # the application's own (the route, a scheduler place)
    status: int = 0  # of the answer, once written; 499 when the client went away first


class App(Protocol):
    """What the server asks of the application, per request (module docstring)."""

    def begin(self, exchange: Exchange) -> Reply | None: ...

    def respond(self, exchange: Exchange) -> Reply | Awaitable[Reply]: ...

    def end(self, exchange: Exchange) -> None: ...


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The per-request limits of the module docstring."""

    max_body_bytes: int
    body_timeout_s: float
    header_timeout_s: float = 30.0
    keepalive_s: float = 5.0


class Connection(asyncio.Protocol):
    """One client connection (see the module docstring)."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = bytearray()
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.current: Exchange | None = None  # the request being received
        self.refusal: Reply | None = None  # the current request's answer, decided before its body
        self.body: bytes | bytearray = b""
        self.size = 0
        self.declared: int | None = None
        self.ready: collections.deque[tuple[Exchange, Reply | None]] = collections.deque()  # received, unanswered
        self.answering: Exchange | None = None
        self.task: asyncio.Task[Reply] | None = None
        self.deadline = 0.0  # time.monotonic() at which `on_deadline` runs (HttpServer's sweep)
        self.on_deadline: Callable[[], None] | None = None
        self.writable: asyncio.Event | None = None  # set when the client reads again after a full buffer
        self.headers_done = False
        self.closing_after = False  # close once the answers in progress are written
        self.closing = False
        self.upgrade_offered = False  # the request in its headers offers a protocol upgrade, which is not taken
        self.replaying = False  # a new parser reads the body of that request: its synthetic head is not a request

    # --- asyncio.Protocol --------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        self._arm(self.server.limits.keepalive_s, self._idle)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if not self.headers_done:
            self.header_bytes += len(data)
        try:
            while True:
                try:
                    self.parser.feed_data(data)
                    break
                except httptools.HttpParserUpgrade as upgrade:
                    if not self.upgrade_offered or self.current is None:
                        raise
                    data = self._decline_upgrade() + data[upgrade.args[0]:]
        except httptools.HttpParserUpgrade:
            self.closing_after = True  # the rest is another protocol: answer what was asked, then close
        except httptools.HttpParserError as err:
            self._fail(400, f"malformed HTTP request: {err}")
            return
        if not self.headers_done and self.header_bytes > MAX_HEADER_BYTES:
            self._fail(431, f"the request line and headers are over {MAX_HEADER_BYTES} bytes")
            return
        self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        self._disarm()
        answering = self.answering
        if self.task is not None and not self.task.done():
            # A call waiting for a run leaves the queue (scheduler.py); work already in a thread finishes first,
            # and the request is ended (its memory given back to the budget) when the task is (_answered).
            self.task.cancel()
            answering = None
        for exchange in [answering, *(item[0] for item in self.ready), self.current]:
            if exchange is not None and exchange.lease is not None and not exchange.status:
                exchange.status = 499
                self._end(exchange)
        self.ready.clear()
        self.answering = self.current = None
        if self.writable is not None:
            self.writable.set()

    def eof_received(self) -> bool | None:
        return None  # the client will send no more: close (as uvicorn does), which drops what it waits for

    def pause_writing(self) -> None:
        self.writable = asyncio.Event()

    def resume_writing(self) -> None:
        if self.writable is not None:
            self.writable.set()
            self.writable = None
            self._next()

    def _decline_upgrade(self) -> bytes:
        """Serve a request that offers an upgrade (`Upgrade: h2c`, as `curl --http2` and Java's HttpClient send it)
        as the HTTP/1.1 request it also is, as RFC 9110 section 7.8 lets a server. llhttp stops at the end of its
        headers and reads no body; a new parser reads the body, framed as the headers said, then what follows: this
        returns the head that frames it, for the bytes after the headers."""
        self.upgrade_offered = False
        self.replaying = True
        exchange = self.current
        assert exchange is not None
        head = b"POST / HTTP/1.1\r\n"
        if self.declared is not None:
            head += b"content-length: %d\r\n" % self.declared
        elif "chunked" in exchange.headers.get("transfer-encoding", "").lower():
            head += b"transfer-encoding: chunked\r\n"
        self.parser = httptools.HttpRequestParser(self)
        return head + b"\r\n"

    # --- httptools callbacks ----------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.replaying:
            return
        self._disarm()
        self._arm(self.server.limits.header_timeout_s, self._header_timeout)
        self.url.clear()
        self.headers = []
        self.headers_done = False
        self.refusal = None
        self.body = b""
        self.size = 0
        self.declared = None
        self.current = Exchange("", "", {}, None)  # type: ignore[arg-type]  # the lease comes with the headers

    def on_url(self, url: bytes) -> None:
        if not self.replaying:
            self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.replaying:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.replaying:
            return
        self.upgrade_offered = self.parser.should_upgrade()
        exchange = self.current
        assert exchange is not None
        self.headers_done = True
        self._disarm()
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in self.headers}
        if len(headers) < len(self.headers):  # a repeated field: its values joined, in order (RFC 9110 5.3)
            headers = {}
            for name, value in self.headers:
                key, text = name.decode("latin-1").lower(), value.decode("latin-1")
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
        exchange.headers = headers
        exchange.method = self.parser.get_method().decode("ascii", "replace")
        exchange.keep_alive = self.parser.should_keep_alive() and not self.server.draining
        exchange.http_10 = self.parser.get_http_version() == "1.0"
        exchange.lease = self.server.budget.lease()
        self.server.started()
        try:
            if len(self.headers) > MAX_HEADERS:
                raise _Refused(431, f"the request has {len(self.headers)} headers, over {MAX_HEADERS}")
            if self.header_bytes > MAX_HEADER_BYTES:  # all of it may have come in one piece: count exactly
                size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
                if size > MAX_HEADER_BYTES:
                    raise _Refused(431, f"the request line and headers are over {MAX_HEADER_BYTES} bytes")
            url = bytes(self.url)
            try:
                if url[:1] == b"/" and b"?" not in url and b"%" not in url and b"#" not in url:  # the usual form
                    exchange.path = url.decode("ascii")
                else:
                    exchange.path = urllib.parse.unquote(httptools.parse_url(url).path.decode("ascii"))
            except (httptools.HttpParserInvalidURLError, UnicodeDecodeError, ValueError):
                raise _Refused(400, f"the request target {bytes(self.url)[:200]!r} is not a valid URL") from None
            declared = headers.get("content-length")
            self.declared = int(declared) if declared is not None and declared.isdigit() else None
            self.refusal = self.server.app.begin(exchange)
            if self.refusal is None and self.declared:
                exchange.lease.hold(self.declared, self._body_phrase)
        except _Refused as refused:  # the request itself is malformed: answer it, then close
            self.refusal = Reply(refused.status, _error_body(refused.message))
            exchange.keep_alive = False
            self.closing_after = True
        except ClientError as err:
            self.refusal = error_reply(err)
        except Exception:  # noqa: BLE001 - a bug in the application: a 500, logged, and the connection lives on
            logs.get().exception("internal error", extra={"fields": {"path": exchange.path}})
            self.refusal = _SERVER_ERROR
        self.header_bytes = 0
        expects_body = bool(self.declared) or (self.declared is None and
                                               "chunked" in headers.get("transfer-encoding", "").lower())
        if self.refusal is not None:
            if expects_body and (self.declared is None or self.declared > SMALL_BODY or "expect" in headers):
                exchange.keep_alive = False  # do not read a body nobody will use: answer now, then close
                self.ready.append((exchange, self.refusal))
                self.current = None
                self.closing_after = True
                return
        elif expects_body and "100-continue" in headers.get("expect", "").lower() and self.transport is not None:
            self.server.writes.write(self.transport, b"HTTP/1.1 100 Continue\r\n\r\n")
        if expects_body:
            self._arm(self.server.limits.body_timeout_s, self._body_timeout)

    def on_body(self, chunk: bytes) -> None:
        exchange = self.current
        self.size += len(chunk)
        if exchange is None or self.refusal is not None:
            return  # a refused request's small body: read and dropped
        limits = self.server.limits
        try:
            if self.size > limits.max_body_bytes:
                raise TooLarge(f"request body of more than {limits.max_body_bytes} bytes is over the limit "
                               f"(MLPACK_MAX_BODY_BYTES); send smaller batches")
            if self.declared is None:
                exchange.lease.hold(len(chunk), self._body_phrase)
        except ClientError as err:
            self.refusal = error_reply(err)
            exchange.keep_alive = False
            self.ready.append((exchange, self.refusal))
            self.current = None
            self.closing_after = True
            return
        if self.declared is None:
            if not isinstance(self.body, bytearray):
                self.body = bytearray(self.body)
            self.body += chunk
        elif len(chunk) == self.size == self.declared:
            self.body = chunk  # the whole body in one piece: kept as it came
        else:  # filled in place, so a large body is never held twice
            if not isinstance(self.body, bytearray):
                self.body = bytearray(self.declared)
            self.body[self.size - len(chunk):self.size] = chunk

    def _body_phrase(self) -> str:
        return f"a request body of {self.declared if self.declared is not None else f'over {self.size}'} bytes"

    def on_message_complete(self) -> None:
        if self.upgrade_offered:
            return  # llhttp ends the message at its headers to hand over to the new protocol: _decline_upgrade
        self.replaying = False
        self._disarm()
        self.headers_done = False
        exchange = self.current
        if exchange is None:  # already answered (refused mid-body)
            return
        if self.declared is not None and self.size != self.declared:  # llhttp refuses this first; never trust it
            self.refusal = Reply(400, _error_body(f"the request body has {self.size} bytes, but its Content-Length "
                                                  f"says {self.declared}"))
        exchange.body = self.body  # type: ignore[assignment]  # a bytearray reads as bytes wherever a body is read
        self.body = b""
        self.ready.append((exchange, self.refusal))
        self.current = None
        if self.transport is not None and len(self.ready) > 1:
            self.transport.pause_reading()  # pipelined requests: one at a time

    # --- answering --------------------------------------------------------------------------------------------
    def _next(self) -> None:
        """Answer the oldest received request, if none is being answered and the client reads what we send."""
        while self.answering is None and self.ready and self.writable is None and not self.closing:
            exchange, refusal = self.ready.popleft()
            self.answering = exchange
            if refusal is not None:
                self._send(exchange, refusal)
                continue
            try:
                answer = self.server.app.respond(exchange)
            except ClientError as err:
                answer = error_reply(err)
            except Exception:  # noqa: BLE001 - a bug in the application: a 500, logged
                logs.get().exception("internal error", extra={"fields": {"path": exchange.path}})
                answer = _SERVER_ERROR
            if isinstance(answer, Reply):
                self._send(exchange, answer)
                continue
            self.task = self.loop.create_task(_answer(answer, exchange))
            self.task.add_done_callback(functools.partial(self._answered, exchange=exchange))
            return
        if (self.transport is not None and not self.closing and self.answering is None and not self.ready):
            if self.closing_after:
                self._close()
                return
            self.transport.resume_reading()
            if self.current is None:
                self._arm(self.server.limits.keepalive_s, self._idle)

    def _answered(self, task: asyncio.Task[Reply], exchange: Exchange) -> None:
        self.task = None
        if task.cancelled() or self.closing:
            if not exchange.status:
                exchange.status = 499
                self._end(exchange)
            return
        self._send(exchange, task.result())
        self._next()

    def _send(self, exchange: Exchange, reply: Reply) -> None:
        """Write the answer to `exchange`, then let the application end it."""
        keep = exchange.keep_alive and not self.server.draining and not self.closing_after
        start = _STARTS.get((reply.status, reply.content_type))
        if start is None:
            start = _STARTS[(reply.status, reply.content_type)] = b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\n" % (
                reply.status, _PHRASES.get(reply.status, b""), reply.content_type.encode("latin-1"))
        parts = [start, b"content-length: %d\r\n" % len(reply.body)]
        for name, value in reply.headers:
            parts.append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
        if not keep:
            parts.append(b"connection: close\r\n")
        elif exchange.http_10:
            parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")
        transport = self.transport
        if transport is not None and not self.closing:
            if len(reply.body) < 16384:
                parts.append(reply.body)
                self.server.writes.write(transport, b"".join(parts))
            else:  # not copied into one piece with its head
                self.server.writes.write(transport, b"".join(parts))
                self.server.writes.write(transport, reply.body)
        exchange.status = reply.status
        self.answering = None
        self._end(exchange)
        if not keep:  # requests pipelined behind this one are not answered (RFC 9112 section 9.6)
            while self.ready:
                dropped = self.ready.popleft()[0]
                dropped.status = 499
                self._end(dropped)
            self._close()

    def _end(self, exchange: Exchange) -> None:
        try:
            self.server.app.end(exchange)
        except Exception:  # noqa: BLE001 - a bug in the application's bookkeeping must not kill the connection
            logs.get().exception("internal error ending a request", extra={"fields": {"path": exchange.path}})
        finally:
            if exchange.lease is not None:
                exchange.lease.release()
            self.server.ended(exchange)

    # --- timers and failures ----------------------------------------------------------------------------------
    def _arm(self, seconds: float, then: Callable[[], None]) -> None:
        """Run `then` unless disarmed within `seconds` (give or take the sweep's TICK_S: a time per connection, not
        a timer per request, which would cost a small request more than its parsing)."""
        self.deadline = time.monotonic() + seconds
        self.on_deadline = then

    def _disarm(self) -> None:
        self.on_deadline = None

    def _idle(self) -> None:
        if self.answering is None and not self.ready and self.current is None:
            self._close()

    def _header_timeout(self) -> None:
        self._fail(408, f"the request headers did not arrive within {self.server.limits.header_timeout_s:g} s")

    def _body_timeout(self) -> None:
        exchange = self.current
        if exchange is None:
            return
        err = BodyTimeout(f"the request body did not arrive within {self.server.limits.body_timeout_s:g} s "
                          f"({self.size} of {self.declared if self.declared is not None else 'an unknown number of'} "
                          "bytes received; MLPACK_BODY_TIMEOUT); send it at once, or in smaller requests")
        exchange.keep_alive = False
        self.ready.append((exchange, error_reply(err)))
        self.current = None
        self.closing_after = True
        self._next()

    def _fail(self, status: int, message: str) -> None:
        """Answer a request that cannot be parsed or finished, then close: the stream is no longer in step."""
        exchange = self.current
        self.current = None
        self.closing_after = True
        if exchange is None or exchange.lease is None:  # never reached the application: answer and close
            if self.answering is not None or self.ready:
                self._next()  # the answers before it are written first, then the connection closes
                return
            if self.transport is not None and not self.closing:
                body = _error_body(message)
                self.server.writes.write(self.transport, b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                                         b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (
                                             status, _PHRASES.get(status, b""), len(body), body))
            self._close()
            return
        exchange.keep_alive = False
        self.ready.append((exchange, Reply(status, _error_body(message))))
        self._next()

    def _close(self) -> None:
        self._disarm()
        if self.transport is not None and not self.closing:
            self.closing = True
            self.server.writes.flush()  # what this connection's answers hold goes out before it closes
            self.transport.close()

    def shutdown(self) -> None:
        """Close now if idle, else after the answer in progress (the server is draining)."""
        if self.answering is None and not self.ready and self.current is None:
            self._close()
        else:
            self.closing_after = True


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error_body(message: str) -> bytes:
    return dumps({"error": message})


async def _answer(pending: Awaitable[Reply], exchange: Exchange) -> Reply:
    try:
        return await pending
    except ClientError as err:
        return error_reply(err)
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - a bug in the application: a 500, logged
        logs.get().exception("internal error", extra={"fields": {"path": exchange.path}})
        return _SERVER_ERROR


class HttpServer:
    """Listens, keeps the connections, and drains them on shutdown."""

    def __init__(self, app: App, limits: HttpLimits, budget: Budget) -> None:
        self.app = app
        self.limits = limits
        self.budget = budget
        self.loop = asyncio.get_running_loop()
        self.writes = Writes(self.loop)
        self.connections: set[Connection] = set()
        self.in_flight = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def listen(self, host: str, port: int) -> None:
        self._server = await self.loop.create_server(lambda: Connection(self), host, port, backlog=1024,
                                                     reuse_address=True)
        self._sweeper = self.loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Every TICK_S, run the actions of the connections whose deadline has passed."""
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            for connection in list(self.connections):
                action = connection.on_deadline
                if action is not None and now >= connection.deadline:
                    connection.on_deadline = None
                    try:
                        action()
                    except Exception:  # noqa: BLE001 - one connection's bug must not stop the others' deadlines
                        logs.get().exception("internal error at a connection's deadline")

    def started(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def ended(self, _: Exchange) -> None:
        self.in_flight -= 1
        if self.in_flight <= 0:
            self._idle.set()

    async def drain(self, grace_s: float) -> None:
        """Stop listening, close idle connections, let requests in flight finish (up to `grace_s`), close the rest."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.shutdown()
        try:
            await asyncio.wait_for(self._idle.wait(), grace_s)
        except TimeoutError:
            logs.warning("requests still in flight at the end of the grace period; closing them",
                         requests=self.in_flight, grace_s=grace_s)
        for connection in list(self.connections):
            connection._close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        await asyncio.sleep(0)
