"""The files a package manager's scripts would have made, written directly: what a distroless root needs.

- `/var/lib/dpkg/status` and `info/*.list`, `*.md5sums`: scanners (Trivy, Grype, Syft) find Debian packages here.
- `/etc/passwd`, `/etc/group`: root, and `nonroot` (uid/gid 65532, as distroless), and nobody; no shells.
- `/etc/ssl/certs/ca-certificates.crt`: ca-certificates ships the certificates but its postinst
  (update-ca-certificates) makes the bundle; it is the concatenation of the enabled certificates in the order
  of /etc/ca-certificates.conf (all of /usr/share/ca-certificates by default), which is what is written here.
  OpenSSL's default paths (/usr/lib/ssl/cert.pem, /usr/lib/ssl/certs; shipped by the `openssl` package, which a
  base does not need) point at it, so Python's `ssl.create_default_context()` trusts the bundle.
- `/etc/nsswitch.conf`: files then DNS, so getaddrinfo resolves names (base-files' postinst would copy it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mlpk.packager.base.resolve import Package
from mlpk.packager.base.rootfs import Unpacked

NONROOT_UID = 65532

PASSWD = ("root:x:0:0:root:/root:/usr/sbin/nologin\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
          f"nonroot:x:{NONROOT_UID}:{NONROOT_UID}:nonroot:/home/nonroot:/usr/sbin/nologin\n")
GROUP = f"root:x:0:\nnogroup:x:65534:\nnonroot:x:{NONROOT_UID}:\n"
NSSWITCH = ("passwd:         files\ngroup:          files\nshadow:         files\nhosts:          files dns\n"
            "networks:       files\nprotocols:      files\nservices:       files\nethers:         files\n"
            "rpc:            files\n")

# The control fields dpkg keeps in its status file, in dpkg's order (deb-control(5), dpkg's lib/dpkg/parse.c).
STATUS_FIELDS = ("Package", "Essential", "Protected", "Priority", "Section", "Installed-Size", "Origin",
                 "Maintainer", "Bugs", "Architecture", "Multi-Arch", "Source", "Version", "Replaces", "Provides",
                 "Depends", "Pre-Depends", "Recommends", "Suggests", "Breaks", "Conflicts", "Enhances",
                 "Description", "Homepage", "Built-Using")


def _write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)


def status_paragraph(package: Package) -> str:
    """The dpkg status entry of an installed package."""
    lines = []
    for key in STATUS_FIELDS:
        value = package.field(key)
        if key == "Package":
            lines += [f"Package: {package.name}", "Status: install ok installed"]
        elif value:
            # Multi-line values (Description) keep their continuation lines, as in the index.
            lines.append(f"{key}: {value}" if not value.startswith("\n") else f"{key}:{value}")
    return "\n".join(lines) + "\n"


def write_dpkg_db(root: Path, packages: Sequence[tuple[Package, Unpacked]]) -> None:
    """/var/lib/dpkg/status and the per-package file lists and md5sums, as dpkg would leave them."""
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True, exist_ok=True)
    for name in ("updates", "triggers"):
        (root / "var/lib/dpkg" / name).mkdir(exist_ok=True)
    _write(root / "var/lib/dpkg/status", "\n".join(status_paragraph(p) for p, _ in packages))
    _write(root / "var/lib/dpkg/available", "")
    for package, unpacked in packages:
        stem = f"{package.name}:{package.arch}" if package.field("Multi-Arch") == "same" else package.name
        paths = ["/." if p == "/" else p for p in unpacked.paths]
        _write(info / f"{stem}.list", "".join(f"{p}\n" for p in paths))
        if unpacked.md5sums:
            _write(info / f"{stem}.md5sums", unpacked.md5sums)


def write_accounts(root: Path) -> None:
    """Users and groups, their homes, and a world-writable /tmp."""
    _write(root / "etc/passwd", PASSWD)
    _write(root / "etc/group", GROUP)
    _write(root / "etc/nsswitch.conf", NSSWITCH)
    for name, mode in (("root", 0o700), ("home/nonroot", 0o700), ("tmp", 0o1777)):
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name).chmod(mode)


def write_ca_bundle(root: Path) -> int:
    """/etc/ssl/certs/ca-certificates.crt from the shipped certificates; returns how many it holds (0: none)."""
    shipped = root / "usr/share/ca-certificates"
    certs = sorted(p for p in shipped.rglob("*.crt")) if shipped.is_dir() else []
    if not certs:
        return 0
    bundle = b""
    for cert in certs:
        data = cert.read_bytes()
        bundle += data if data.endswith(b"\n") else data + b"\n"
    _write(root / "etc/ssl/certs/ca-certificates.crt", bundle)
    ssl_dir = root / "usr/lib/ssl"
    ssl_dir.mkdir(parents=True, exist_ok=True)
    for name, target in (("certs", "/etc/ssl/certs"), ("cert.pem", "/etc/ssl/certs/ca-certificates.crt")):
        if not (ssl_dir / name).is_symlink():
            os.symlink(target, ssl_dir / name)
    return len(certs)
