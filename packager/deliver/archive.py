"""docker-archives that carry only some layer blobs, with a sha256sum-style checksum file beside them.

`docker load` (moby image/tarexport, load.go) looks each layer up by its chain ID first and reads the layer's file
from the archive only when the engine lacks that chain, so an archive whose manifest.json lists every layer but
holds only the missing blobs loads on an engine that has the rest (verified against Docker 20.10 in
tests/deliver). A full bundle is the special case that carries every blob.

Each archive also carries `mlpack-delivery.json` (ignored by `docker load`): the image digest, its layers, which
blobs are inside, and the chain the engine must already have, so `apply` can refuse early and say why.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpk.packager.deliver.images import chain_ids, diff_ids, missing_layers, resolve
from mlpk.packager.errors import ConfigError, InputError
from mlpk.packager.oci import Image
from mlpk.packager.atomic import atomic_file
from mlpk.packager.oci.digest import CHUNK

INFO = "mlpack-delivery.json"
SCHEMA = "mlpack.delivery/v1"


@dataclass(frozen=True, slots=True)
class ArchiveInfo:
    """What an archive holds: the image, its tag, and which layer blobs are inside (by index)."""

    path: Path
    digest: str
    tag: str | None
    layers: int
    included: tuple[int, ...]
    size: int
    layer_bytes: int  # compressed bytes of the included layer blobs
    requires_chain: str | None  # the engine must have this chain (the omitted layers), or None
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["path"] = str(self.path)
        data["included"] = list(self.included)
        return data


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.uname, info.gname = size, 0o644, 0, "", ""
    return info


def write(img: Image, path: Path, tag: str | None, include: set[int] | None = None) -> ArchiveInfo:
    """Write `img` as a docker-archive holding the blobs of the layers in `include` (all when None), atomically,
    and its checksum file PATH.sha256."""
    if tag and ":" not in tag.rsplit("/", 1)[-1]:
        tag = f"{tag}:latest"
    count = len(img.layers)
    chosen = set(range(count)) if include is None else set(include)
    omitted = [i for i in range(count) if i not in chosen]
    if omitted and omitted != list(range(len(omitted))):
        raise InputError(f"layers {omitted} of {img.digest} cannot be left out: a Docker engine stacks layers, so "
                         f"only a bottom run of them can already be there", hint="send every layer above the first "
                         "missing one")
    chains = chain_ids(diff_ids(img))
    requires = str(chains[len(omitted) - 1]) if omitted else None
    config = img.config_blob
    names = [f"{layer.digest.hex}.tar.gz" for layer in img.layers]
    manifest = [{"Config": f"{config.digest.hex}.json", "RepoTags": [tag] if tag else [], "Layers": names}]
    meta = {"schema": SCHEMA, "image": str(img.digest), "tag": tag, "layers": [str(d) for d in diff_ids(img)],
            "included": sorted(chosen), "requires_chain": requires}
    layer_bytes = 0
    path = Path(path)
    with atomic_file(path) as tmp, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_info(f"{config.digest.hex}.json", config.size), io.BytesIO(config.data))
        written: set[str] = set()
        for index, (name, layer) in enumerate(zip(names, img.layers, strict=True)):
            if index not in chosen or name in written:
                continue
            written.add(name)
            with layer.open() as src:
                tar.addfile(_info(name, layer.size), src)
            layer_bytes += layer.size
        for member, data in (("manifest.json", manifest), (INFO, meta)):
            raw = json.dumps(data, separators=(",", ":")).encode()
            tar.addfile(_info(member, len(raw)), io.BytesIO(raw))
    digest = write_checksum(path)
    return ArchiveInfo(path, str(img.digest), tag, count, tuple(sorted(chosen)), path.stat().st_size, layer_bytes,
                       requires, digest)


def sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def write_checksum(path: Path) -> str:
    """PATH.sha256 in `sha256sum` format (`sha256sum -c` checks it); returns the hex digest."""
    digest = sha256_file(path)
    with atomic_file(checksum_path(path)) as tmp:
        tmp.write_text(f"{digest}  {path.name}\n")
    return digest


def verify(path: Path) -> str:
    """Check PATH against PATH.sha256; InputError naming both digests when they differ."""
    sums = checksum_path(path)
    if not sums.is_file():
        raise InputError(f"'{path}' has no checksum file '{sums.name}' beside it",
                         hint="copy the .sha256 file written with the bundle too")
    expected = sums.read_text().split()[0] if sums.read_text().split() else ""
    actual = sha256_file(path)
    if actual != expected:
        raise InputError(f"'{path}' hashes to sha256:{actual}, but {sums.name} says sha256:{expected}",
                         hint="the copy is damaged or incomplete: copy the bundle again")
    return actual


def read_info(path: Path) -> dict[str, Any]:
    """The mlpack-delivery.json of an archive (a plain `docker save` archive has none: then every blob is in)."""
    try:
        with tarfile.open(path, "r:") as tar:
            try:
                member = tar.extractfile(INFO)
            except KeyError:
                return {"schema": None, "requires_chain": None}
            return json.loads(member.read()) if member else {"schema": None, "requires_chain": None}
    except (OSError, tarfile.TarError, json.JSONDecodeError) as err:
        raise InputError(f"'{path}' is not a readable docker-archive: {err}",
                         hint="give a file written by mlpack deliver bundle|delta") from err


def bundle(image: str, out: Path, platform: str | None = None, tag: str | None = None) -> ArchiveInfo:
    """A full docker-archive of IMAGE for offline `docker load`, with its checksum file."""
    resolved = resolve(image, platform)
    return write(resolved.image, out, tag or resolved.tag)


def delta(old: str, new: str, out: Path, platform: str | None = None, tag: str | None = None) -> ArchiveInfo:
    """An archive of NEW holding only the layers a device that has OLD lacks (checked again by `apply`)."""
    before = resolve(old, platform)
    after = resolve(new, platform)
    old_platform, new_platform = before.image.platform, after.image.platform
    if not (old_platform.matches(new_platform) or new_platform.matches(old_platform)):  # arm64 is arm64/v8
        raise InputError(f"--from is for {before.image.platform} but --to is for {after.image.platform}",
                         hint="give two images of the same platform (--platform)")
    if before.image.digest == after.image.digest:
        raise ConfigError(f"--from and --to are the same image ({after.image.digest}): a device that has it needs "
                          "no delta", hint="give the image the device has as --from, and the new one as --to")
    need = missing_layers(after.image, set(chain_ids(diff_ids(before.image))))
    return write(after.image, out, tag or after.tag, set(need))
