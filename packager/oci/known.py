"""What mlpack knows about blobs by their digest, so that a re-export reads no byte it already read (issue 16).

Two kinds of record, under the cache's `layers/` folder, both written atomically and both only ever a shortcut:

- `checked-HEX.json`: the layer whose compressed blob has this digest passed the layer-safety check, or was made by
  mlpack (safe by construction): its size, diff_id, uncompressed size and member count. Written when a layer is
  made or first checked, so a later check of the same content answers from it (`recall`) without reading the blob.
  A record written by another mlpack or under other check rules is ignored.
- `files-HEX.json`: the files whose bytes were hashed to this digest, each by device, inode, size and modification
  time. A file that matches one is the very file that was hashed, not written since (every write changes its
  modification time), so a sink may link it, clone it or copy it in the kernel without reading it (`trusted`); any
  other file is read and hashed where it is used, and remembered then (`hashed`). A tamperer who restores a file's
  modification time could also rewrite these records, which live beside the blobs: the records guard against
  corruption and mistakes, as the digest checks on use did, not against someone who owns the cache.

`READ_BACK` counts the bytes of layer blobs on this machine that mlpack read back (to hash, decompress or copy
them through this process): what a re-export would save by trusting what it knows; the export report shows it.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mlpk.packager import __version__, locations
from mlpk.packager.errors import BuildError, MlpackError
from mlpk.packager.atomic import atomic_file
from mlpk.packager.oci.digest import Digest

CHECK_RULES = "1"  # bump when safety.check_member's rules change: verdicts recorded under the old rules are not reused
STAMPS_KEPT = 4  # files remembered per digest (the cache's blob and its copies in layouts that are not links of it)


@dataclass(frozen=True, slots=True)
class LayerReport:
    """What is known about one layer's content: its compressed digest and size, and its tar's size and members."""

    digest: Digest
    size: int
    uncompressed_size: int
    members: int


class Meter:
    """A thread-safe count of bytes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = 0

    def add(self, count: int) -> None:
        with self._lock:
            self._total += count

    @property
    def total(self) -> int:
        return self._total


READ_BACK = Meter()


class Counted:
    """A stream whose reads are added to `meter` (READ_BACK by default)."""

    def __init__(self, raw: BinaryIO, meter: Meter = READ_BACK) -> None:
        self._raw, self._meter = raw, meter

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._meter.add(len(data))
        return data

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        self._raw.close()


def _folder() -> Path:
    return locations.cache_dir() / "layers"


def _write(path: Path, data: object) -> None:
    try:
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(data))
    except OSError:
        pass  # a cache that cannot be written only costs a later run the work again


def _read(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --- layers that passed the safety check ------------------------------------------------------------------------------

def remember_layer(report: LayerReport, diff_id: Digest) -> None:
    """Record that the layer `report` describes (with `diff_id`) passed the safety check or was made safe."""
    _write(_folder() / f"checked-{report.digest.hex}.json",
           {"rules": CHECK_RULES, "mlpack": __version__, "size": report.size, "diff_id": str(diff_id),
            "uncompressed_size": report.uncompressed_size, "members": report.members})


def recall(digest: Digest, size: int, diff_id: Digest) -> LayerReport | None:
    """The report recorded for this layer content, or None (no record, or one of other rules or mlpack). A record
    whose diff_id differs from the one a config now claims is a BuildError: the image is corrupt."""
    data = _read(_folder() / f"checked-{digest.hex}.json")
    if data is None or (data.get("rules"), data.get("mlpack"), data.get("size")) != (CHECK_RULES, __version__, size):
        return None
    try:
        recorded = Digest.parse(str(data["diff_id"]))
        report = LayerReport(digest, size, int(str(data["uncompressed_size"])), int(str(data["members"])))
    except (KeyError, ValueError, TypeError, MlpackError):  # a damaged record: the caller checks the bytes instead
        return None
    if recorded != diff_id:
        raise BuildError(f"layer {digest} decompresses to {recorded}, but the config records diff_id {diff_id}",
                         hint="the image is corrupt; rebuild it")
    return report


# --- files whose bytes were hashed ------------------------------------------------------------------------------------

def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def _stamps(record: Path) -> list[list[int]]:
    files = (_read(record) or {}).get("files")
    return [s for s in files if isinstance(s, list)] if isinstance(files, list) else []


def hashed(path: Path, digest: Digest, before: os.stat_result | None = None) -> None:
    """Remember that the file at `path` hashed to `digest` (`before`: its stat taken before it was read; the file is
    remembered only when it is unchanged since)."""
    try:
        st = os.stat(path)
    except OSError:
        return
    if before is not None and _stamp(before) != _stamp(st):
        return
    record = _folder() / f"files-{digest.hex}.json"
    stamps = _stamps(record)
    stamp = _stamp(st)
    if stamp in stamps:
        return
    _write(record, {"files": [stamp, *stamps][:STAMPS_KEPT]})


def trusted(path: Path, digest: Digest, size: int | None = None) -> bool:
    """Whether the file at `path` is one remembered as hashing to `digest` and unchanged since (see the module
    docstring); never reads the file."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if size is not None and st.st_size != size:
        return False
    return _stamp(st) in _stamps(_folder() / f"files-{digest.hex}.json")
