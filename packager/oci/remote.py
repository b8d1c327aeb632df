"""Registries as a source (`image_from_registry`, `read`) and a sink (`push`), over the distribution API.

Pulled layers are lazy: their bytes are fetched into the blob cache (verified against their digest) the first time
they are opened, and the cached copy is checked on every open (a corrupted one is evicted and pulled again). A
pushed blob is HEADed first and skipped when present; a layer that came from another repository of the same
registry is mounted from there instead of uploaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from mlpk.packager.errors import RegistryError
from mlpk.packager.oci import known, mediatype
from mlpk.packager.oci.cache import BlobCache, default_cache
from mlpk.packager.oci.client import RegistryClient
from mlpk.packager.oci.digest import Digest
from mlpk.packager.oci.image import Image, Index, missing_platform_hint
from mlpk.packager.oci.platform import Platform
from mlpk.packager.oci.reference import Reference


@dataclass(frozen=True, slots=True)
class RemoteLayer:
    """A layer that lives in `registry`/`repository`; fetched into the cache when first opened."""

    client: RegistryClient = field(compare=False, repr=False)
    repository: str
    digest: Digest
    diff_id: Digest
    size: int
    media_type: str
    cache: BlobCache = field(compare=False)

    @property
    def registry(self) -> str:
        return self.client.registry

    def open(self) -> BinaryIO:
        """The blob from the cache; a cached copy that no longer matches its digest is evicted and pulled again."""

        def pull(out: BinaryIO) -> None:
            for chunk in self.client.blob(self.repository, self.digest, self.size):
                out.write(chunk)

        self.cache.ensure(self.digest, self.size, pull, source=f"{self.registry}/{self.repository}")
        return self.cache.open(self.digest, self.size)

    def local_file(self) -> Path | None:
        """The cached blob, when it is the file remembered as hashed (known.trusted); None: not pulled yet, or
        to be checked when opened."""
        path = self.cache.path(self.digest)
        return path if known.trusted(path, self.digest, self.size) else None


def _image(client: RegistryClient, repo: str, data: bytes, media_type: str, cache: BlobCache) -> Image:
    manifest = json.loads(data)
    desc = manifest["config"]
    config_digest = Digest.parse(desc["digest"])
    config = b"".join(client.blob(repo, config_digest, int(desc["size"])))
    diff_ids = json.loads(config).get("rootfs", {}).get("diff_ids", [])
    if len(diff_ids) != len(manifest.get("layers", [])):
        raise RegistryError(f"image {Digest.of(data)} in {client.registry}/{repo} has "
                            f"{len(manifest.get('layers', []))} layers but {len(diff_ids)} diff_ids",
                            hint="the image is corrupt")
    layers = tuple(
        RemoteLayer(client, repo, Digest.parse(d["digest"]), Digest.parse(diff), int(d["size"]), d["mediaType"],
                    cache)
        for d, diff in zip(manifest.get("layers", []), diff_ids, strict=True))
    annotations = tuple(sorted((manifest.get("annotations") or {}).items()))
    return Image(config, layers, media_type, annotations, raw_manifest=data)


def read(ref: str | Reference, *, client: RegistryClient | None = None,
         cache: BlobCache | None = None) -> Image | Index:
    """The image or index at `ref` (every image of an index is fetched: manifests and configs only)."""
    reference = Reference.parse(ref) if isinstance(ref, str) else ref
    http = client or RegistryClient.for_reference(reference)
    store = cache or default_cache()
    data, media_type = http.get_manifest(reference.repository, reference.identifier)
    if media_type in mediatype.INDEXES:
        images = []
        for desc in json.loads(data).get("manifests", []):
            if desc.get("mediaType") not in mediatype.MANIFESTS:
                continue  # attestation or nested index: not an image to run
            child, child_type = http.get_manifest(reference.repository, desc["digest"])
            images.append(_image(http, reference.repository, child, child_type, store))
        return Index(tuple(images), media_type, raw_manifest=data)
    return _image(http, reference.repository, data, media_type, store)


def image_from_registry(ref: str | Reference, platform: Platform | str | None = None, *,
                        client: RegistryClient | None = None, cache: BlobCache | None = None) -> Image:
    """The image at `ref`; from an index, the one for `platform` (default linux/amd64), fetching only it."""
    reference = Reference.parse(ref) if isinstance(ref, str) else ref
    http = client or RegistryClient.for_reference(reference)
    store = cache or default_cache()
    data, media_type = http.get_manifest(reference.repository, reference.identifier)
    if media_type not in mediatype.INDEXES:
        return _image(http, reference.repository, data, media_type, store)
    plat = Platform.parse(platform) if isinstance(platform, str) else (platform or Platform())
    descriptors = [d for d in json.loads(data).get("manifests", []) if d.get("mediaType") in mediatype.MANIFESTS]
    for desc in descriptors:
        if plat.matches(Platform.from_dict(desc.get("platform") or {})):
            child, child_type = http.get_manifest(reference.repository, desc["digest"])
            return _image(http, reference.repository, child, child_type, store)
    have = ", ".join(str(Platform.from_dict(d.get("platform") or {})) for d in descriptors) or "none"
    raise RegistryError(f"{reference} has no image for {plat} (it has: {have})",
                        hint=missing_platform_hint(plat))


@dataclass(frozen=True, slots=True)
class PushReport:
    """What a push did: the pushed reference with its digest, and per blob whether it was uploaded."""

    reference: str
    digest: Digest
    blobs: tuple[tuple[str, str], ...]  # (digest, exists|mounted|uploaded)

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "digest": str(self.digest), "blobs": dict(self.blobs)}


def _push_image(http: RegistryClient, repo: str, img: Image, identifier: str) -> list[tuple[str, str]]:
    done = []
    for layer in img.layers:
        mount = getattr(layer, "repository", None) if getattr(layer, "registry", None) == http.registry else None
        done.append((str(layer.digest), http.upload(repo, layer.digest, layer.size, layer.open, mount)))
    config = img.config_blob
    done.append((str(config.digest), http.upload(repo, config.digest, config.size, config.open)))
    http.put_manifest(repo, identifier, img.manifest_bytes(), img.media_type)
    return done


def push(item: Image | Index, ref: str | Reference, *, client: RegistryClient | None = None) -> PushReport:
    """Push an image (or an index and each of its images) to `ref`; returns what was uploaded."""
    reference = Reference.parse(ref) if isinstance(ref, str) else ref
    http = client or RegistryClient.for_reference(reference)
    repo = reference.repository
    identifier = reference.tag or (str(reference.digest) if reference.digest else "latest")
    if reference.digest and reference.digest != item.digest:
        raise RegistryError(f"cannot push {item.digest} to {reference}: the reference names another digest",
                            hint="push to a tag, or to the image's own digest")
    blobs: list[tuple[str, str]] = []
    if isinstance(item, Index):
        for img in item.images:
            blobs += _push_image(http, repo, img, str(img.digest))
        http.put_manifest(repo, identifier, item.manifest_bytes(), item.media_type)
    else:
        blobs = _push_image(http, repo, item, identifier)
    return PushReport(str(reference.with_digest(item.digest)), item.digest, tuple(blobs))
