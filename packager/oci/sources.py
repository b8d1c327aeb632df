"""One entry point for "an image from wherever": a registry reference, an OCI layout directory or a
docker-archive tar, told apart by an explicit prefix (`oci:DIR`, `oci-layout:DIR`, `docker-archive:FILE`) or else by
what exists on disk (a path that exists wins over a reference).

`base()` is how `build` and `export` read a base: the image for one platform, after the layer-safety check
(`validate.check_base`), whichever of these it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlpk.packager.errors import BuildError
from mlpk.packager.oci import layout, remote, tarball
from mlpk.packager.oci.image import Image, Index, empty_image
from mlpk.packager.oci.platform import Platform
from mlpk.packager.oci.validate import LayerReport, check_base

PREFIXES = {"oci:": "layout", "oci-layout:": "layout", "docker-archive:": "tar"}


def _split_tag(text: str) -> tuple[Path, str | None]:
    """`DIR` or `DIR:TAG` / `FILE:TAG` (a tag after the last colon, when the whole text is not a path)."""
    path = Path(text)
    if path.exists():
        return path, None
    head, sep, tag = text.rpartition(":")
    if sep and Path(head).exists() and "/" not in tag:
        return Path(head), tag
    return path, None


def _prefixed(text: str) -> tuple[str, str] | None:
    """(kind, rest) for a text with an explicit source prefix."""
    for prefix, kind in PREFIXES.items():
        if text.startswith(prefix):
            return kind, text[len(prefix):]
    return None


def kind_of(text: str) -> str:
    """layout | tar | registry | scratch."""
    if text == "scratch":
        return "scratch"
    explicit = _prefixed(text)
    if explicit is not None:
        return explicit[0]
    path, _ = _split_tag(text)
    if path.is_dir():
        return "layout"
    if path.is_file() or text.endswith(".tar"):  # a missing FILE.tar is a missing file, not a registry name
        return "tar"
    return "registry"


def read(text: str) -> Image | Index:
    """The image or index that `text` names (all platforms)."""
    kind = kind_of(text)
    explicit = _prefixed(text)
    path, tag = _split_tag(explicit[1] if explicit else text)
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


@dataclass(frozen=True, slots=True)
class Base:
    """A base image that passed the layer-safety check, with what the check measured of each layer."""

    source: str
    image: Image
    layers: tuple[LayerReport, ...]

    @classmethod
    def checked(cls, img: Image, source: str) -> Base:
        """`img` after the layer-safety check (for bases that come from elsewhere, e.g. built by mlpack)."""
        return cls(source, img, check_base(img, source))


def base(text: str, platform: Platform) -> Base:
    """The base image for `platform` that `text` names, refused unless it is for that platform and every layer
    passes the layer-safety check (see `validate.check_base`)."""
    img = image(text, platform)
    if not platform.matches(img.platform):
        hint = "a docker-archive holds one platform: give an OCI layout or registry index" \
            if kind_of(text) == "tar" else "give a base for that platform or a multi-platform index"
        raise BuildError(f"base '{text}' is for {img.platform}, not {platform}", hint=hint)
    return Base.checked(img, text)
