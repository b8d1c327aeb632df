"""Layers: the `Layer` protocol, file-backed layers, and deterministic layer building.

A layer built here is reproducible: entries sorted by path, mtime fixed (SOURCE_DATE_EPOCH or 0), owners numeric
(root or one fixed uid/gid) with no user/group names, no xattrs or device numbers, and gzip without a file name or
timestamp. Its compressed digest and its diff_id (the digest of the uncompressed tar) are computed while the bytes
stream into the blob cache, so a multi-GB layer never sits whole in memory; its sizes, member count and safety
verdict are recorded then (`known`), so no later step decompresses it to learn them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol, runtime_checkable

from mlpk.packager.errors import BuildError, InputError
from mlpk.packager.oci import known, mediatype
from mlpk.packager.oci.cache import BlobCache, default_cache
from mlpk.packager.oci.digest import CHUNK, Digest, HashingReader
from mlpk.packager.oci.safety import check_member, normalize_image_path


@runtime_checkable
class Layer(Protocol):
    """A layer blob: its compressed digest and size, its diff_id, its media type, and its compressed bytes."""

    @property
    def digest(self) -> Digest: ...

    @property
    def diff_id(self) -> Digest: ...

    @property
    def size(self) -> int: ...

    @property
    def media_type(self) -> str: ...

    def open(self) -> BinaryIO:
        """The compressed bytes; reading to the end raises RegistryError if they do not match `digest`."""
        ...


@runtime_checkable
class FileBacked(Protocol):
    """A layer whose compressed bytes may be a file on this machine that sinks can link or copy without reading."""

    def local_file(self) -> Path | None:
        """The file holding exactly the layer's compressed bytes, when `known.trusted` vouches for it (never reads
        it); None otherwise."""
        ...


@dataclass(frozen=True, slots=True)
class BlobLayer:
    """A layer whose compressed bytes are a file on disk (the blob cache, an OCI layout)."""

    path: Path
    digest: Digest
    diff_id: Digest
    size: int
    media_type: str = mediatype.OCI_LAYER_GZIP

    def open(self) -> BinaryIO:
        """The file's bytes, counted as read back (known.READ_BACK) and checked against the digest; a file that
        matches in full is remembered as hashed (known.hashed)."""
        try:
            raw = self.path.open("rb")
            before = os.fstat(raw.fileno())
        except OSError as err:
            raise InputError(f"layer blob {self.digest} cannot be read at {self.path}: {err.strerror}",
                             hint="the layout or cache was changed underneath; rebuild it") from err
        return HashingReader(known.Counted(raw), self.digest, self.size,  # type: ignore[arg-type,return-value]
                             what=f"layer blob at {self.path}",
                             verified=lambda: known.hashed(self.path, self.digest, before))

    def local_file(self) -> Path | None:
        return self.path if known.trusted(self.path, self.digest, self.size) else None


@dataclass(frozen=True, slots=True)
class Entry:
    """One member of a layer to build: a regular file (from `source` or `data`), a directory or a symlink."""

    path: str  # path in the image, absolute or relative to /
    kind: str = "file"  # file | dir | symlink
    source: Path | None = None
    data: bytes | None = None
    target: str | None = None  # symlink target
    mode: int | None = None  # permission bits; default: the source's (files), 0o755 (dirs), 0o777 (symlinks)
    uid: int = 0
    gid: int = 0


def source_date_epoch() -> int:
    """The fixed mtime for layer members: $SOURCE_DATE_EPOCH (reproducible-builds.org) or 0."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "0")
    try:
        return max(0, int(value))
    except ValueError as err:
        raise BuildError(f"SOURCE_DATE_EPOCH='{value}' is not an integer number of seconds",
                         hint="unset it or set it to e.g. $(git log -1 --format=%ct)") from err


class _Hasher:
    """A write-only stream that hashes and counts what passes through to `sink`."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self.hash = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.count += len(data)
        self.sink.write(data)
        return len(data)

    def flush(self) -> None:
        self.sink.flush()


def _tarinfo(entry: Entry, name: str, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = mtime
    info.uid, info.gid = entry.uid, entry.gid
    info.uname = info.gname = ""
    info.devmajor = info.devminor = 0
    return info


def _with_parents(entries: Iterable[Entry]) -> list[tuple[str, Entry]]:
    """Entries keyed by normalized path, with missing parent directories added (root-owned, 0755), sorted."""
    by_path: dict[str, Entry] = {}
    for entry in entries:
        name = normalize_image_path(entry.path)
        if name in by_path and by_path[name] != entry:
            raise BuildError(f"layer path '/{name}' is given twice with different contents",
                             hint="each image path may appear once per layer")
        by_path[name] = entry
    for name in list(by_path):
        parent = PurePosixPath(name).parent
        while str(parent) not in (".", ""):
            by_path.setdefault(str(parent), Entry(str(parent), "dir"))
            parent = parent.parent
    return sorted(by_path.items())


def write_tar(entries: Iterable[Entry], out: BinaryIO) -> int:
    """Write `entries` as a deterministic tar stream to `out` (see the module docstring); every member passes the
    layer-safety check as it is written. Returns the number of members."""
    mtime = source_date_epoch()
    members = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, entry in _with_parents(entries):
            info = _tarinfo(entry, name, mtime)
            if entry.kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755 if entry.mode is None else entry.mode
                check_member(info)
                tar.addfile(info)
            elif entry.kind == "symlink":
                if not entry.target:
                    raise BuildError(f"symlink '/{name}' has no target", hint="give Entry(target=...)")
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.target, entry.mode or 0o777
                check_member(info)
                tar.addfile(info)
            elif entry.kind == "file":
                _add_file(tar, info, entry)
            else:
                raise BuildError(f"layer entry '/{name}' has kind '{entry.kind}'", hint="use file, dir or symlink")
            members += 1
    return members


def _add_file(tar: tarfile.TarFile, info: tarfile.TarInfo, entry: Entry) -> None:
    info.type = tarfile.REGTYPE
    check_member(info)
    if entry.data is not None:
        info.size, info.mode = len(entry.data), 0o644 if entry.mode is None else entry.mode
        tar.addfile(info, io.BytesIO(entry.data))
        return
    if entry.source is None:
        raise BuildError(f"layer file '/{info.name}' has neither source nor data", hint="give one of them")
    try:
        st = entry.source.stat()
        info.size = st.st_size
        info.mode = stat.S_IMODE(st.st_mode) if entry.mode is None else entry.mode
        with entry.source.open("rb") as src:
            tar.addfile(info, src)
    except OSError as err:
        raise InputError(f"cannot read '{entry.source}' for layer path '/{info.name}': {err.strerror}",
                         hint="check the path and its permissions") from err


def layer_from_entries(entries: Iterable[Entry], *, cache: BlobCache | None = None,
                       compresslevel: int = 6) -> BlobLayer:
    """Build a deterministic gzip layer from `entries` into the blob cache, hashing while it streams, and record
    what is known of it then (sizes, members, the safety verdict of write_tar, the blob file as hashed)."""
    store = cache or default_cache()
    with store.writer() as blob:
        compressed = _Hasher(blob.file)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=compresslevel) as gz:
            uncompressed = _Hasher(gz)  # type: ignore[arg-type]
            members = write_tar(entries, uncompressed)  # type: ignore[arg-type]
        digest = Digest(compressed.hash.hexdigest())
        path = blob.commit(digest)
    diff_id = Digest(uncompressed.hash.hexdigest())
    known.remember_layer(known.LayerReport(digest, compressed.count, uncompressed.count, members), diff_id)
    known.hashed(path, digest)
    return BlobLayer(path, digest, diff_id, compressed.count)


def entries_from_dir(root: Path, *, prefix: str = "/", uid: int = 0, gid: int = 0,
                     mode: int | None = None) -> Iterator[Entry]:
    """The files, directories and symlinks under `root` (or `root` itself when it is a file) as entries under
    `prefix`, owned by uid/gid. Sockets, devices and FIFOs are refused: they have no place in an image layer."""
    root = Path(root)
    if not root.exists() and not root.is_symlink():
        raise InputError(f"'{root}' does not exist", hint="give an existing file or directory")
    if not root.is_dir():
        if not root.is_file():  # a FIFO would block the read for ever; a socket or device has no bytes to hold
            raise InputError(f"'{root}' is not a regular file, directory or symlink",
                             hint="remove sockets, devices and FIFOs from the layer's source")
        yield Entry(prefix, "file", source=root, uid=uid, gid=gid, mode=mode)
        return
    base = PurePosixPath(prefix)
    if str(base) != "/":
        yield Entry(str(base), "dir", uid=uid, gid=gid)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames) + sorted(filenames):
            path = Path(dirpath) / name
            image_path = str(base / path.relative_to(root).as_posix())
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                yield Entry(image_path, "symlink", target=os.readlink(path), uid=uid, gid=gid)
            elif stat.S_ISDIR(st.st_mode):
                yield Entry(image_path, "dir", mode=stat.S_IMODE(st.st_mode), uid=uid, gid=gid)
            elif stat.S_ISREG(st.st_mode):
                yield Entry(image_path, "file", source=path, uid=uid, gid=gid, mode=mode)
            else:
                raise InputError(f"'{path}' is not a regular file, directory or symlink",
                                 hint="remove sockets, devices and FIFOs from the layer's source")


def layer_from_dir(root: Path, *, prefix: str = "/", uid: int = 0, gid: int = 0, mode: int | None = None,
                   cache: BlobCache | None = None) -> BlobLayer:
    """A deterministic layer holding `root` (a directory's contents, or one file) at `prefix` in the image."""
    return layer_from_entries(entries_from_dir(Path(root), prefix=prefix, uid=uid, gid=gid, mode=mode),
                              cache=cache)


def read_members(layer: Layer) -> Iterator[tarfile.TarInfo]:
    """The members of a layer's tar, each checked for path traversal; the blob is verified against its digest."""
    with layer.open() as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
        for info in tar:
            check_member(info)
            yield info
        while raw.read(CHUNK):  # drain the gzip trailer / padding so the digest check at the end runs
            pass
