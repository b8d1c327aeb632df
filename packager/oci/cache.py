"""A content-addressed blob cache that stays valid under concurrent use and interruption.

Blobs live at `ROOT/sha256/<hex>`. A blob is written to a unique temporary file in `ROOT/tmp`, flushed to disk,
checked against its digest, and only then renamed into place (rename is atomic on POSIX), so a reader sees either
no blob or a complete one, two writers of the same blob both succeed, and a killed writer leaves only a temporary
file that `prune_tmp` later removes. Reads are verified against the digest as they stream.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from mlpk.packager import locations
from mlpk.packager.errors import RegistryError
from mlpk.packager.oci.digest import CHUNK, Digest, HashingReader


@dataclass
class PendingBlob:
    """A blob being written: write to `file`, then `commit(digest)`; without a commit it is discarded."""

    file: BinaryIO
    tmp: Path
    cache: BlobCache
    committed: bool = field(default=False)

    def commit(self, digest: Digest) -> Path:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        final = self.cache.path(digest)
        os.replace(self.tmp, final)
        self.committed = True
        return final


@dataclass(frozen=True, slots=True)
class BlobCache:
    """The cache at `root` (created on first use)."""

    root: Path

    def path(self, digest: Digest) -> Path:
        return self.root / "sha256" / digest.hex

    def has(self, digest: Digest) -> bool:
        return self.path(digest).is_file()

    def open(self, digest: Digest, size: int | None = None) -> BinaryIO:
        """The cached blob, verified against `digest` (and `size`) as it is read."""
        path = self.path(digest)
        return HashingReader(path.open("rb"), digest, size, what=f"cached blob at {path}")  # type: ignore[return-value]

    def verify(self, digest: Digest) -> None:
        """Read a cached blob to the end; a mismatch is a RegistryError naming the file."""
        with self.open(digest) as blob:
            while blob.read(CHUNK):
                pass

    @contextmanager
    def writer(self) -> Iterator[PendingBlob]:
        """A temporary file for a new blob; the caller commits it under its digest, or it is removed."""
        tmpdir = self.root / "tmp"
        tmpdir.mkdir(parents=True, exist_ok=True)
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=tmpdir, prefix=f"{os.getpid()}-")
        pending = PendingBlob(os.fdopen(fd, "wb"), Path(name), self)
        try:
            yield pending
        finally:
            if not pending.committed:
                pending.file.close()
                Path(name).unlink(missing_ok=True)

    def put(self, stream: BinaryIO, digest: Digest, size: int | None = None) -> Path:
        """Copy `stream` into the cache under `digest`, refusing bytes that do not match it."""
        if self.has(digest):
            return self.path(digest)
        with self.writer() as pending:
            reader = HashingReader(stream, digest, size, what="blob")
            while chunk := reader.read(CHUNK):
                pending.file.write(chunk)
            reader.verify()
            return pending.commit(digest)

    def prune_tmp(self, older_than_s: float = 3600.0) -> int:
        """Remove temporary files left by interrupted writers; returns how many."""
        removed = 0
        now = time.time()
        for tmp in (self.root / "tmp").glob("*"):
            try:
                if now - tmp.stat().st_mtime > older_than_s:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def check(self) -> list[Digest]:
        """Every cached blob whose bytes do not match its name (an empty list means the cache is valid)."""
        bad = []
        for path in sorted((self.root / "sha256").glob("*")):
            digest = Digest(path.name)
            try:
                self.verify(digest)
            except RegistryError:
                bad.append(digest)
        return bad


def default_cache() -> BlobCache:
    """The blob cache under mlpack's cache directory ($MLPACK_CACHE, else ~/.cache/mlpack)."""
    return BlobCache(locations.cache_dir() / "blobs")
