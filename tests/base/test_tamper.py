"""A tampered archive stops the build with a clear error and writes nothing (issue 6, acceptance).

The archive is a real copy: Debian's signed InRelease, the Packages index it vouches for and the .debs of a base,
served from a `file:` mirror (conftest's `mirror_copy`); one .deb or the InRelease is then altered, and the real
`mlpack` CLI is run on it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def _corrupt(path: Path, offset: int) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1:])
    return data


def _build(mlpack: Callable[..., object], mirror: Path, tmp_path: Path) -> object:
    return mlpack("base", "build", "--mirror", mirror.as_uri(), "-o", str(tmp_path / "out.tar"), "--sbom",
                  str(tmp_path / "sbom.json"), env={"MLPACK_CACHE": str(tmp_path / "cache")})


def test_a_package_with_a_wrong_checksum_stops_the_build(mirror_copy: Path, tmp_path: Path, mlpack) -> None:
    deb = next(mirror_copy.rglob("libc6_*.deb"))
    original = _corrupt(deb, len(deb.read_bytes()) // 2)
    try:
        done = _build(mlpack, mirror_copy, tmp_path)
    finally:
        deb.write_bytes(original)
    assert done.returncode == 7, done.stderr
    assert f"error: checksum mismatch for file://{deb}: expected sha256" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.tar").exists() and not (tmp_path / "sbom.json").exists()
    assert not (tmp_path / "cache" / "base" / "images").exists()
    stored = list((tmp_path / "cache" / "base" / "downloads").rglob("*.deb"))
    assert all(not p.name.startswith(".partial") for p in stored) and len(stored) < 30


def test_an_index_with_a_bad_signature_stops_the_build(mirror_copy: Path, tmp_path: Path, mlpack) -> None:
    in_release = mirror_copy / "dists" / "bookworm" / "InRelease"
    text = in_release.read_bytes()
    at = text.index(b"SHA256:") + 12  # a checksum byte inside the signed text
    original = _corrupt(in_release, at)
    try:
        done = _build(mlpack, mirror_copy, tmp_path)
    finally:
        in_release.write_bytes(original)
    assert done.returncode == 7, done.stderr
    assert "error: the signature of InRelease does not verify against" in done.stderr
    assert "BADSIG" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out.tar").exists() and not (tmp_path / "cache" / "base" / "downloads").exists()


def test_the_untampered_copy_builds(mirror_copy: Path, tmp_path: Path, mlpack, downloads: Path) -> None:
    """The control: the same mirror, unaltered, builds (so the two failures above are the tampering's)."""
    done = _build(mlpack, mirror_copy, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.tar").is_file() and (tmp_path / "sbom.json").is_file()
