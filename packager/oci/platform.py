"""Platforms (`linux/amd64`, `linux/arm64/v8`) as the OCI image index describes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlpk.packager.errors import ConfigError

_ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64", "x86-64": "amd64"}


@dataclass(frozen=True, slots=True)
class Platform:
    """An OS/architecture pair with an optional variant (arm64 images usually leave it out or say v8)."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """`linux/arm64`, `linux/arm64/v8`, `arm64` -> Platform; bad text is a ConfigError naming it."""
        parts = [p for p in text.strip().split("/")]
        if len(parts) == 1 and parts[0]:
            parts = ["linux", parts[0]]
        if len(parts) not in (2, 3) or not all(parts):
            raise ConfigError(f"platform '{text}' is not of the form os/arch[/variant]",
                              hint="e.g. linux/amd64 or linux/arm64")
        arch = _ARCH_ALIASES.get(parts[1], parts[1])
        return cls(parts[0], arch, parts[2] if len(parts) == 3 else None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Platform:
        return cls(str(data.get("os", "linux")), str(data.get("architecture", "amd64")), data.get("variant") or None)

    def to_dict(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out

    def matches(self, other: Platform) -> bool:
        """Whether `other` (from an index) satisfies this request; a request without variant accepts any, and
        arm64 without a variant is the same as arm64/v8 (the spec's recommended default)."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        if self.variant is None:
            return True
        default = "v8" if self.architecture == "arm64" else None
        return (other.variant or default) == self.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)
