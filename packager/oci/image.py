"""Images and indexes as immutable values (shared STYLE.md 2-3): nothing is written until a sink writes it.

An `Image` is its config JSON (bytes, so a pulled image keeps its exact digest), its layers and its manifest media
type; its manifest is derived from those. An `Index` lists images by platform for multi-arch references.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from mlpk.packager.errors import BuildError
from mlpk.packager.oci import mediatype
from mlpk.packager.oci.digest import Digest
from mlpk.packager.oci.layer import Layer
from mlpk.packager.oci.platform import Platform


def canonical_json(data: Any) -> bytes:
    """Compact JSON with sorted keys: the same value always gives the same bytes, hence the same digest."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class Blob:
    """Bytes held in memory (a config or manifest), with the same shape as a layer for the sinks."""

    data: bytes
    media_type: str

    @property
    def digest(self) -> Digest:
        return Digest.of(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data)


@dataclass(frozen=True, slots=True)
class Image:
    """A single-platform image."""

    config_bytes: bytes
    layers: tuple[Layer, ...] = ()
    media_type: str = mediatype.OCI_MANIFEST
    annotations: tuple[tuple[str, str], ...] = ()
    # The manifest exactly as a source served it; dropped by every transformation (then it is re-derived).
    raw_manifest: bytes | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.media_type not in mediatype.MANIFESTS:
            raise BuildError(f"image manifest media type '{self.media_type}' is not supported",
                             hint=f"use one of {', '.join(mediatype.MANIFESTS)}")

    @property
    def config(self) -> dict[str, Any]:
        """A fresh copy of the config JSON (changing it does not change the image)."""
        return json.loads(self.config_bytes)

    @property
    def config_blob(self) -> Blob:
        return Blob(self.config_bytes, mediatype.FAMILY[self.media_type][0])

    @property
    def platform(self) -> Platform:
        return Platform.from_dict(self.config)

    def manifest(self) -> dict[str, Any]:
        if self.raw_manifest is not None:
            return json.loads(self.raw_manifest)
        config = self.config_blob
        out: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": {"mediaType": config.media_type, "digest": str(config.digest), "size": config.size},
            "layers": [
                {"mediaType": mediatype.layer_type_for(self.media_type, layer.media_type),
                 "digest": str(layer.digest), "size": layer.size}
                for layer in self.layers
            ],
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def manifest_bytes(self) -> bytes:
        if self.raw_manifest is not None:
            return self.raw_manifest
        return json.dumps(self.manifest(), separators=(",", ":")).encode()

    @property
    def digest(self) -> Digest:
        """The manifest digest: the image's identity in a registry."""
        return Digest.of(self.manifest_bytes())

    def descriptor(self) -> dict[str, Any]:
        """This image's descriptor in an index, with its platform."""
        return {"mediaType": self.media_type, "digest": str(self.digest), "size": len(self.manifest_bytes()),
                "platform": self.platform.to_dict()}


@dataclass(frozen=True, slots=True)
class Index:
    """A multi-platform image: one image per platform."""

    images: tuple[Image, ...]
    media_type: str = mediatype.OCI_INDEX
    annotations: tuple[tuple[str, str], ...] = ()
    raw_manifest: bytes | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        seen: dict[str, int] = {}
        for image in self.images:
            key = str(image.platform)
            if key in seen:
                raise BuildError(f"index has two images for platform {key}",
                                 hint="give one image per platform")
            seen[key] = 1

    def manifest(self) -> dict[str, Any]:
        if self.raw_manifest is not None:
            return json.loads(self.raw_manifest)
        out: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type,
                               "manifests": [image.descriptor() for image in self.images]}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def manifest_bytes(self) -> bytes:
        if self.raw_manifest is not None:
            return self.raw_manifest
        return json.dumps(self.manifest(), separators=(",", ":")).encode()

    @property
    def digest(self) -> Digest:
        return Digest.of(self.manifest_bytes())

    def image_for(self, platform: Platform) -> Image:
        """The image for `platform`; a RegistryError listing the platforms there are when none matches."""
        for image in self.images:
            if platform.matches(image.platform):
                return image
        have = ", ".join(str(i.platform) for i in self.images) or "none"
        raise BuildError(f"the index has no image for {platform} (it has: {have})",
                         hint=missing_platform_hint(platform))


def missing_platform_hint(platform: Platform) -> str:
    """The hint for an index without an image for `platform`. Export (whose --target chooses the platforms) reaches
    it through --base as well as build, so the flag is named with its command."""
    return f"use an image or index that has {platform}, or build for one of its platforms (mlpack build --platform)"


def index(*images: Image) -> Index:
    """An index of `images` (one per platform), of the same family (OCI or Docker) as the first image."""
    if not images:
        raise BuildError("an index needs at least one image", hint="give one image per platform")
    return Index(tuple(images), mediatype.INDEX_FOR[images[0].media_type])


def empty_image(platform: Platform | str = "linux/amd64") -> Image:
    """An image with no layers for `platform` (the base of a from-scratch build)."""
    plat = Platform.parse(platform) if isinstance(platform, str) else platform
    config = {**plat.to_dict(), "config": {}, "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
    return Image(canonical_json(config))
