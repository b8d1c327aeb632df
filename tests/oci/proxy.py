"""A small HTTP front for the real test registry that injects faults and demands auth.

No real part here can drop a connection on cue or speak the token flow (Debian's docker-registry token auth needs
a signed-JWT token service), so this front adds exactly those behaviours and forwards everything else to the real
registry unchanged (Host header included, so the registry's upload Locations point back at the front).
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-authorization"}


@dataclass
class Fault:
    """Fail the `nth` (1-based) request matching method and path fragment: answer 503, drop the connection
    before forwarding ('drop'), or forward it and then drop the answer ('lose-answer')."""

    method: str
    fragment: str
    action: str
    nth: int = 1
    seen: int = 0
    fired: bool = False


@dataclass
class Front:
    upstream: str  # host:port of the real registry
    faults: list[Fault] = field(default_factory=list)
    mode: str = "open"  # open | basic | bearer
    user: str = "alice"
    password: str = "s3cret"
    log: list[str] = field(default_factory=list)
    token_scopes: list[list[str]] = field(default_factory=list)
    host: str = ""


def _repo(path: str) -> str:
    """The repository name in a /v2/<name>/(blobs|manifests|tags)/... path."""
    match = re.match(r"^/v2/(.+?)/(?:blobs|manifests|tags)/", path)
    return match.group(1) if match else ""


def start(front: Front) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _drop(self) -> None:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

        def _authorized(self) -> bool:
            header = self.headers.get("Authorization", "")
            basic = "Basic " + base64.b64encode(f"{front.user}:{front.password}".encode()).decode()
            if front.mode == "basic":
                return header == basic
            if front.mode == "bearer":
                return header == "Bearer tok-good"
            return True

        def handle_one(self) -> None:
            body = self._body()
            url = urlsplit(self.path)
            front.log.append(f"{self.command} {url.path}")
            if url.path == "/token":
                scopes = parse_qs(url.query).get("scope", [])
                front.token_scopes.append(scopes)
                basic = "Basic " + base64.b64encode(f"{front.user}:{front.password}".encode()).decode()
                if self.headers.get("Authorization") != basic:
                    return self._send(401, b'{"details":"bad credentials"}', {})
                return self._send(200, json.dumps({"token": "tok-good"}).encode(),
                                  {"Content-Type": "application/json"})
            if not self._authorized():
                challenge = (f'Bearer realm="http://{front.host}/token",service="front",'
                             f'scope="repository:{_repo(url.path)}:pull,push"'
                             if front.mode == "bearer" else 'Basic realm="front"')
                return self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": challenge})
            for fault in front.faults:
                if not fault.fired and fault.method == self.command and fault.fragment in url.path:
                    fault.seen += 1
                    if fault.seen == fault.nth:
                        fault.fired = True
                        if fault.action == "503":
                            return self._send(503, b"try later", {})
                        if fault.action == "drop":
                            return self._drop()
                        self._forward(body)  # lose-answer: the registry acts, the client never hears
                        return self._drop()
            status, payload, headers = self._forward(body)
            self._send(status, payload, headers)

        def _forward(self, body: bytes) -> tuple[int, bytes, dict[str, str]]:
            conn = http.client.HTTPConnection(front.upstream, timeout=60)
            headers: dict[str, str] = {}
            for key, value in self.headers.items():  # repeated headers (Accept) are joined, not overwritten
                if key.lower() not in HOP and key.lower() != "authorization":
                    headers[key] = f"{headers[key]}, {value}" if key in headers else value
            conn.request(self.command, self.path, body=body if body or self.command in ("PUT", "PATCH", "POST")
                         else None, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            out = {k: v for k, v in response.getheaders() if k.lower() not in HOP | {"content-length"}}
            conn.close()
            return response.status, payload, out

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_one

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    front.host = f"127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
