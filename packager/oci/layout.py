"""OCI image layout directories (image-layout spec): a source (`image_from_layout`) and a sink (`write`).

The sink places a layer blob that is a file mlpack knows (known.trusted) by a reflink, a hard link (when the caller
allows: layouts mlpack writes for users, never its own cache entries, which `mlpack cache verify` judges one by one)
or a copy in the kernel (reuse.place): no byte of it passes through mlpack; any other blob is streamed through its
digest check."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, BinaryIO

from mlpk.packager.errors import ConfigError, InputError, malformed
from mlpk.packager.oci import known, mediatype, reuse
from mlpk.packager import atomic
from mlpk.packager.atomic import atomic_dir
from mlpk.packager.oci.digest import CHUNK, Digest, HashingReader
from mlpk.packager.oci.image import Image, Index
from mlpk.packager.oci.layer import BlobLayer, FileBacked, Layer
from mlpk.packager.oci.platform import Platform

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_FILE = {"imageLayoutVersion": "1.0.0"}


def _write_blob(root: Path, digest: Digest, size: int, stream: BinaryIO) -> Path:
    path = root / "blobs" / "sha256" / digest.hex
    if path.exists():
        return path
    with stream as src, path.open("wb") as out:
        reader = HashingReader(src, digest, size, what="blob")
        while chunk := reader.read(CHUNK):
            out.write(chunk)
        reader.verify()
        out.flush()
        os.fsync(out.fileno())
    return path


def _write_layer(root: Path, layer: Layer, link: bool) -> None:
    """A layer's blob: placed without reading when its file is known, else streamed; known as hashed either way."""
    path = root / "blobs" / "sha256" / layer.digest.hex
    if path.exists():
        return
    source = layer.local_file() if isinstance(layer, FileBacked) else None
    if source is None or not reuse.place(source, path, link=link):
        _write_blob(root, layer.digest, layer.size, layer.open())
    known.hashed(path, layer.digest)


def _write_image(root: Path, img: Image, link: bool) -> None:
    for layer in img.layers:
        _write_layer(root, layer, link)
    config = img.config_blob
    _write_blob(root, config.digest, config.size, config.open())
    data = img.manifest_bytes()
    _write_blob(root, Digest.of(data), len(data), io.BytesIO(data))


def check_destination(path: Path, flag: str = "output") -> None:
    """Refuse a layout destination whose writing would lose something: a folder of other files (the layout replaces
    the whole folder), a file, or a path under a file. A new or empty folder, or an OCI layout, is fine."""
    target = Path(path)
    if target.exists() or target.is_symlink():
        if not target.is_dir():
            raise ConfigError(f"{flag} {target} is a file, not a folder for an OCI layout",
                              hint="choose a new or empty folder, or an OCI layout to replace")
        if not (target / "oci-layout").is_file() and any(target.iterdir()):
            raise ConfigError(f"{flag} {target} is a folder of other files, not an OCI layout: writing the layout "
                              "there would delete them", hint="choose a new or empty folder, or an OCI layout to "
                                                              "replace")
    atomic.check_destination(target / "index.json", flag)  # its parents: none may be a file


def write(item: Image | Index, path: Path, tag: str | None = None, *, link: bool = False) -> Path:
    """Write an image or index as an OCI layout at `path` (into a temporary directory, then renamed).

    index.json lists one descriptor: the image's manifest, or the index's own manifest for multi-arch; `tag`
    becomes its org.opencontainers.image.ref.name annotation. `link`: known blob files may be hard-linked (see the
    module docstring).
    """
    check_destination(Path(path))
    with atomic_dir(Path(path)) as root:
        (root / "blobs" / "sha256").mkdir(parents=True)
        images = item.images if isinstance(item, Index) else (item,)
        for img in images:
            _write_image(root, img, link)
        data = item.manifest_bytes()
        if isinstance(item, Index):
            _write_blob(root, Digest.of(data), len(data), io.BytesIO(data))
            descriptor: dict[str, Any] = {"mediaType": item.media_type, "digest": str(item.digest),
                                          "size": len(data)}
        else:
            descriptor = {"mediaType": item.media_type, "digest": str(item.digest), "size": len(data)}
        if tag:
            descriptor["annotations"] = {REF_NAME: tag}
        top = {"schemaVersion": 2, "mediaType": mediatype.OCI_INDEX, "manifests": [descriptor]}
        (root / "index.json").write_text(json.dumps(top, indent=2) + "\n")
        (root / "oci-layout").write_text(json.dumps(LAYOUT_FILE) + "\n")
    return Path(path)


def _read_json(root: Path, digest: Digest, size: int | None = None) -> tuple[dict[str, Any], bytes]:
    path = root / "blobs" / "sha256" / digest.hex
    try:
        with HashingReader(path.open("rb"), digest, size, what=f"layout blob {path}") as reader:
            data = reader.read()
            reader.verify()
    except FileNotFoundError as err:
        raise InputError(f"OCI layout '{root}' lacks blob {digest}", hint="the layout is incomplete; rewrite it") \
            from err
    try:
        return json.loads(data), data
    except json.JSONDecodeError as err:
        raise InputError(f"blob {digest} in '{root}' is not JSON", hint="the layout is corrupt") from err


def _image(root: Path, manifest_digest: Digest, size: int | None) -> Image:
    manifest, raw = _read_json(root, manifest_digest, size)
    media_type = manifest.get("mediaType") or mediatype.OCI_MANIFEST
    config_desc = manifest["config"]
    _, config_bytes = _read_json(root, Digest.parse(config_desc["digest"]), int(config_desc["size"]))
    diff_ids = json.loads(config_bytes).get("rootfs", {}).get("diff_ids", [])
    if len(diff_ids) != len(manifest.get("layers", [])):
        raise InputError(f"image {manifest_digest} in '{root}' has {len(manifest.get('layers', []))} layers but "
                         f"{len(diff_ids)} diff_ids", hint="the layout is corrupt")
    layers = tuple(
        BlobLayer(root / "blobs" / "sha256" / Digest.parse(d["digest"]).hex, Digest.parse(d["digest"]),
                  Digest.parse(diff), int(d["size"]), d["mediaType"])
        for d, diff in zip(manifest.get("layers", []), diff_ids, strict=True)
    )
    annotations = tuple(sorted((manifest.get("annotations") or {}).items()))
    return Image(config_bytes, layers, media_type, annotations, raw_manifest=raw)


def read(path: Path, tag: str | None = None) -> Image | Index:
    """The image or index an OCI layout holds (the descriptor named `tag`, or its only one)."""
    root = Path(path)
    try:
        top = json.loads((root / "index.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"'{root}' is not an OCI layout (no readable index.json)",
                         hint="give a directory written by `mlpack build --layout` or `skopeo copy … oci:DIR`") \
            from err
    with malformed(f"OCI layout '{root}'", "give a layout written by `mlpack build --layout` or `skopeo copy`"):
        return _descriptor(root, top, tag)


def _descriptor(root: Path, top: Any, tag: str | None) -> Image | Index:
    descriptors = top.get("manifests", [])
    if tag:
        descriptors = [d for d in descriptors if (d.get("annotations") or {}).get(REF_NAME) == tag]
    if len(descriptors) != 1:
        names = [(d.get("annotations") or {}).get(REF_NAME, d.get("digest")) for d in top.get("manifests", [])]
        raise InputError(f"OCI layout '{root}' has {len(descriptors)} matching entries (of {names})",
                         hint="name one with DIR:TAG")
    desc = descriptors[0]
    digest = Digest.parse(desc["digest"])
    if desc.get("mediaType") in mediatype.INDEXES:
        data, raw = _read_json(root, digest, desc.get("size"))
        images = tuple(_image(root, Digest.parse(d["digest"]), d.get("size")) for d in data.get("manifests", [])
                       if d.get("mediaType", mediatype.OCI_MANIFEST) in mediatype.MANIFESTS)
        return Index(images, desc["mediaType"], raw_manifest=raw)
    return _image(root, digest, desc.get("size"))


def image_from_layout(path: Path, platform: Platform | str | None = None, tag: str | None = None) -> Image:
    """The image in an OCI layout; from an index, the one for `platform` (default linux/amd64)."""
    item = read(path, tag)
    if isinstance(item, Index):
        plat = Platform.parse(platform) if isinstance(platform, str) else (platform or Platform())
        return item.image_for(plat)
    return item
