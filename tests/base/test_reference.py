"""Bases by reference through the one image-source grammar (mlpk.packager.oci.sources; issue 16 merged the base
package's own grammar into it): parsing, and offline copies of a built base opening as the same image."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mlpk.packager.base import write
from mlpk.packager.errors import BuildError, ConfigError
from mlpk.packager.oci import Platform, sources
from mlpk.packager.oci.sources import ImageSource, Kind

DIGEST = "sha256:" + "ab" * 32


def test_parse(tmp_path: Path) -> None:
    layout_dir = tmp_path / "layout"
    layout_dir.mkdir()
    assert ImageSource.parse("debian:trixie") == ImageSource(Kind.DEBIAN, "trixie", None, "debian:trixie")
    assert ImageSource.parse(f"oci-layout:{layout_dir}:v1") == ImageSource(Kind.LAYOUT, str(layout_dir), "v1",
                                                                           f"oci-layout:{layout_dir}:v1")
    assert ImageSource.parse(f"{layout_dir}:v1").kind is Kind.LAYOUT
    assert ImageSource.parse("docker-archive:base.tar") == ImageSource(Kind.TAR, "base.tar", None,
                                                                       "docker-archive:base.tar")
    assert ImageSource.parse("base.tar").kind is Kind.TAR  # a missing FILE.tar is a missing file
    ref = f"public.ecr.aws/lambda/python:3.12@{DIGEST}"
    assert ImageSource.parse(ref) == ImageSource(Kind.REGISTRY, ref, None, ref)
    assert str(ImageSource.parse(ref)) == ref
    assert ImageSource.parse("scratch").kind is Kind.SCRATCH


@pytest.mark.parametrize(("text", "message"), [
    ("debian:sid", "unknown Debian suite 'sid'"),
    ("oci-layout:", "has no path after 'oci-layout:'"),
    ("debian:", "has no suite after 'debian:'"),
])
def test_bad_references_are_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ImageSource.parse(text)


def test_offline_copies_open_as_the_same_image(built: Callable[..., object], tmp_path: Path) -> None:
    base = built("bookworm", "amd64")
    layout_dir = write(base, tmp_path / "layout", tag="v1")  # type: ignore[arg-type]
    archive = write(base, tmp_path / "base.tar", tag="mlpack/base:v1")  # type: ignore[arg-type]
    digest = base.image.digest  # type: ignore[attr-defined]
    amd64 = Platform.parse("linux/amd64")
    assert sources.base(f"oci-layout:{layout_dir}:v1", amd64).image.digest == digest
    from_archive = sources.base(f"docker-archive:{archive}", amd64).image
    assert from_archive.config["rootfs"] == base.image.config["rootfs"]  # type: ignore[attr-defined]
    with pytest.raises(BuildError, match=r"is for linux/amd64, not linux/arm64"):
        sources.base(f"oci-layout:{layout_dir}", Platform.parse("linux/arm64"))
