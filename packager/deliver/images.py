"""IMAGE|DIR arguments of the delivery commands, resolved to one single-platform image.

An argument is an `mlpack export` output directory (its report names the tag and its layout holds the image,
mlpk.packager.exportdir), an OCI layout directory, a docker-archive tar or a registry reference
(mlpk.packager.oci.sources).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from mlpk.packager import exportdir
from mlpk.packager.errors import ConfigError, InputError
from mlpk.packager.exportdir import ExportReport
from mlpk.packager.oci import Image, Index, Platform, sources
from mlpk.packager.oci.digest import Digest


@dataclass(frozen=True, slots=True)
class Resolved:
    """The image an argument names, the tag it goes by (when it has one) and its export report (when any)."""

    image: Image
    tag: str | None
    report: ExportReport | None

    @property
    def labels(self) -> dict[str, str]:
        return dict((self.image.config.get("config") or {}).get("Labels") or {})


def _archive_tag(path: Path) -> str | None:
    try:
        with tarfile.open(path, "r:") as tar:
            member = tar.extractfile("manifest.json")
            entries = json.loads(member.read()) if member else []
    except (OSError, KeyError, tarfile.TarError, json.JSONDecodeError):
        return None
    tags = [t for e in entries for t in (e.get("RepoTags") or [])]
    return tags[0] if len(tags) == 1 else None


def resolve(text: str, platform: str | None = None, *, strict: bool = True) -> Resolved:
    """The image `text` names; from an index, the one for `platform` (required when there are several). A single
    image for another platform is an error when `strict`, else returned as it is (the caller checks)."""
    path = Path(text)
    report = None
    tag: str | None = None
    source = text
    if path.is_dir() and exportdir.is_export(path):
        report = exportdir.read(path)
        source, tag = str(path / exportdir.LAYOUT), report.tag
    elif path.is_file():
        tag = _archive_tag(path)
    elif not path.exists() and "/" not in text and ":" not in text:
        raise InputError(f"'{text}' is neither a file, a directory nor a registry reference",
                         hint="give an export directory, an OCI layout, a docker-archive or HOST/REPO:TAG")
    item = sources.read(source)
    if isinstance(item, Index):
        if platform is None and len(item.images) > 1:
            have = ", ".join(str(i.platform) for i in item.images)
            raise ConfigError(f"'{text}' holds an index of {len(item.images)} images ({have})",
                              hint="pick one with --platform")
        img = item.images[0] if platform is None else item.image_for(Platform.parse(platform))
        if report and len(item.images) > 1:
            tag = f"{tag}-{img.platform.architecture}"
    else:
        img = item
        if strict and platform is not None and not Platform.parse(platform).matches(img.platform):
            raise ConfigError(f"'{text}' is for {img.platform}, not {platform}",
                              hint=f"give an image built for {platform} (or drop --platform)")
    return Resolved(img, tag, report)


def item_of(text: str) -> Image | Index:
    """Every platform `text` names (an export directory's whole index), for pushes that keep the index."""
    path = Path(text)
    return sources.read(str(path / exportdir.LAYOUT) if path.is_dir() and exportdir.is_export(path) else text)


def diff_ids(img: Image) -> list[Digest]:
    return [Digest.parse(d) for d in (img.config.get("rootfs") or {}).get("diff_ids", [])]


def chain_ids(layer_diff_ids: list[Digest]) -> list[Digest]:
    """ChainID of every prefix of a layer stack (OCI image spec, config.md "Layer ChainID"):
    ChainID(L0) = DiffID(L0); ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln)).
    A Docker engine stores layers by chain, so a layer is "present" only on top of the same layers below."""
    out: list[Digest] = []
    for diff in layer_diff_ids:
        if not out:
            out.append(diff)
        else:
            out.append(Digest(hashlib.sha256(f"{out[-1]} {diff}".encode()).hexdigest()))
    return out


def missing_layers(img: Image, present_chains: set[Digest]) -> list[int]:
    """Indexes of `img`'s layers whose chain is not among `present_chains`: the blobs an engine needs sent."""
    return [i for i, chain in enumerate(chain_ids(diff_ids(img))) if chain not in present_chains]
