"""Image references (`host[:port]/repo/name[:tag][@sha256:…]`), parsed the way Docker normalizes them."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from mlpk.packager.errors import ConfigError
from mlpk.packager.oci.digest import Digest

DOCKER_HUB = "registry-1.docker.io"
_REPO = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_LOOPBACK = ("localhost", "127.0.0.1", "[::1]")


def split_tag(text: str) -> tuple[str, str | None]:
    """`[HOST[:PORT]/]NAME[:TAG]` (no digest) -> (everything before the tag, the tag or None): the tag is what
    follows the last ':' of the last path segment, so a registry's port is never taken for one. The one place that
    splits a tag off an image name."""
    head, slash, last = text.rpartition("/")
    name, colon, tag = last.rpartition(":") if ":" in last else (last, "", "")
    return head + slash + name, (tag if colon else None)


def with_default_tag(text: str) -> str:
    """`text` with `:latest` when it names no tag (as `docker load` and `docker save` name images); a ConfigError
    when `text` is no image reference (`docker load` would refuse the archive)."""
    Reference.parse(text)
    return text if split_tag(text)[1] is not None else f"{text}:latest"


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed reference; `tag` and `digest` may both be set (the digest wins when pulling)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        rest, _, digest_text = text.partition("@")
        first, slash, remainder = rest.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, remainder
        else:
            registry, path = DOCKER_HUB, rest
            if "/" not in path:
                path = f"library/{path}"
        name, tag = split_tag(path)
        if not _REPO.match(name) or (tag is not None and not _TAG.match(tag)):
            raise ConfigError(f"image reference '{text}' is not valid",
                              hint="use HOST[:PORT]/REPO[:TAG][@sha256:DIGEST], lowercase repository names")
        return cls(registry, name, tag or None, Digest.parse(digest_text) if digest_text else None)

    @property
    def identifier(self) -> str:
        """What goes after /manifests/: the digest, else the tag, else `latest`."""
        return str(self.digest) if self.digest else (self.tag or "latest")

    @property
    def scheme(self) -> str:
        """http for loopback and $MLPACK_INSECURE_REGISTRIES (comma-separated hosts), https otherwise."""
        insecure = {h.strip() for h in os.environ.get("MLPACK_INSECURE_REGISTRIES", "").split(",") if h.strip()}
        host = self.registry.rsplit(":", 1)[0] if not self.registry.startswith("[") else self.registry
        return "http" if host in _LOOPBACK or self.registry in insecure or host in insecure else "https"

    def with_tag(self, tag: str | None) -> Reference:
        return Reference(self.registry, self.repository, tag, None)

    def with_digest(self, digest: Digest) -> Reference:
        return Reference(self.registry, self.repository, None, digest)

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out
