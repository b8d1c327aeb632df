"""Compressed request bodies: gzip and both deflate flavours decode; truncated, corrupt and expanding bodies are
client errors (400/413), never a memory blow-up."""

from __future__ import annotations

import gzip
import zlib

import pytest

from mlpk.runtimes import bodies
from mlpk.runtimes.errors import ClientError, TooLarge

TEXT = b'{"inputs": []}' * 100


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-15)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(("encoding", "packed"), [
    (None, TEXT), ("identity", TEXT), ("gzip", gzip.compress(TEXT)), ("GZIP", gzip.compress(TEXT)),
    ("deflate", zlib.compress(TEXT)), ("deflate", raw_deflate(TEXT)),
])
def test_decodes(encoding: str | None, packed: bytes) -> None:
    assert bodies.decode(packed, encoding, 1 << 20) == TEXT


def test_bomb_is_413_without_expanding() -> None:
    bomb = gzip.compress(b"\0" * (50 << 20))  # 50 MiB of zeros in ~50 KiB
    with pytest.raises(TooLarge, match="expands past the limit of 1048576"):
        bodies.decode(bomb, "gzip", 1 << 20)


@pytest.mark.parametrize(("encoding", "packed", "message"), [
    ("gzip", gzip.compress(TEXT)[:-20], "truncated"),
    ("gzip", b"not gzip at all", "not valid gzip"),
    ("br", b"x", "'br' is not supported"),
])
def test_bad_bodies(encoding: str, packed: bytes, message: str) -> None:
    with pytest.raises(ClientError, match=message):
        bodies.decode(packed, encoding, 1 << 20)
