"""A client for the OCI distribution API, on httpx: auth (see auth.py), retries with backoff on 5xx, 429 and
dropped connections, manifests, blob HEAD/GET, and blob uploads (monolithic or chunked, cross-repository mount,
resumed at the registry's offset after a failure).

httpx was chosen over requests and urllib: its `Auth` generator flow expresses the bearer-token dance (401 →
token → retry) in one place, it streams request and response bodies from and to files, and it has per-phase
timeouts; it is also already a dependency of the test stack.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import httpx

from mlpk.packager.errors import RegistryError
from mlpk.packager.oci import mediatype
from mlpk.packager.oci.auth import Credentials, RegistryAuth, credentials_for
from mlpk.packager.oci.digest import CHUNK, Digest, HashingReader
from mlpk.packager.oci.reference import Reference

ACCEPT = ", ".join((*mediatype.MANIFESTS, *mediatype.INDEXES))
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
MONOLITHIC_MAX = 64 << 20  # blobs up to this size go in one PUT; larger ones in PATCH chunks of this size


class _Retry(Exception):
    """A failure worth another attempt (a 5xx/429 answer or a dropped connection)."""


class RegistryClient:
    """One registry host; `retries` attempts per request with exponential backoff from `backoff_s`."""

    def __init__(self, registry: str, *, scheme: str = "https", credentials: Credentials | None = None,
                 retries: int = 5, backoff_s: float = 0.2, chunk_size: int = MONOLITHIC_MAX,
                 timeout_s: float = 60.0) -> None:
        self.registry = registry
        self.base = f"{scheme}://{registry}"
        self.retries = retries
        self.backoff_s = backoff_s
        self.chunk_size = chunk_size
        self.auth = RegistryAuth(credentials)
        self.http = httpx.Client(auth=self.auth, timeout=httpx.Timeout(timeout_s, connect=10.0),
                                 follow_redirects=True)

    @classmethod
    def for_reference(cls, ref: Reference, **kwargs: Any) -> RegistryClient:
        kwargs.setdefault("credentials", credentials_for(ref.registry))
        return cls(ref.registry, scheme=ref.scheme, **kwargs)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ---------------------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.base}{path}"

    def request(self, method: str, path: str, *, ok: tuple[int, ...], stream: bool = False,
                body: Callable[[], Any] | None = None, content: bytes | None = None, scope: str | None = None,
                retries_inner: bool = True, **kwargs: Any) -> httpx.Response:
        """Send with retries; `body` is a factory so a retried upload re-reads its bytes from the start.
        `retries_inner=False` makes one attempt (for upload steps whose caller decides how to resume)."""
        if scope:
            self.auth.add_scope(scope)
        url = self._url(path)
        attempts = self.retries + 1 if retries_inner else 1
        for attempt in range(attempts):
            try:
                req = self.http.build_request(method, url, content=body() if body is not None else content, **kwargs)
                response = self.http.send(req, stream=stream)
                if response.status_code in RETRY_STATUS:
                    response.read()
                    raise _Retry(f"HTTP {response.status_code}")
            except (_Retry, httpx.TransportError) as err:
                if attempt == attempts - 1:
                    raise RegistryError(f"{method} {url} failed after {attempt + 1} attempts: {err}",
                                        hint="check that the registry is up and reachable") from err
                time.sleep(self.backoff_s * 2**attempt)
                continue
            if response.status_code not in ok:
                response.read()
                raise self._error(method, url, response)
            return response
        raise AssertionError("unreachable")

    def _error(self, method: str, url: str, response: httpx.Response) -> RegistryError:
        detail = response.text[:300].strip()
        if response.status_code in (401, 403):
            return RegistryError(f"{method} {url} was refused ({response.status_code}): {detail}",
                                 hint=f"log in to {self.registry} (docker login) or check the repository name")
        if response.status_code == 404:
            return RegistryError(f"{method} {url}: not found (404): {detail}",
                                 hint="check the repository, tag or digest")
        return RegistryError(f"{method} {url} answered {response.status_code}: {detail}",
                             hint="see the registry's logs")

    # --- manifests ----------------------------------------------------------------------------------------------

    def get_manifest(self, repo: str, identifier: str) -> tuple[bytes, str]:
        """The manifest bytes and media type; verified when `identifier` is a digest."""
        response = self.request("GET", f"/v2/{repo}/manifests/{identifier}", ok=(200,),
                                headers={"Accept": ACCEPT}, scope=f"repository:{repo}:pull")
        data = response.content
        # By digest, the reference itself names the bytes; by tag, the registry's Docker-Content-Digest does.
        expected = identifier if identifier.startswith("sha256:") else response.headers.get("Docker-Content-Digest")
        if expected and Digest.of(data) != Digest.parse(expected):
            raise RegistryError(f"manifest {identifier} of {self.registry}/{repo} hashes to {Digest.of(data)}, not "
                                f"{expected}: its bytes do not match its digest",
                                hint="the registry is corrupt or was tampered with")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in (*mediatype.MANIFESTS, *mediatype.INDEXES):
            media_type = json.loads(data).get("mediaType", media_type)
        return data, media_type

    def put_manifest(self, repo: str, identifier: str, data: bytes, media_type: str) -> Digest:
        self.request("PUT", f"/v2/{repo}/manifests/{identifier}", ok=(201, 200), content=data,
                     headers={"Content-Type": media_type}, scope=f"repository:{repo}:pull,push")
        return Digest.of(data)

    # --- blobs ------------------------------------------------------------------------------------------------

    def has_blob(self, repo: str, digest: Digest) -> bool:
        response = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", ok=(200, 404),
                                scope=f"repository:{repo}:pull")
        return response.status_code == 200

    def blob(self, repo: str, digest: Digest, size: int | None = None) -> Iterator[bytes]:
        """The blob's bytes in chunks, verified against `digest` (and `size`) at the end."""
        response = self.request("GET", f"/v2/{repo}/blobs/{digest}", ok=(200,), stream=True,
                                scope=f"repository:{repo}:pull")
        try:
            reader = HashingReader(_IterReader(response.iter_bytes(CHUNK)), digest, size,  # type: ignore[arg-type]
                                   what=f"blob from {self.registry}/{repo}")
            while chunk := reader.read(CHUNK):
                yield chunk
            reader.verify()
        except httpx.TransportError as err:
            raise RegistryError(f"GET {self.registry}/{repo} blob {digest} was cut off: {err}",
                                hint="the connection dropped; run the command again (finished blobs are cached)") \
                from err
        finally:
            response.close()

    def upload(self, repo: str, digest: Digest, size: int, opener: Callable[[], BinaryIO],
               mount_from: str | None = None) -> str:
        """Upload one blob unless the registry has it; returns 'exists', 'mounted' or 'uploaded'."""
        if self.has_blob(repo, digest):
            return "exists"
        scope = f"repository:{repo}:pull,push"
        if mount_from and mount_from != repo:
            self.auth.add_scope(f"repository:{mount_from}:pull")
            response = self.request("POST", f"/v2/{repo}/blobs/uploads/", ok=(201, 202), scope=scope,
                                    params={"mount": str(digest), "from": mount_from})
            if response.status_code == 201:
                return "mounted"
            location = response.headers["Location"]
        else:
            location = self._start(repo, scope)
        if size <= self.chunk_size:
            self._monolithic(repo, location, digest, size, opener, scope)
        else:
            self._chunked(repo, location, digest, size, opener, scope)
        return "uploaded"

    def _start(self, repo: str, scope: str) -> str:
        response = self.request("POST", f"/v2/{repo}/blobs/uploads/", ok=(202,), scope=scope)
        return response.headers["Location"]

    def _monolithic(self, repo: str, location: str, digest: Digest, size: int,
                    opener: Callable[[], BinaryIO], scope: str) -> None:
        for attempt in range(self.retries + 1):
            try:
                self.request("PUT", _with_digest(location, digest), ok=(201,), retries_inner=False,
                             body=lambda: _chunks(opener(), 0, size),
                             headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
                return
            except RegistryError:
                if attempt == self.retries:
                    raise
                time.sleep(self.backoff_s * 2**attempt)
                location = self._start(repo, scope)  # a failed PUT may end the upload session: begin a new one

    def _chunked(self, repo: str, location: str, digest: Digest, size: int,
                 opener: Callable[[], BinaryIO], scope: str) -> None:
        offset = 0
        failures = 0
        while offset < size:
            end = min(offset + self.chunk_size, size)
            start = offset

            def body(start: int = start, end: int = end) -> Iterator[bytes]:  # this chunk's, bound now
                return _chunks(opener(), start, end)

            try:
                response = self.request(
                    "PATCH", location, ok=(202,), retries_inner=False, body=body,
                    headers={"Content-Type": "application/octet-stream", "Content-Length": str(end - start),
                             "Content-Range": f"{start}-{end - 1}"})
                location = response.headers.get("Location", location)
                offset = end
            except RegistryError:
                failures += 1
                if failures > self.retries:
                    raise
                time.sleep(self.backoff_s * 2**failures)
                location, offset = self._resume_point(location, repo, scope)
        self.request("PUT", _with_digest(location, digest), ok=(201,), content=b"",
                     headers={"Content-Length": "0"})

    def _resume_point(self, location: str, repo: str, scope: str) -> tuple[str, int]:
        """Where an interrupted chunked upload continues: the registry's Range, or a fresh session at 0."""
        try:
            status = self.request("GET", location, ok=(204,))
        except RegistryError:
            return self._start(repo, scope), 0
        last = status.headers.get("Range", "0--1").split("-")[-1]
        return status.headers.get("Location", location), int(last) + 1


class _IterReader:
    """A read() view over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            self._buf += chunk
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def close(self) -> None:
        pass


def _with_digest(location: str, digest: Digest) -> str:
    """The upload URL with `digest=` added to the query the registry gave (it carries the upload state)."""
    url = httpx.URL(location)
    return str(url.copy_add_param("digest", str(digest)))


def _chunks(stream: BinaryIO, start: int, end: int) -> Iterator[bytes]:
    """Bytes [start, end) of a freshly opened blob stream, in 1 MiB pieces (skipping by reading: blob streams
    verify their digest as they go, and may not be seekable)."""
    with stream:
        skip = start
        while skip > 0:
            data = stream.read(min(CHUNK, skip))
            if not data:
                break
            skip -= len(data)
        left = end - start
        while left:
            chunk = stream.read(min(CHUNK, left))
            if not chunk:
                raise RegistryError("blob ended early while uploading", hint="the blob source changed; rebuild it")
            left -= len(chunk)
            yield chunk
