"""Base references: parsing (pinning enforced) and opening offline copies of a built base."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mlpk.packager.base import reference, write
from mlpk.packager.errors import ConfigError

DIGEST = "sha256:" + "ab" * 32


def test_parse() -> None:
    assert reference.parse("debian:trixie") == reference.BaseRef("debian", "trixie")
    assert reference.parse("oci-layout:/b/layout@v1") == reference.BaseRef("oci-layout", "/b/layout", "v1")
    assert reference.parse("docker-archive:base.tar") == reference.BaseRef("docker-archive", "base.tar")
    ref = f"public.ecr.aws/lambda/python:3.12@{DIGEST}"
    assert reference.parse(ref) == reference.BaseRef("registry", ref)
    assert str(reference.parse(ref)) == ref


@pytest.mark.parametrize(("text", "message"), [
    ("python:3.11-slim", "is not pinned by digest"),
    ("debian:sid", "unknown Debian suite 'sid'"),
    ("oci-layout:", "has no path"),
    ("nvcr.io/nvidia/l4t-jetpack@sha256:short", "is not pinned by digest"),
])
def test_bad_references_are_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        reference.parse(text)


def test_offline_copies_open_as_the_same_image(built: Callable[..., object], tmp_path: Path) -> None:
    base = built("bookworm", "amd64")
    layout_dir = write(base, tmp_path / "layout", tag="v1")  # type: ignore[arg-type]
    archive = write(base, tmp_path / "base.tar", tag="mlpack/base:v1")  # type: ignore[arg-type]
    digest = base.image.digest  # type: ignore[attr-defined]
    assert reference.open_base(f"oci-layout:{layout_dir}@v1", "linux/amd64").digest == digest
    from_archive = reference.open_base(f"docker-archive:{archive}", "linux/amd64")
    assert from_archive.config["rootfs"] == base.image.config["rootfs"]  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="is a linux/amd64 image, but linux/arm64 was asked for"):
        reference.open_base(f"oci-layout:{layout_dir}", "linux/arm64")
