"""Structural validation of images (after go-containerregistry's validate.Image): run at the end of every
image-producing test.

Checks that every blob matches its digest and size, that each layer's uncompressed bytes hash to the diff_id the
config records, that no layer member escapes the root, that the manifest's media types are of one family, and
that the config names a platform. `check_base` is the one layer-safety check every base goes through, in `build`
and `export` alike, whatever its source; `known_layer` does a layer's check once per content, for the build path.
"""

from __future__ import annotations

import gzip
import hashlib
import tarfile
from typing import BinaryIO

from mlpk.packager.errors import BuildError, InputError, MlpackError
from mlpk.packager.oci import known, mediatype
from mlpk.packager.oci.digest import CHUNK, Digest
from mlpk.packager.oci.image import Image, Index
from mlpk.packager.oci.known import LayerReport
from mlpk.packager.oci.layer import Layer
from mlpk.packager.oci.safety import check_member

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class _Tee:
    """A stream that hashes and counts the decompressed bytes tarfile reads."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hash.update(data)
        self.count += len(data)
        return data


class _Prefixed:
    """`head` (bytes already read from `rest`), then the rest of the stream."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self.head, self.rest = head, rest

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.rest.read(n)
        if n < 0:
            data, self.head = self.head + self.rest.read(), b""
            return data
        data, self.head = self.head[:n], self.head[n:]
        return data


def _uncompressed(raw: BinaryIO, layer: Layer) -> BinaryIO:
    """The tar stream of a layer blob, gzip or plain (told apart by the bytes, not by the declared media type)."""
    head = raw.read(4)
    stream = _Prefixed(head, raw)
    if head.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[call-overload]  # _Prefixed reads like a file
    if head.startswith(ZSTD_MAGIC):
        raise InputError(f"layer {layer.digest} is zstd-compressed ({layer.media_type}), which mlpack does not read",
                         hint="give a base with gzip or uncompressed layers (skopeo copy --dest-compress-format "
                              "gzip converts one)")
    return stream  # type: ignore[return-value]


def check_layer(layer: Layer) -> LayerReport:
    """Verify one layer's digest, size, diff_id and members; raise BuildError or InputError on a problem."""
    members = 0
    with layer.open() as raw:
        tee = _Tee(_uncompressed(raw, layer))
        try:
            with tarfile.open(fileobj=tee, mode="r|") as tar:  # type: ignore[call-overload]
                for info in tar:
                    check_member(info)
                    members += 1
            while tee.read(CHUNK):  # the tar's end-of-archive padding belongs to the diff_id too
                pass
        except (tarfile.TarError, OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
            raise InputError(f"layer {layer.digest} is not a readable tar ({err})",
                             hint="the layer is truncated or not a layer; rebuild it") from err
        while raw.read(CHUNK):
            pass
    if Digest(tee.hash.hexdigest()) != layer.diff_id:
        raise BuildError(f"layer {layer.digest} decompresses to {Digest(tee.hash.hexdigest())}, but the config "
                         f"records diff_id {layer.diff_id}", hint="the image is corrupt; rebuild it")
    return LayerReport(layer.digest, layer.size, tee.count, members)


def known_layer(layer: Layer) -> LayerReport:
    """check_layer, done once per layer content: a layer that passes (or that mlpack made, layer_from_entries) is
    recorded by its compressed digest, which fixes every byte the check read, and a later call for the same digest,
    size and diff_id answers from the record without reading the blob (`known.recall`), so a re-export decompresses
    no cached layer again.

    Sound because bytes other than those checked never reach an image: a sink links or copies a blob file without
    reading it only when it is the very file that hashed to the digest and is unchanged since (`known.trusted`),
    and reads every other one through its digest check (writing a layout or a docker-archive, pushing). Validation
    (`validate`) reads every byte instead."""
    found = known.recall(layer.digest, layer.size, layer.diff_id)
    if found is not None:
        return found
    report = check_layer(layer)
    known.remember_layer(report, layer.diff_id)
    return report


def validate_image(img: Image) -> list[LayerReport]:
    """Validate a single-platform image; returns a report per layer."""
    manifest = img.manifest()
    config = img.config
    if "architecture" not in config or "os" not in config:
        raise BuildError(f"image {img.digest} has no architecture/os in its config", hint="set a platform")
    family = mediatype.FAMILY[img.media_type]
    if manifest["config"]["mediaType"] != family[0]:
        raise BuildError(f"image {img.digest} mixes manifest type {img.media_type} with config type "
                         f"{manifest['config']['mediaType']}", hint="use one family (OCI or Docker)")
    if Digest.parse(manifest["config"]["digest"]) != img.config_blob.digest:
        raise BuildError(f"image {img.digest}'s manifest names config {manifest['config']['digest']} but the config "
                         f"hashes to {img.config_blob.digest}", hint="the image is corrupt")
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    if [str(layer.diff_id) for layer in img.layers] != diff_ids:
        raise BuildError(f"image {img.digest}: its layers' diff_ids do not match the config's rootfs.diff_ids",
                         hint="build it with mutate.append_layers")
    for desc, layer in zip(manifest["layers"], img.layers, strict=True):
        if Digest.parse(desc["digest"]) != layer.digest or int(desc["size"]) != layer.size:
            raise BuildError(f"image {img.digest}: manifest layer {desc['digest']} does not describe {layer.digest}",
                             hint="the image is corrupt")
    return [check_layer(layer) for layer in img.layers]


def validate(item: Image | Index) -> None:
    """Validate an image, or every image of an index (with matching descriptors)."""
    if isinstance(item, Index):
        descriptors = item.manifest()["manifests"]
        for desc, img in zip(descriptors, item.images, strict=True):
            if Digest.parse(desc["digest"]) != img.digest:
                raise BuildError(f"index entry {desc['digest']} does not match image {img.digest}",
                                 hint="the index is corrupt")
            validate_image(img)
        return
    validate_image(item)


def check_base(img: Image, source: str) -> tuple[LayerReport, ...]:
    """The layer-safety check of a base image, whatever it came from (a registry, an OCI layout, a docker-archive,
    gzip or plain layers, a base mlpack built): every blob matches its digest, no member is absolute, climbs out
    with `..`, links outside the root or is a device file, and every layer hashes to the diff_id its config records
    (which `docker load` checks too), once per layer content (known_layer). An error names the base and the layer;
    returns a report per layer."""
    reports = []
    for number, layer in enumerate(img.layers, 1):
        try:
            reports.append(known_layer(layer))
        except MlpackError as err:
            which = "" if str(layer.digest) in err.message else f" ({layer.digest})"
            raise type(err)(f"base '{source}', layer {number} of {len(img.layers)}{which}: {err.message}",
                            hint="the base is corrupt, malformed or malicious; give another --base, or rebuild "
                                 "this one from a trusted source") from err
    return tuple(reports)
