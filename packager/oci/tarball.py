"""docker-archive tars (the `docker save` / `docker load` format): a source and a sink.

The sink writes manifest.json, the config and the gzip layers as they are (Docker 20.10+ decompresses them on
load), deterministically and into a temporary file that is renamed into place; a layer blob that is a file mlpack
knows (known.trusted) is copied into the archive by the kernel (reuse.copy_range), never read here. The source
accepts both gzip and plain layer tars; plain ones are compressed into the blob cache so the image can be pushed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from mlpk.packager.errors import BuildError, InputError, malformed
from mlpk.packager.oci import known, mediatype, reuse
from mlpk.packager.atomic import atomic_file
from mlpk.packager.oci.cache import BlobCache, default_cache
from mlpk.packager.oci.digest import CHUNK, Digest, HashingReader, sha256_stream
from mlpk.packager.oci.image import Image
from mlpk.packager.oci.layer import BlobLayer, FileBacked, Layer, read_members
from mlpk.packager.oci.reference import with_default_tag
from mlpk.packager.oci.safety import check_archive_name


class _Window:
    """Reads `size` bytes of a file starting at `offset` (one member of an uncompressed tar)."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        self._file = path.open("rb")
        self._file.seek(offset)
        self._left = size

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._file.read(n)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True, slots=True)
class ArchiveLayer:
    """A gzip layer stored as one member of a docker-archive tar."""

    archive: Path
    offset: int
    size: int
    digest: Digest
    diff_id: Digest
    media_type: str = mediatype.DOCKER_LAYER_GZIP

    def open(self) -> BinaryIO:
        return HashingReader(known.Counted(_Window(self.archive, self.offset, self.size)),  # type: ignore[arg-type]
                             self.digest, self.size, what=f"layer in {self.archive}")  # type: ignore[return-value]


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.uname, info.gname = size, 0o644, 0, "", ""
    return info


class _TarWriter:
    """A tar written member by member to a file descriptor, byte for byte as tarfile writes it (PAX headers, 512-byte
    blocks, two zero blocks and a 10240-byte record at the end), so a member's data can also be copied in by the
    kernel."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def _pad(self, size: int, block: int) -> None:
        if size % block:
            self._write(tarfile.NUL * (block - size % block))

    def add(self, name: str, size: int, data: BinaryIO | None = None, file: Path | None = None) -> bool:
        """A member of `size` bytes from `data` (streamed) or `file` (copied by the kernel; the caller vouches for
        its bytes). False, with nothing written, when the kernel cannot copy `file` here."""
        start = os.lseek(self.fd, 0, os.SEEK_CUR)
        self._write(_info(name, size).tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape"))
        if file is not None:
            if not reuse.copy_range(file, self.fd, size):
                os.ftruncate(self.fd, start)
                os.lseek(self.fd, start, os.SEEK_SET)
                return False
        else:
            assert data is not None
            copied = 0
            while chunk := data.read(CHUNK):
                self._write(chunk)
                copied += len(chunk)
            if copied != size:
                raise InputError(f"member {name} has {copied} bytes, not {size}", hint="the source changed; retry")
        self._pad(size, tarfile.BLOCKSIZE)
        return True

    def close(self) -> None:
        self._write(tarfile.NUL * (tarfile.BLOCKSIZE * 2))
        self._pad(os.lseek(self.fd, 0, os.SEEK_CUR), tarfile.RECORDSIZE)


def _add_layer(tar: _TarWriter, name: str, layer: Layer) -> None:
    """A layer's blob: copied by the kernel when its file is known, else streamed through its digest check."""
    source = layer.local_file() if isinstance(layer, FileBacked) else None
    if source is not None and tar.add(name, layer.size, file=source):
        return
    with layer.open() as src:
        tar.add(name, layer.size, data=src)


def write(img: Image, path: Path, tag: str | None = None) -> Path:
    """Write `img` as a docker-archive at `path`, tagged `tag` (e.g. `mlpack/model:1`) when given."""
    if tag:
        tag = with_default_tag(tag)
    config = img.config_blob
    layer_names = [f"{layer.digest.hex}.tar.gz" for layer in img.layers]
    manifest = [{"Config": f"{config.digest.hex}.json", "RepoTags": [tag] if tag else [], "Layers": layer_names}]
    with atomic_file(Path(path)) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            tar = _TarWriter(fd)
            tar.add(f"{config.digest.hex}.json", config.size, io.BytesIO(config.data))
            written: set[str] = set()
            for name, layer in zip(layer_names, img.layers, strict=True):
                if name in written:
                    continue
                written.add(name)
                _add_layer(tar, name, layer)
            data = json.dumps(manifest, separators=(",", ":")).encode()
            tar.add("manifest.json", len(data), io.BytesIO(data))
            tar.close()
        finally:
            os.close(fd)
    return Path(path)


def _select(entries: list[dict[str, Any]], tag: str | None, path: Path) -> dict[str, Any]:
    if tag:
        full = with_default_tag(tag)
        matches = [e for e in entries if full in (e.get("RepoTags") or [])]
    else:
        matches = entries
    if len(matches) != 1:
        tags = [t for e in entries for t in (e.get("RepoTags") or ["<untagged>"])]
        raise InputError(f"docker-archive '{path}' has {len(matches)} images matching {tag or 'any tag'} "
                         f"(tags: {', '.join(tags) or 'none'})", hint="name one with TAR:TAG")
    return matches[0]


def _compress_into_cache(src: BinaryIO, cache: BlobCache) -> tuple[Digest, Digest, int]:
    """gzip a plain layer tar into the cache: (digest, diff_id, compressed size)."""
    diff = hashlib.sha256()
    with cache.writer() as pending:
        with gzip.GzipFile(filename="", mode="wb", fileobj=pending.file, mtime=0, compresslevel=6) as gz:
            while chunk := src.read(CHUNK):
                diff.update(chunk)
                gz.write(chunk)
        pending.file.flush()
        size = pending.file.tell()
        with pending.tmp.open("rb") as again:
            digest, _ = sha256_stream(again)
        pending.commit(digest)
    return digest, Digest(diff.hexdigest()), size


def image_from_tarball(path: Path, tag: str | None = None, *, cache: BlobCache | None = None) -> Image:
    """The image in a docker-archive tar (the one tagged `tag`, or its only one)."""
    path = Path(path)
    try:
        tar = tarfile.open(path, "r:")  # noqa: SIM115 - closed by the `with tar:` below, once it is known to open
    except (OSError, tarfile.TarError) as err:
        raise InputError(f"'{path}' is not a readable tar archive: {err}",
                         hint="give a file written by `docker save` or `mlpack build --tar`") from err
    with tar:
        members = {m.name.removeprefix("./"): m for m in tar.getmembers()}

        def member(name: str) -> tarfile.TarInfo:
            check_archive_name(name, str(path))
            found = members.get(name)
            if found is None or not found.isfile():
                raise InputError(f"docker-archive '{path}' lacks '{name}'", hint="the archive is incomplete")
            return found

        def read(name: str) -> bytes:
            extracted = tar.extractfile(member(name))
            assert extracted is not None
            return extracted.read()

        try:
            entries = json.loads(read("manifest.json"))
        except json.JSONDecodeError as err:
            raise InputError(f"manifest.json in '{path}' is not JSON", hint="the archive is corrupt") from err
        with malformed(f"docker-archive '{path}'", "give a file written by `docker save` or `mlpack build --tar`"):
            return _image(path, entries, tag, member, read, cache)


def _image(path: Path, entries: Any, tag: str | None, member: Callable[[str], tarfile.TarInfo],
           read: Callable[[str], bytes], cache: BlobCache | None) -> Image:
    """The image of a docker-archive whose manifest.json holds `entries` (image_from_tarball)."""
    entry = _select(entries, tag, path)
    config_bytes = read(entry["Config"])
    diff_ids = json.loads(config_bytes).get("rootfs", {}).get("diff_ids", [])
    if len(diff_ids) != len(entry.get("Layers", [])):
        raise InputError(f"docker-archive '{path}' lists {len(entry.get('Layers', []))} layers but its config "
                         f"has {len(diff_ids)} diff_ids", hint="the archive is corrupt")
    layers: list[Layer] = []
    store = cache or default_cache()
    for name, diff in zip(entry.get("Layers", []), diff_ids, strict=True):
        info = member(name)
        window = _Window(path, info.offset_data, info.size)
        magic = window.read(2)
        window.close()
        window = _Window(path, info.offset_data, info.size)
        if magic == b"\x1f\x8b":
            digest, size = sha256_stream(window)  # type: ignore[arg-type]
            window.close()
            layers.append(ArchiveLayer(path, info.offset_data, size, digest, Digest.parse(diff)))
            continue
        digest, diff_id, size = _compress_into_cache(window, store)  # type: ignore[arg-type]
        window.close()
        if diff_id != Digest.parse(diff):
            raise BuildError(f"layer '{name}' in '{path}' hashes to {diff_id}, but the config says {diff}",
                             hint="the archive is corrupt")
        rewritten = BlobLayer(store.path(digest), digest, diff_id, size, mediatype.DOCKER_LAYER_GZIP)
        for _ in read_members(rewritten):  # refuse path traversal before the layer goes anywhere
            pass
        layers.append(rewritten)
    return Image(config_bytes, tuple(layers), mediatype.DOCKER_MANIFEST)
