"""Temporary work: one folder per run, swept by a later run once its owner is gone (issue 18).

    CACHE/runs/OWNER-RANDOM.lock    the run's record: locked (flock) for as long as the run lives; names its folder
    FOLDER                          the run's temporary work: beside the output when the result is renamed into place
                                    (`near`, so it is on the output's filesystem), else CACHE/runs/OWNER-RANDOM/

OWNER is the process id and its start time (`Owner`), so a record or temporary file names the process it belongs
to even after that pid is reused. The kernel drops a flock when its process ends however it ends (kill -9
included), so a record whose lock is free and whose owner is gone belongs to a run that will not come back:
`sweep()` removes its folder, then the record, then the blob cache's temporary files whose writers are gone (they
follow the same rule, see `BlobCache.writer`). `folder()` sweeps before it makes a folder, so whatever killed runs
left is gone after the next run of any command that makes temporary work.

While a run lives, Python's `tempfile` and child processes (`TMPDIR`) put their temporary files in its folder, so
they go with it; children are started through `processes`, which kills them with their parent.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mlpk.packager import locations
from mlpk.packager.base.pipeline import Cache
from mlpk.packager.errors import ConfigError
from mlpk.packager.oci.cache import default_cache
from mlpk.packager.owners import Owner, lock, orphaned, remove_orphans

__all__ = ["FOLDER_PREFIX", "RECORD_SUFFIX", "Owner", "Swept", "folder", "lock", "orphaned", "records_dir",
           "remove_orphans", "sweep"]

FOLDER_PREFIX = ".mlpack-"  # a folder beside an output: .mlpack-KIND-OWNER-RANDOM
RECORD_SUFFIX = ".lock"


def records_dir() -> Path:
    return locations.cache_dir() / "runs"


@dataclass(frozen=True, slots=True)
class Swept:
    """What one sweep removed: run folders of runs that are gone, and temporary blobs of writers that are gone."""

    folders: int
    blobs: int


def _ours(place: Path, records: Path) -> bool:
    """Only folders mlpack makes are ever removed, whatever a record says."""
    return place.parent == records or place.name.startswith(FOLDER_PREFIX)


def sweep() -> Swept:
    """Remove what runs that are gone left: their folders (and records), and the temporary files of the blob caches
    (mlpack's, and the one its Debian bases are built into)."""
    records = records_dir()
    folders = 0
    for record in sorted(records.glob(f"*{RECORD_SUFFIX}")) if records.is_dir() else []:
        if not orphaned(record):
            continue
        try:
            named = record.read_text().strip()
        except FileNotFoundError:
            continue  # another sweep took it
        place = Path(named) if named else None
        if place is not None and _ours(place, records) and place.is_dir() and not place.is_symlink():
            shutil.rmtree(place, ignore_errors=True)
            folders += 1
        record.unlink(missing_ok=True)
    return Swept(folders, sum(blobs.prune_tmp() for blobs in (default_cache(), Cache().blobs())))


@contextlib.contextmanager
def _temporary_files_in(place: Path) -> Iterator[None]:
    """`tempfile` (this process) and TMPDIR (children) point into `place` for the duration."""
    tmp = place / "tmp"
    tmp.mkdir()
    saved_dir, saved_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = str(tmp), str(tmp)
    try:
        yield
    finally:
        tempfile.tempdir = saved_dir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env


@contextlib.contextmanager
def folder(kind: str, near: Path | None = None) -> Iterator[Path]:
    """A new, empty folder for this run's temporary work, removed when the run ends; a killed run's folder is removed
    by the next run's sweep. `near`: the folder goes in that directory (for results renamed into place there); an
    OSError making it there is the caller's to translate (it names the user's path)."""
    sweep()
    records = records_dir()
    token = f"{Owner.current().token}-{secrets.token_hex(4)}"
    record = records / f"{token}{RECORD_SUFFIX}"
    try:
        records.mkdir(parents=True, exist_ok=True)
        fd = os.open(record, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as err:
        raise ConfigError(f"mlpack's cache {locations.cache_dir()} cannot be written: {err.strerror}",
                          hint="set MLPACK_CACHE to a folder you can write to") from err
    try:
        lock(fd)
        place = (Path(near).absolute() / f"{FOLDER_PREFIX}{kind}-{token}") if near is not None else records / token
        os.write(fd, str(place).encode())
        place.mkdir()
        try:
            with _temporary_files_in(place):
                yield place
        finally:
            shutil.rmtree(place, ignore_errors=True)
    finally:
        record.unlink(missing_ok=True)
        os.close(fd)
