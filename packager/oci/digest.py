"""Content digests (`sha256:<hex>`), as the OCI image spec defines them, and hashing while bytes stream by."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from mlpk.packager.errors import InputError, RegistryError

_HEX = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20


@dataclass(frozen=True, slots=True, order=True)
class Digest:
    """A sha256 content digest. Only sha256 is produced or accepted (the algorithm every registry supports)."""

    hex: str

    def __post_init__(self) -> None:
        if not _HEX.match(self.hex):
            raise InputError(f"digest hex '{self.hex}' is not 64 lowercase hex characters",
                             hint="digests look like sha256:<64 hex>")

    @property
    def algorithm(self) -> str:
        return "sha256"

    @classmethod
    def parse(cls, text: str) -> Digest:
        """`sha256:<hex>` -> Digest; any other algorithm or form is an InputError naming the text."""
        algorithm, sep, hexpart = text.partition(":")
        if not sep or algorithm != "sha256":
            raise InputError(f"digest '{text}' is not of the form sha256:<hex>",
                             hint="only sha256 digests are supported")
        return cls(hexpart)

    @classmethod
    def of(cls, data: bytes) -> Digest:
        return cls(hashlib.sha256(data).hexdigest())

    def __str__(self) -> str:
        return f"sha256:{self.hex}"


class HashingReader:
    """Wraps a binary stream; hashes and counts what is read, and at end of stream checks it against an expected
    digest and size (when given), so a blob whose bytes do not match its name is never consumed silently.
    `verified` is called once the whole stream matched."""

    def __init__(self, raw: BinaryIO, expected: Digest | None = None, size: int | None = None,
                 what: str = "blob", verified: Callable[[], None] | None = None) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self._expected = expected
        self._size = size
        self._what = what
        self.count = 0
        self._checked = False
        self._verified = verified

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if data:
            self._hash.update(data)
            self.count += len(data)
            if self._size is not None and self.count > self._size:
                self._fail(f"is longer than its declared size {self._size}")
            if self._size is not None and self.count == self._size and not self._checked:
                self.verify()  # consumers that read exactly `size` bytes never see the end of the stream
        elif not self._checked and (n != 0):
            self.verify()
        return data

    def readable(self) -> bool:
        return True

    def digest(self) -> Digest:
        return Digest(self._hash.hexdigest())

    def verify(self) -> None:
        """Check the bytes read so far (the whole stream) against the expected digest and size."""
        self._checked = True
        if self._size is not None and self.count != self._size:
            self._fail(f"has {self.count} bytes but its descriptor says {self._size}")
        if self._expected is not None and self.digest() != self._expected:
            self._fail(f"hashes to {self.digest()}")
        if self._verified is not None and self._expected is not None:
            self._verified()

    def _fail(self, what: str) -> None:
        raise RegistryError(
            f"{self._what} {self._expected} {what}: its bytes do not match its digest",
            hint="the source is corrupt or was tampered with; fetch or build it again (for mlpack's own cache: "
                 "mlpack cache verify --fix)",
        )

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> HashingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sha256_stream(stream: BinaryIO) -> tuple[Digest, int]:
    """The digest and length of everything left in `stream`, read in 1 MiB chunks."""
    h = hashlib.sha256()
    n = 0
    while chunk := stream.read(CHUNK):
        h.update(chunk)
        n += len(chunk)
    return Digest(h.hexdigest()), n
