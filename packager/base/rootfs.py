"""Unpacking verified .deb files into a root file system, in Python and without maintainer scripts.

Only each package's data member is extracted (python-debian's `debfile` reads the ar archive and its
data.tar.{xz,gz,zst}); preinst/postinst never run, so nothing needs a shell or emulation, and the same code builds
arm64 and amd64 roots. The layout is merged-/usr (Debian's default since bookworm, and what trixie's packages
assume): /bin, /sbin, /lib* are symlinks into /usr, and package paths under them are written under /usr.

Every member path is checked: no absolute or `..` escape, and no write through a symlink a package placed, so a
hostile package cannot write outside the root even though unpacking runs as root on the build machine.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from debian.debfile import DebError, DebFile

from mlpk.packager.errors import BuildError

MERGED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")

# What a runtime never reads; measured on the default bookworm/amd64 base (docs/bases.md has the table).
# Copyright files stay: they are the packages' licences, and license scanners read them.
PRUNE = (
    "usr/share/doc/*/*",  # but see KEEP
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/linda",
    "usr/share/bug",
    "usr/share/doc-base",
    "usr/share/gdb",
    "usr/share/bash-completion",
    "usr/share/menu",
    # glibc's iconv modules (7.9 MB): CPython's codecs, numpy and onnxruntime never call iconv(3) for other
    # charsets; UTF-8/ASCII/UCS conversions are built into libc and keep working.
    "usr/lib/*/gconv",
    # CPython's regression-test helpers (libpython3.x-stdlib ships a part of test/), unused at run time.
    "usr/lib/python3.*/test",
)
KEEP = ("usr/share/doc/*/copyright",)


@dataclass(frozen=True, slots=True)
class Unpacked:
    """What one package put into the root: every path it ships (for dpkg's .list) and its md5sums file."""

    paths: tuple[str, ...]  # "/usr/bin/python3.11", as dpkg lists them (un-merged, as shipped)
    md5sums: bytes
    pruned_bytes: int


def image_path(member: str) -> str:
    """A data.tar member name as a path relative to the root, with the merged-/usr mapping applied."""
    name = member[2:] if member.startswith("./") else member
    parts = tuple(p for p in PurePosixPath(name.lstrip("/")).parts if p != ".")
    if any(p == ".." for p in parts):
        raise BuildError(f"package member '{member}' escapes the root with '..'",
                         hint="the .deb is malformed or hostile; it was verified against the index, so report it")
    if parts and parts[0] in MERGED:
        parts = ("usr", *parts)
    return "/".join(parts)


def pruned(path: str, rules: Iterable[str] = PRUNE) -> bool:
    """Whether `path` (relative to the root) is dropped by the prune rules: a rule drops what it matches and
    everything below it."""
    if any(fnmatch.fnmatchcase(path, keep) for keep in KEEP):
        return False
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatchcase(prefix, rule) for rule in rules for prefix in prefixes)


def prepare(root: Path, arch: str) -> None:
    """An empty merged-/usr skeleton at `root`."""
    for name in ("usr/bin", "usr/sbin", "usr/lib"):
        (root / name).mkdir(parents=True, exist_ok=True)
    for name in ("bin", "sbin", "lib"):
        os.symlink(f"usr/{name}", root / name)
    if arch == "amd64":  # the x86-64 ELF interpreter is /lib64/ld-linux-x86-64.so.2 (System V ABI)
        (root / "usr/lib64").mkdir(exist_ok=True)
        os.symlink("usr/lib64", root / "lib64")


def _parent(root: Path, rel: str) -> Path:
    """The real directory that will hold `rel`, refusing any package-made symlink on the way."""
    current = root
    for part in PurePosixPath(rel).parent.parts:
        current = current / part
        if current.is_symlink():
            raise BuildError(f"package path '/{rel}' goes through the symlink '{current.relative_to(root)}'",
                             hint="mlpack does not write through package-made symlinks; leave this package out")
        current.mkdir(mode=0o755, exist_ok=True)
    return current


def _remove(target: Path) -> None:
    if target.is_symlink() or target.is_file():
        target.unlink()


def unpack(deb: Path, root: Path, *, rules: Iterable[str] = PRUNE, file: BinaryIO | None = None) -> Unpacked:
    """Extract the data member of `deb` into `root` (see the module docstring); pruned paths are skipped. With
    `file` (an open handle on `deb` whose bytes were verified) the package is read from it, not from the path."""
    rules = tuple(rules)
    try:
        package = DebFile(fileobj=file) if file is not None else DebFile(str(deb))
        md5sums = package.control.get_content("md5sums") or b""
        data = package.data.tgz()
    except (DebError, OSError, tarfile.TarError, KeyError) as err:
        raise BuildError(f"cannot read {deb.name}: {err}", hint="the package file is damaged; run "
                         "`mlpack cache verify --fix` and build again") from err
    listed: list[str] = []
    dropped = 0
    for member in data.getmembers():
        rel = image_path(member.name)
        if not rel:
            continue
        top = rel.split("/")
        if len(top) == 2 and top[1] in MERGED:
            # /bin, /lib64... themselves: the merged-/usr symlinks (trixie's base-files ships them too).
            listed.append(f"/{top[1]}")
            if not (root / top[1]).is_symlink():
                (root / rel).mkdir(parents=True, exist_ok=True)
                os.symlink(rel, root / top[1])
            continue
        listed.append("/" + (member.name[2:] if member.name.startswith("./") else member.name).strip("/"))
        if pruned(rel, rules):
            dropped += member.size if member.isfile() else 0
            continue
        target = _parent(root, rel) / PurePosixPath(rel).name
        mode = stat.S_IMODE(member.mode)
        if member.isdir():
            if target.is_symlink():
                continue  # e.g. a package's /lib64 when the merged-/usr skeleton already made it a symlink
            target.mkdir(mode=0o755, exist_ok=True)
            target.chmod(mode)
        elif member.isfile():
            _remove(target)
            source = data.extractfile(member)
            assert source is not None
            with source, target.open("wb") as out:
                shutil.copyfileobj(source, out)
            target.chmod(mode)
        elif member.issym():
            _remove(target)
            os.symlink(member.linkname, target)
        elif member.islnk():
            # A hard link becomes a copy: layers hold files, directories and symlinks only.
            _remove(target)
            original = root / image_path(member.linkname)
            if original.exists() or original.is_symlink():  # absent when the prune rules dropped it
                shutil.copy2(original, target, follow_symlinks=False)
        else:
            raise BuildError(f"{deb.name} ships '{member.name}', a device or FIFO",
                             hint="such packages do not belong in a base image; leave it out")
    return Unpacked(tuple(listed), md5sums, dropped)


def tree_size(root: Path) -> int:
    """Bytes of regular files under `root` (what the uncompressed layer holds, less tar headers)."""
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total
