"""Bases by reference: what a target profile's `base` field names, turned into an Image.

    debian:bookworm | debian:trixie      built here from Debian packages (this package's `build`)
    oci-layout:PATH[@TAG]                an OCI layout directory (offline use)
    docker-archive:PATH[@TAG]            a `docker save` archive (offline use)
    REGISTRY/REPO[:TAG]@sha256:DIGEST    a registry image, pulled through the registry source; pinned by digest,
                                         so a profile always means the same bytes (tags move)

The standard third-party bases (Docker Hub Python slim, the AWS Lambda Python base, NVIDIA L4T and CUDA images)
are such pinned registry references in the target files; offline, the same images come from a layout or archive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpk.packager.errors import ConfigError

KINDS = ("debian", "oci-layout", "docker-archive", "registry")
_PINNED = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class BaseRef:
    """A parsed base reference."""

    kind: str  # one of KINDS
    value: str  # suite, path or registry reference
    tag: str | None = None

    def __str__(self) -> str:
        if self.kind == "registry":
            return self.value
        return f"{self.kind}:{self.value}" + (f"@{self.tag}" if self.tag else "")


def parse(text: str) -> BaseRef:
    """`text` as a BaseRef; a registry reference without a digest is a ConfigError naming the fix."""
    text = text.strip()
    kind, sep, rest = text.partition(":")
    if sep and kind == "debian":
        from mlpk.packager.base.sources import SUITES

        if rest not in SUITES:
            raise ConfigError(f"base '{text}' names an unknown Debian suite '{rest}'",
                              hint=f"use one of: {', '.join('debian:' + s for s in SUITES)}")
        return BaseRef("debian", rest)
    if sep and kind in ("oci-layout", "docker-archive"):
        path, _, tag = rest.partition("@")
        if not path:
            raise ConfigError(f"base '{text}' has no path", hint=f"write {kind}:PATH")
        return BaseRef(kind, path, tag or None)
    if not _PINNED.match(text):
        raise ConfigError(f"base '{text}' is not pinned by digest",
                          hint="write REGISTRY/REPO[:TAG]@sha256:DIGEST (skopeo inspect docker://REF shows it), "
                               "or use debian:SUITE, oci-layout:PATH or docker-archive:PATH")
    return BaseRef("registry", text)


def open_base(ref: BaseRef | str, platform: str, *, cache: Any = None) -> Any:
    """The base image for `platform` (`linux/amd64`, `linux/arm64`) that `ref` names."""
    from mlpk.packager import oci

    ref = parse(ref) if isinstance(ref, str) else ref
    arch = platform.rsplit("/", 1)[-1] if platform.count("/") == 1 else platform.split("/")[1]
    if ref.kind == "debian":
        from mlpk.packager.base.pipeline import BaseSpec, build

        return build(BaseSpec(suite=ref.value, arch=arch), cache).image
    if ref.kind == "oci-layout":
        image = oci.image_from_layout(Path(ref.value), platform, ref.tag)
    elif ref.kind == "docker-archive":
        image = oci.image_from_tarball(Path(ref.value), ref.tag)
    else:
        image = oci.image_from_registry(ref.value, platform)
    found = image.platform.architecture
    if found != arch:
        raise ConfigError(f"base '{ref}' is a linux/{found} image, but {platform} was asked for",
                          hint="give a base for that platform (or a multi-platform index)")
    return image
