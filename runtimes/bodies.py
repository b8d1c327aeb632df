"""Compressed request bodies (`Content-Encoding: gzip | deflate`), as tritonclient sends them with
`request_compression_algorithm`. Decompression is bounded by the body limit, so a small compressed body cannot
expand into gigabytes in memory (a "zip bomb"). Bytes after the compressed stream are refused (a gzip body may
hold several members, RFC 1952 section 2.2; each is decompressed in turn), so a corrupted or spliced body is not
half-read."""

from __future__ import annotations

import zlib

from mlpk.runtimes.errors import ClientError, TooLarge

# zlib window bits: 16 + 15 reads the gzip container, 15 the zlib container that HTTP's "deflate" means (RFC 9110
# section 8.4.1.2), and -15 raw deflate, which some clients send under the same name.
_WBITS = {"gzip": (31,), "x-gzip": (31,), "deflate": (15, -15)}


def decode(body: bytes, encoding: str | None, limit: int) -> bytes:
    """`body` decompressed per its Content-Encoding (identity when None), refused past `limit` bytes."""
    name = (encoding or "identity").strip().lower()
    if name in ("", "identity"):
        return body
    if name not in _WBITS:
        raise ClientError(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")
    error: zlib.error | None = None
    for wbits in _WBITS[name]:
        try:
            return _inflate(body, wbits, name, limit)
        except zlib.error as err:
            error = err
    raise ClientError(f"the request body is not valid {name} data: {error}")


def _inflate(body: bytes, wbits: int, name: str, limit: int) -> bytes:
    """Every member of `body` (gzip allows several), decompressed; zlib.error when it is not this container."""
    parts: list[bytes] = []
    size = 0
    rest = body
    while True:
        inflater = zlib.decompressobj(wbits)
        data = inflater.decompress(rest, limit - size + 1)
        size += len(data)
        if size > limit or inflater.unconsumed_tail:
            raise TooLarge(f"the {name} request body expands past the limit of {limit} bytes (MLPACK_MAX_BODY_BYTES)")
        if not inflater.eof:
            raise ClientError(f"the {name} request body is truncated")
        parts.append(data)
        rest = inflater.unused_data
        if not rest:
            return b"".join(parts)
        if wbits != 31 or not rest.startswith(b"\x1f\x8b"):
            raise ClientError(f"the {name} request body has {len(rest)} bytes of trailing data after its compressed "
                              "stream; send exactly one compressed body")
