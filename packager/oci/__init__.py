"""The daemonless OCI image core: images and layers as immutable values, deterministic layers, and one module
per storage medium, each a source and a sink (shared STYLE.md, after go-containerregistry).

    digest, platform      values: Digest, Platform
    layer, image          Layer (protocol), Image, Index; layer_from_dir / layer_from_entries, empty_image
    mutate                append_layers, with_config, annotate (pure: return new images)
    layout                OCI layout directory: image_from_layout, layout.write
    tarball               docker-archive tar: image_from_tarball, tarball.write
    remote                registry (distribution API): image_from_registry, remote.push
    daemon                load into a local Docker engine
    cache                 content-addressed blob cache
    validate              structural checks run at the end of every image-producing test
"""

from __future__ import annotations

from mlpk.packager.oci import remote
from mlpk.packager.oci.digest import Digest
from mlpk.packager.oci.image import Blob, Image, Index, empty_image, index
from mlpk.packager.oci.layer import BlobLayer, Entry, Layer, layer_from_dir, layer_from_entries
from mlpk.packager.oci.layout import image_from_layout
from mlpk.packager.oci.mutate import annotate, append_layers, with_config
from mlpk.packager.oci.platform import Platform
from mlpk.packager.oci.tarball import image_from_tarball


def image_from_registry(ref: str, platform: Platform | str | None = None, **kwargs: object) -> Image:
    """The image at a registry reference (see mlpk.packager.oci.remote.image_from_registry)."""
    return remote.image_from_registry(ref, platform, **kwargs)  # type: ignore[arg-type]


__all__ = [
    "Blob", "BlobLayer", "Digest", "Entry", "Image", "Index", "Layer", "Platform", "annotate", "append_layers",
    "empty_image", "image_from_layout", "image_from_registry", "image_from_tarball", "index", "layer_from_dir",
    "layer_from_entries", "with_config",
]
