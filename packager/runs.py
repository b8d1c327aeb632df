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
import fcntl
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mlpk.packager import locations
from mlpk.packager.errors import ConfigError

FOLDER_PREFIX = ".mlpack-"  # a folder beside an output: .mlpack-KIND-OWNER-RANDOM
RECORD_SUFFIX = ".lock"
_STARTED: dict[int, int] = {}


@dataclass(frozen=True, slots=True)
class Owner:
    """A process, told apart from a later one with the same pid by its start time (0: unknown on this system)."""

    pid: int
    start: int

    @classmethod
    def current(cls) -> Owner:
        pid = os.getpid()
        if pid not in _STARTED:  # keyed by pid: a forked child is another owner
            _STARTED[pid] = _start_time(pid) or 0
        return cls(pid, _STARTED[pid])

    @classmethod
    def from_name(cls, name: str) -> Owner | None:
        """The owner a name starting `PID-START-` (a record, a folder's tail, a temporary blob) names."""
        pid, _, rest = name.partition("-")
        start, sep, _ = rest.partition("-")
        if not (pid.isdigit() and start.isdigit() and sep):
            return None
        return cls(int(pid), int(start))

    @property
    def token(self) -> str:
        return f"{self.pid}-{self.start}"

    def alive(self) -> bool:
        """Whether this process still runs (a zombie does not: it holds no file and no lock)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # another user's process: it exists
        now = _start_time(self.pid)
        if now is None:  # no /proc: the pid is all there is to go by
            return True
        return now != -1 and (self.start == 0 or now == self.start)


def _start_time(pid: int) -> int | None:
    """The start time of `pid` in clock ticks since boot (/proc/PID/stat, field 22); -1 for a zombie or a process
    that is gone; None where there is no /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return -1 if Path("/proc/self/stat").exists() else None
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return -1 if fields[0] in ("Z", "X") else int(fields[19])


def lock(fd: int) -> None:
    """Hold an exclusive flock on `fd` until it is closed (or the process ends, however it ends)."""
    fcntl.flock(fd, fcntl.LOCK_EX)


def _locked_elsewhere(path: Path) -> bool:
    """Whether some open file holds a flock on `path` (one this process holds elsewhere counts too)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's own lock
    return False


def orphaned(path: Path) -> bool:
    """Whether the file `path` (named `OWNER-…`) was left by a process that is gone: its owner no longer runs and
    nobody holds a lock on it. A name without an owner is never taken for an orphan here."""
    owner = Owner.from_name(path.name)
    return owner is not None and not owner.alive() and not _locked_elsewhere(path)


def remove_orphans(paths: Iterable[Path]) -> int:
    """Remove the files among `paths` that are `orphaned`; returns how many went."""
    removed = 0
    for path in paths:
        if orphaned(path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed


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
    from mlpk.packager.base.pipeline import Cache
    from mlpk.packager.oci.cache import default_cache

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
