"""Write-then-rename, the one way mlpack writes a file or folder that others read: a killed write leaves the
destination absent (or as it was), never half (issue 16 folded the hand-rolled variants into this one).

A temporary file or folder sits beside its destination as `.NAME.tmp-OWNER-RANDOM` (owners.Owner: pid and start
time), and is renamed over the destination once complete. `sweep(folder)` removes every such temporary of any
destination in a folder whose writer is gone (owners.orphaned), and runs before each write, so what a killed writer
left goes with the next write beside it; `mlpack cache prune` sweeps the cache's folders the same way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlpk.packager.errors import BuildError, ConfigError
from mlpk.packager.owners import Owner, orphaned

MARK = ".tmp-"


def _prefix(dest: Path) -> str:
    return f".{dest.name}{MARK}{Owner.current().token}-"


def is_temporary(name: str) -> bool:
    """Whether `name` is an atomic write's temporary file or folder."""
    return name.startswith(".") and MARK in name


def _legacy_gone(token: str) -> bool:
    """Temporaries written before owners were named (`.NAME.tmp-PID-RANDOM`): gone when that pid is."""
    pid = token.split("-", 1)[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def sweep(folder: Path) -> int:
    """Remove the temporaries in `folder` whose writers are gone; returns how many went."""
    removed = 0
    try:
        stale = [p for p in Path(folder).iterdir() if is_temporary(p.name)]
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for path in stale:
        token = path.name.split(MARK, 1)[1]
        if not (orphaned(path, token) if Owner.from_name(token) is not None else _legacy_gone(token)):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    return removed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """A temporary directory beside `dest`; on success it replaces `dest`, on failure it is removed."""
    dest = Path(dest)
    check_parents(dest, "output")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and not dest.is_dir():
        raise BuildError(f"'{dest}' exists and is not a directory", hint="remove it or choose another path")
    sweep(dest.parent)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(dest), dir=dest.parent))
    try:
        yield tmp
        old = None
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=_prefix(dest), dir=dest.parent))
            os.replace(dest, old / "old")
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_destination(dest: Path, flag: str = "output") -> None:
    """Refuse, before any work, a file destination that cannot be written: an existing directory, or a path under a
    file. `flag` names the option that gave it (-o, --tar), for the message."""
    if dest.is_dir():
        raise ConfigError(f"{flag} {dest} is a directory, not a file", hint="give the path of a file (new, or one to "
                                                                            "replace)")
    check_parents(dest, flag)


def check_parents(dest: Path, flag: str) -> None:
    """Refuse a destination under a file (which no mkdir can make a folder of)."""
    parent = dest.absolute().parent
    existing = next(place for place in (parent, *parent.parents) if place.exists() or place.is_symlink())
    if not existing.is_dir():
        raise ConfigError(f"{flag} {dest} is under {existing}, which is a file, not a directory",
                          hint="choose a path whose parents are directories (or new)")


@contextmanager
def atomic_file(dest: Path) -> Iterator[Path]:
    """A temporary file path beside `dest`; on success it is renamed over `dest`, on failure removed."""
    dest = Path(dest)
    check_destination(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep(dest.parent)
    fd, name = tempfile.mkstemp(prefix=_prefix(dest), dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(dest: Path, text: str) -> Path:
    """`text` at `dest`, whole or not at all."""
    with atomic_file(dest) as tmp:
        tmp.write_text(text)
    return Path(dest)
