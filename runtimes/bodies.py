"""Compressed request bodies (`Content-Encoding: gzip | deflate`), as tritonclient sends them with
`request_compression_algorithm`. Decompression is bounded by the body limit, so a small compressed body cannot
expand into gigabytes in memory (a "zip bomb")."""

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
        inflater = zlib.decompressobj(wbits)
        try:
            data = inflater.decompress(body, limit + 1)
        except zlib.error as err:
            error = err
            continue
        if len(data) > limit or inflater.unconsumed_tail:
            raise TooLarge(f"the {name} request body expands past the limit of {limit} bytes (MLPACK_MAX_BODY_BYTES)")
        if not inflater.eof:
            raise ClientError(f"the {name} request body is truncated")
        return data
    raise ClientError(f"the request body is not valid {name} data: {error}")
