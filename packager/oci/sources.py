"""One entry point for "an image from wherever": a registry reference, an OCI layout directory or a
docker-archive tar, told apart by what exists on disk (a path that exists wins over a reference)."""

from __future__ import annotations

from pathlib import Path

from mlpk.packager.oci import layout, remote, tarball
from mlpk.packager.oci.image import Image, Index, empty_image
from mlpk.packager.oci.platform import Platform


def _split_tag(text: str) -> tuple[Path, str | None]:
    """`DIR` or `DIR:TAG` / `FILE:TAG` (a tag after the last colon, when the whole text is not a path)."""
    path = Path(text)
    if path.exists():
        return path, None
    head, sep, tag = text.rpartition(":")
    if sep and Path(head).exists() and "/" not in tag:
        return Path(head), tag
    return path, None


def kind_of(text: str) -> str:
    """layout | tar | registry | scratch."""
    if text == "scratch":
        return "scratch"
    path, _ = _split_tag(text)
    if path.is_dir():
        return "layout"
    if path.is_file():
        return "tar"
    return "registry"


def read(text: str) -> Image | Index:
    """The image or index that `text` names (all platforms)."""
    kind = kind_of(text)
    path, tag = _split_tag(text)
    if kind == "layout":
        return layout.read(path, tag)
    if kind == "tar":
        return tarball.image_from_tarball(path, tag)
    if kind == "scratch":
        return empty_image()
    return remote.read(text)


def image(text: str, platform: Platform) -> Image:
    """The single image for `platform` that `text` names; `scratch` is an empty image for it."""
    kind = kind_of(text)
    if kind == "scratch":
        return empty_image(platform)
    if kind == "registry":
        return remote.image_from_registry(text, platform)
    item = read(text)
    return item.image_for(platform) if isinstance(item, Index) else item
