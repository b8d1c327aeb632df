"""Path-traversal checks for layer members, applied wherever mlpack writes, reads or rewrites a layer or archive.

A member is refused when its name is absolute or climbs out of the root (`..`), when a hard link points outside
the root, when a relative symlink resolves above the root from where it sits, or when it is a device file (a base
has no business creating `/dev` nodes; the runtime provides them). Absolute symlink targets are allowed: they are
resolved inside the container's root filesystem (that is what `/bin/sh -> /bin/busybox` means).
"""

from __future__ import annotations

import posixpath
import tarfile

from mlpk.packager.errors import BuildError, InputError


def _escapes(path: str) -> bool:
    normal = posixpath.normpath(path)
    return normal == ".." or normal.startswith("../")


def normalize_image_path(path: str) -> str:
    """An image path (`/opt/x`, `opt/x`) as a tar member name (`opt/x`); `..` anywhere is a BuildError."""
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BuildError(f"image path '{path}' contains '..'", hint="give image paths without '..' components")
    if not parts:
        raise BuildError(f"image path '{path}' names the root itself", hint="give a path below /")
    return "/".join(parts)


def check_member(info: tarfile.TarInfo) -> None:
    """Refuse a tar member whose name or link would land outside the root when unpacked (InputError)."""
    name = info.name
    stripped = name[2:] if name.startswith("./") else name
    if stripped.startswith("/") or _escapes(stripped) or "/../" in f"/{stripped}/":
        raise InputError(f"layer member '{name}' escapes the image root (absolute path or '..')",
                         hint="the layer is malformed or malicious; rebuild it from a trusted source")
    if info.islnk():
        target = info.linkname[2:] if info.linkname.startswith("./") else info.linkname
        if target.startswith("/") or _escapes(target):
            raise InputError(f"hard link '{name}' -> '{info.linkname}' points outside the image root",
                             hint="the layer is malformed or malicious; rebuild it from a trusted source")
    elif info.issym() and not info.linkname.startswith("/"):
        resolved = posixpath.join(posixpath.dirname(stripped.rstrip("/")), info.linkname)
        if _escapes(resolved):
            raise InputError(f"symlink '{name}' -> '{info.linkname}' resolves outside the image root",
                             hint="the layer is malformed or malicious; rebuild it from a trusted source")
    elif info.ischr() or info.isblk():
        kind = "character" if info.ischr() else "block"
        raise InputError(f"layer member '{name}' is a {kind} device ({info.devmajor}:{info.devminor})",
                         hint="the layer is malformed or malicious; rebuild it from a trusted source")


def check_archive_name(name: str, archive: str) -> None:
    """Refuse a file name inside a docker-archive or layout that climbs out of it."""
    if name.startswith("/") or _escapes(name) or "/../" in f"/{name}/":
        raise InputError(f"'{archive}' refers to '{name}', which lies outside the archive",
                         hint="the archive is malformed or malicious")
