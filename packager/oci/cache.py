"""A content-addressed blob cache that stays valid under concurrent use and interruption.

Blobs live at `ROOT/sha256/<hex>`. A blob is written to a unique temporary file in `ROOT/tmp`, flushed to disk,
checked against its digest, and only then renamed into place (rename is atomic on POSIX), so a reader sees either
no blob or a complete one, two writers of the same blob both succeed, and a killed writer leaves only a temporary
file that `prune_tmp` later removes. Reads are verified against the digest as they stream.

A blob that a caller can fetch again (from the registry it came from) or rebuild goes through `ensure`: the cached
copy is hashed before it is used, one that does not match its name is evicted, and the blob is written once more
from its source; only a source that also gives wrong bytes is an error. `mlpack cache verify` checks every blob.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from mlpk.packager import locations, owners
from mlpk.packager.errors import MlpackError, RegistryError
from mlpk.packager.oci import known
from mlpk.packager.oci.digest import CHUNK, Digest, HashingReader, sha256_stream


@dataclass
class PendingBlob:
    """A blob being written: write to `file`, then `commit(digest)`; without a commit it is discarded."""

    file: BinaryIO
    tmp: Path
    cache: BlobCache
    committed: bool = field(default=False)

    def commit(self, digest: Digest) -> Path:
        """Name the blob by `digest`: read-only from now on (a blob never changes; files linked to it in layouts
        are not written by mistake), in place."""
        self.file.flush()
        final = self.cache.path(digest)
        if known.trusted(final, digest):  # the same bytes are there already: keep that file (and its links)
            self.file.close()
            self.tmp.unlink()
            self.committed = True
            return final
        os.fsync(self.file.fileno())
        os.fchmod(self.file.fileno(), 0o444)
        self.file.close()
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
        """The cached blob, verified against `digest` (and `size`) as it is read, counted as read back."""
        path = self.path(digest)
        raw = path.open("rb")
        before = os.fstat(raw.fileno())
        return HashingReader(known.Counted(raw), digest, size,  # type: ignore[arg-type,return-value]
                             what=f"cached blob at {path}", verified=lambda: known.hashed(path, digest, before))

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

        fd, name = tempfile.mkstemp(dir=tmpdir, prefix=f"{owners.Owner.current().token}-")
        owners.lock(fd)  # held until the file is closed: prune_tmp never takes the file of a writer that lives
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
            path = pending.commit(digest)
            known.hashed(path, digest)
            return path

    def intact(self, digest: Digest, size: int | None = None) -> bool:
        """Whether the blob is cached and its bytes hash to `digest` (and number `size`), read now (and counted as
        read back); a blob that does is remembered as hashed."""
        path = self.path(digest)
        try:
            with path.open("rb") as blob:
                before = os.fstat(blob.fileno())
                found, length = sha256_stream(known.Counted(blob))  # type: ignore[arg-type]
        except FileNotFoundError:
            return False
        good = found == digest and (size is None or length == size)
        if good:
            known.hashed(path, digest, before)
        return good

    def sound(self, digest: Digest, size: int | None = None) -> bool:
        """Whether the blob is cached with bytes that hash to `digest`: without reading it when it is the file
        remembered as hashed and unchanged since (known.trusted), else read now (`intact`)."""
        return known.trusted(self.path(digest), digest, size) or self.intact(digest, size)

    def evict(self, digest: Digest) -> bool:
        """Remove a cached blob; returns whether there was one."""
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def ensure(self, digest: Digest, size: int | None, fill: Callable[[BinaryIO], None], *,
               source: str = "its source") -> Path:
        """The cached blob, checked now: a copy that does not match `digest` is evicted, and a missing or evicted
        one is written by `fill` (from `source`, named in the error) and checked before it is committed."""
        if self.sound(digest, size):
            return self.path(digest)
        self.evict(digest)
        with self.writer() as pending:
            fill(pending.file)
            pending.file.flush()
            with pending.tmp.open("rb") as written:
                found, length = sha256_stream(written)
            if found != digest or (size is not None and length != size):
                raise RegistryError(f"blob {digest} fetched again from {source} hashes to {found} ({length} bytes)",
                                    hint=f"{source} serves bytes that do not match the digest; nothing was cached. "
                                         "Fix or rebuild the source, then run the command again")
            path = pending.commit(digest)
            known.hashed(path, digest)
            return path

    def entries(self) -> list[Path]:
        """Every file under the cache's sha256 folder (a name that is no digest is a bad entry too)."""
        return sorted(p for p in (self.root / "sha256").glob("*") if p.is_file())

    def prune_tmp(self, older_than_s: float = 3600.0) -> int:
        """Remove temporary files left by interrupted writers; returns how many. A file named by its writer
        (`owners.Owner`: pid and start time) goes as soon as that process is gone and no lock is held on it, so a
        live writer's file is never taken, however slow; one without (older mlpack versions) once it is
        `older_than_s` seconds untouched."""
        paths = sorted((self.root / "tmp").glob("*"))
        named = [p for p in paths if owners.Owner.from_name(p.name) is not None]
        return owners.remove_orphans(named) + remove_stale([p for p in paths if p not in named], older_than_s)

    def check(self) -> list[Digest]:
        """Every cached blob whose bytes do not match its name (an empty list means the cache is valid)."""
        return [Digest(p.name) for p in self.bad()]

    def bad(self) -> list[Path]:
        """The files of `entries` whose bytes do not hash to their name, or whose name is not a digest."""
        out = []
        for path in self.entries():
            try:
                digest = Digest(path.name)
            except MlpackError:
                out.append(path)
                continue
            if not self.intact(digest):
                out.append(path)
        return out


def remove_stale(paths: Iterable[Path], older_than_s: float) -> int:
    """Remove the files or folders among `paths` last changed more than `older_than_s` seconds ago (what killed
    writers left: a live writer keeps changing its file); returns how many went."""
    removed = 0
    now = time.time()
    for path in paths:
        try:
            if now - path.lstat().st_mtime <= older_than_s:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed += 1
        except FileNotFoundError:
            continue
    return removed


def default_cache() -> BlobCache:
    """The blob cache under mlpack's cache directory ($MLPACK_CACHE, else ~/.cache/mlpack)."""
    return BlobCache(locations.cache_dir() / "blobs")
