"""Files named by the process that writes them, and the rule that removes them once it is gone (issue 18).

OWNER is a process id and its start time (`Owner`), so a name keeps naming the process it belongs to even after that
pid is reused. A writer may also hold a flock on its file (`lock`): the kernel drops it when the process ends however
it ends (kill -9 included). A file whose owner no longer runs and on which nobody holds a lock belongs to a writer
that will not come back (`orphaned`): the run folders (runs.py), the blob caches' temporary blobs (oci.cache) and
every atomic write's temporary file (atomic.py) are swept by this one rule.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

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


def orphaned(path: Path, name: str | None = None) -> bool:
    """Whether the file `path` (named `OWNER-…`, or whose `name` part is) was left by a process that is gone: its
    owner no longer runs and nobody holds a lock on it. A name without an owner is never taken for an orphan here."""
    owner = Owner.from_name(path.name if name is None else name)
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
