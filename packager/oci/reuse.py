"""Putting bytes mlpack already has into a sink without reading them: a blob file cloned (a reflink, where the
filesystem shares extents: Btrfs, XFS), hard-linked or copied by the kernel into an OCI layout, and copied by the
kernel into a docker-archive (copy_file_range: a reflink of the range where the filesystem can, else a copy that
never passes through this process). Only for files `known.trusted` vouches for; each function says when it could
not, and the caller then streams the bytes through their digest check as before.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
_UNSUPPORTED = (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV, errno.ENOSYS, errno.EPERM,
                errno.EBADF)


def _clone(source: Path, dest: Path) -> bool:
    try:
        with source.open("rb") as src, dest.open("xb") as out:
            fcntl.ioctl(out.fileno(), FICLONE, src.fileno())
    except OSError as err:
        dest.unlink(missing_ok=True)
        if err.errno in _UNSUPPORTED or isinstance(err, FileExistsError):
            return False
        raise
    return True


def place(source: Path, dest: Path, *, link: bool) -> bool:
    """Make `dest` hold the bytes of `source` without reading them here: a reflink; else, with `link`, a hard link
    (the cache's blob files are read-only, so neither side changes the other's bytes by mistake, and a change to
    either is seen by its modification time); else a copy by the kernel. False when none works (`dest` is then
    left absent)."""
    if _clone(source, dest):
        return True
    if link:
        try:
            os.link(source, dest)
            return True
        except OSError as err:
            if err.errno not in (*_UNSUPPORTED, errno.EMLINK):
                raise
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        copied = copy_range(source, fd, source.stat().st_size)
        if copied:
            os.fsync(fd)
    finally:
        os.close(fd)
    if not copied:
        dest.unlink()
    return copied


def copy_range(source: Path, out: int, size: int) -> bool:
    """Append the `size` bytes of `source` to the file descriptor `out` at its offset, copied by the kernel. False
    (with nothing appended) when the kernel cannot copy between these files."""
    start = os.lseek(out, 0, os.SEEK_CUR)
    with source.open("rb") as src:
        left = size
        try:
            while left:
                done = os.copy_file_range(src.fileno(), out, left)
                if done == 0:
                    raise OSError(errno.EIO, f"{source} ended {left} bytes early")
                left -= done
        except OSError as err:
            if err.errno not in _UNSUPPORTED:
                raise
            os.ftruncate(out, start)
            os.lseek(out, start, os.SEEK_SET)
            return False
    return True
