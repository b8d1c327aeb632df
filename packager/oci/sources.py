"""The one grammar for "an image from wherever", used by export, build, inspect, deliver and bench:

    scratch                              an empty image (build only: it has no Python for a runtime)
    debian:SUITE                         a slim Python base built here from Debian packages (mlpk.packager.base)
    oci:DIR[:TAG] | oci-layout:DIR[:TAG] an OCI layout directory
    docker-archive:FILE[:TAG]            a `docker save` / `mlpack build --tar` archive (one platform)
    DIR[:TAG] | FILE[:TAG]               the same, told apart by what exists on disk (a path that exists wins over a
                                         registry reference; a missing FILE.tar is a missing file)
    [HOST[:PORT]/]REPO[:TAG][@DIGEST]    a registry reference

`parse` turns text into an ImageSource; `base()` is how `build` and `export` read a base: the image for one
platform, after the layer-safety check (`validate.check_base`), whichever of these it came from.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from mlpk.packager import targets
from mlpk.packager.errors import BuildError, ConfigError
from mlpk.packager.oci import layout, remote, tarball
from mlpk.packager.oci.image import Image, Index, empty_image, index
from mlpk.packager.oci.platform import Platform
from mlpk.packager.oci.validate import LayerReport, check_base


class Kind(enum.StrEnum):
    """Where an image comes from."""

    LAYOUT = "layout"
    TAR = "tar"
    REGISTRY = "registry"
    SCRATCH = "scratch"
    DEBIAN = "debian"


PREFIXES = {"oci:": Kind.LAYOUT, "oci-layout:": Kind.LAYOUT, "docker-archive:": Kind.TAR, "debian:": Kind.DEBIAN}


def _split_tag(text: str) -> tuple[Path, str | None]:
    """`DIR` or `DIR:TAG` / `FILE:TAG` (a tag after the last colon, when the whole text is not a path)."""
    path = Path(text)
    if path.exists():
        return path, None
    head, sep, tag = text.rpartition(":")
    if sep and Path(head).exists() and "/" not in tag:
        return Path(head), tag
    return path, None


@dataclass(frozen=True, slots=True)
class ImageSource:
    """A parsed image source: its kind, where it is (a path, a registry reference or a Debian suite), the tag that
    picks one image of a layout or archive, and the text it was parsed from."""

    kind: Kind
    location: str
    tag: str | None = None
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> ImageSource:
        """`text` in the grammar of the module docstring; a ConfigError names what is wrong."""
        if text == "scratch":
            return cls(Kind.SCRATCH, "", None, text)
        for prefix, kind in PREFIXES.items():
            if not text.startswith(prefix):
                continue
            rest = text[len(prefix):]
            if not rest:
                what = "suite" if kind is Kind.DEBIAN else "path"
                raise ConfigError(f"image source '{text}' has no {what} after '{prefix}'",
                                  hint=f"write {prefix}{'SUITE' if kind is Kind.DEBIAN else 'PATH'}")
            if kind is Kind.DEBIAN:
                if rest not in targets.debian_suites():
                    raise ConfigError(f"image source '{text}' names an unknown Debian suite '{rest}'",
                                      hint=f"use one of: {', '.join('debian:' + s for s in targets.debian_suites())}")
                return cls(kind, rest, None, text)
            path, tag = _split_tag(rest)
            return cls(kind, str(path), tag, text)
        path, tag = _split_tag(text)
        if path.is_dir():
            return cls(Kind.LAYOUT, str(path), tag, text)
        if path.is_file() or text.endswith(".tar"):  # a missing FILE.tar is a missing file, not a registry name
            return cls(Kind.TAR, str(path), tag, text)
        return cls(Kind.REGISTRY, text, None, text)

    def __str__(self) -> str:
        return self.text or (self.location if self.kind is Kind.REGISTRY else f"{self.kind}:{self.location}")

    def read(self) -> Image | Index:
        """The image or index this source names (every platform; a Debian base is built for each architecture)."""
        if self.kind is Kind.LAYOUT:
            return layout.read(Path(self.location), self.tag)
        if self.kind is Kind.TAR:
            return tarball.image_from_tarball(Path(self.location), self.tag)
        if self.kind is Kind.SCRATCH:
            return empty_image()
        if self.kind is Kind.DEBIAN:
            return index(*(self.image(Platform("linux", arch)) for arch in ("amd64", "arm64")))
        return remote.read(self.location)

    def image(self, platform: Platform) -> Image:
        """The single image for `platform` this source names; `scratch` is an empty image for it."""
        return self.base_image(platform)[0]

    def base_image(self, platform: Platform) -> tuple[Image, object | None]:
        """The image for `platform` and, for a base mlpack built from Debian packages, its SBOM."""
        if self.kind is Kind.SCRATCH:
            return empty_image(platform), None
        if self.kind is Kind.REGISTRY:
            return remote.image_from_registry(self.location, platform), None
        if self.kind is Kind.DEBIAN:
            # The one internal import not at the top: mlpk.packager.base builds on this package (oci), so it is
            # imported where a Debian base is opened, not when oci is.
            from mlpk.packager.base import pipeline

            built = pipeline.build(pipeline.BaseSpec(suite=self.location, arch=platform.architecture))
            return built.image, built.sbom()
        item = self.read()
        return (item.image_for(platform) if isinstance(item, Index) else item), None


def parse(text: str | ImageSource) -> ImageSource:
    return text if isinstance(text, ImageSource) else ImageSource.parse(text)


def kind_of(text: str) -> str:
    """layout | tar | registry | scratch | debian."""
    return str(parse(text).kind)


def read(text: str | ImageSource) -> Image | Index:
    """The image or index that `text` names (all platforms)."""
    return parse(text).read()


def image(text: str | ImageSource, platform: Platform) -> Image:
    """The single image for `platform` that `text` names; `scratch` is an empty image for it."""
    return parse(text).image(platform)


@dataclass(frozen=True, slots=True)
class Base:
    """A base image that passed the layer-safety check, with what the check measured of each layer, and its SBOM
    when mlpack built it from Debian packages."""

    source: str
    image: Image
    layers: tuple[LayerReport, ...]
    sbom: object | None = None

    @classmethod
    def checked(cls, img: Image, source: str, sbom: object | None = None) -> Base:
        """`img` after the layer-safety check."""
        return cls(source, img, check_base(img, source), sbom)


def base(text: str | ImageSource, platform: Platform) -> Base:
    """The base image for `platform` that `text` names, refused unless it is for that platform (compared with
    Platform.matches: an arm64 request takes arm64 and arm64/v8) and every layer passes the layer-safety check (see
    `validate.check_base`)."""
    source = parse(text)
    img, sbom = source.base_image(platform)
    if not platform.matches(img.platform):
        hint = "a docker-archive holds one platform: give an OCI layout or registry index" \
            if source.kind is Kind.TAR else "give a base for that platform or a multi-platform index"
        raise BuildError(f"base '{source}' is for {img.platform}, not {platform}", hint=hint)
    return Base.checked(img, str(source) if source.kind is not Kind.DEBIAN else
                        f"{source} ({platform.architecture})", sbom)
