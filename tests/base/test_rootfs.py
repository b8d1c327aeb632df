"""Unpacking .deb data members (built here with the real dpkg-deb), pruning, and the system files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mlpk.packager.base import rootfs, system
from mlpk.packager.base.resolve import Package
from mlpk.packager.errors import BuildError
from tests.conftest import require



@pytest.fixture(autouse=True)
def _dpkg_deb() -> None:
    require("dpkg")  # the test packages are built with dpkg-deb


def _deb(tmp: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    tree = tmp / "pkg"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text("Package: demo\nVersion: 1.0\nArchitecture: amd64\n"
                                             "Maintainer: t <t@example.org>\nDescription: demo\n")
    (tree / "DEBIAN" / "md5sums").write_text("0123  usr/bin/tool\n")
    (tree / "DEBIAN" / "postinst").write_text("#!/bin/sh\ntouch /postinst-ran\n")
    (tree / "DEBIAN" / "postinst").chmod(0o755)
    for name, data in files.items():
        path = tree / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o755 if "/bin/" in f"/{name}" else 0o644)
    for name, target in (links or {}).items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, tree / name)
    out = tmp / "demo.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(tree), str(out)], check=True,
                   capture_output=True)
    return out


def test_unpack_merges_usr_prunes_docs_and_runs_no_scripts(tmp_path: Path) -> None:
    deb = _deb(tmp_path, {"bin/tool": b"#!tool\n", "usr/share/doc/demo/README": b"x" * 1000,
                          "usr/share/doc/demo/copyright": b"GPL\n", "usr/share/man/man1/tool.1": b"man"},
               {"usr/lib/demo/link": "../../bin/tool"})
    root = tmp_path / "root"
    root.mkdir()
    rootfs.prepare(root, "amd64")
    done = rootfs.unpack(deb, root)
    assert os.readlink(root / "bin") == "usr/bin" and os.readlink(root / "lib64") == "usr/lib64"
    assert (root / "usr/bin/tool").read_bytes() == b"#!tool\n"
    assert (root / "usr/bin/tool").stat().st_mode & 0o777 == 0o755
    assert os.readlink(root / "usr/lib/demo/link") == "../../bin/tool"
    assert (root / "usr/share/doc/demo/copyright").is_file()
    assert not (root / "usr/share/doc/demo/README").exists() and not (root / "usr/share/man").exists()
    assert done.pruned_bytes == 1003
    assert "/bin/tool" in done.paths and "/usr/share/doc/demo/README" in done.paths  # dpkg lists as shipped
    assert done.md5sums == b"0123  usr/bin/tool\n"
    assert not (root / "postinst-ran").exists() and not Path("/postinst-ran").exists()


def test_unpack_never_writes_through_a_package_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    os.symlink(str(outside), root / "usr/lib/evil")
    deb = _deb(tmp_path, {"usr/lib/evil/file": b"x"})
    with pytest.raises(BuildError, match="goes through the symlink 'usr/lib/evil'"):
        rootfs.unpack(deb, root)
    assert list(outside.iterdir()) == []


def test_member_paths() -> None:
    assert rootfs.image_path("./lib/x86_64-linux-gnu/libc.so.6") == "usr/lib/x86_64-linux-gnu/libc.so.6"
    assert rootfs.image_path("./etc/.hidden") == "etc/.hidden"
    assert rootfs.image_path("./") == ""
    with pytest.raises(BuildError, match="escapes the root"):
        rootfs.image_path("./usr/../../etc/passwd")
    assert rootfs.pruned("usr/share/locale/de/LC_MESSAGES/x.mo")
    assert rootfs.pruned("usr/lib/aarch64-linux-gnu/gconv/IBM1047.so")
    assert not rootfs.pruned("usr/share/doc/libc6/copyright") and not rootfs.pruned("usr/lib/python3.11/os.py")


def test_system_files(tmp_path: Path) -> None:
    certs = tmp_path / "usr/share/ca-certificates/mozilla"
    certs.mkdir(parents=True)
    (certs / "B.crt").write_text("-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----")
    (certs / "A.crt").write_text("-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n")
    assert system.write_ca_bundle(tmp_path) == 2
    bundle = (tmp_path / "etc/ssl/certs/ca-certificates.crt").read_text()
    assert bundle.index("\nA\n") < bundle.index("\nB\n") and bundle.endswith("-----END CERTIFICATE-----\n")
    assert os.readlink(tmp_path / "usr/lib/ssl/cert.pem") == "/etc/ssl/certs/ca-certificates.crt"
    system.write_accounts(tmp_path)
    assert "nonroot:x:65532:65532:" in (tmp_path / "etc/passwd").read_text()
    assert (tmp_path / "tmp").stat().st_mode & 0o7777 == 0o1777
    pkg = Package("libfoo1", "1.2-3", "amd64", "u", "0" * 64, 1, (
        ("Package", "libfoo1"), ("Version", "1.2-3"), ("Architecture", "amd64"), ("Multi-Arch", "same"),
        ("Depends", "libc6 (>= 2.34)"), ("Description", "foo library\n long text\n .\n more")))
    system.write_dpkg_db(tmp_path, [(pkg, rootfs.Unpacked(("/", "/usr/lib/libfoo.so.1"), b"", 0))])
    status = (tmp_path / "var/lib/dpkg/status").read_text()
    assert status.startswith("Package: libfoo1\nStatus: install ok installed\nArchitecture: amd64\n"
                             "Multi-Arch: same\nVersion: 1.2-3\nDepends: libc6 (>= 2.34)\n"
                             "Description: foo library\n long text\n .\n more\n")
    from debian import deb822
    (parsed,) = list(deb822.Deb822.iter_paragraphs(status))
    assert parsed["Status"] == "install ok installed"
    assert (tmp_path / "var/lib/dpkg/info/libfoo1:amd64.list").read_text() == "/.\n/usr/lib/libfoo.so.1\n"
