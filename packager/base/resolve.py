"""The dependency closure of a set of Debian packages, from verified Packages indices.

What apt does for `apt-get install --no-install-recommends`, reduced to what a base image needs: Pre-Depends and
Depends are followed; an OR group is satisfied by anything already chosen, else by its first alternative that
exists (a real package whose version fits, else a package that Provides the name); versioned constraints are
honoured (`=`, `>=`, `<<`...), against provided versions too. Recommends and Suggests are not followed. Essential
packages are *not* added implicitly (debootstrap would): a distroless base has no shell or coreutils unless a
package asks for them. Names in `exclude` count as present and are not installed — for dependencies that only
maintainer scripts use (dpkg, debconf, awk, openssl's CLI for update-ca-certificates), which are never run here.
No backtracking: when a later constraint contradicts an earlier choice, the resolution fails with both named.
"""

from __future__ import annotations

import difflib
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from debian import deb822
from debian.deb822 import PkgRelation
from debian.debian_support import version_compare

from mlpk.packager.errors import BuildError

_OPS = {"<<": lambda c: c < 0, "<=": lambda c: c <= 0, "=": lambda c: c == 0, ">=": lambda c: c >= 0,
        ">>": lambda c: c > 0}


@dataclass(frozen=True, slots=True)
class Package:
    """One chosen binary package: where its .deb is, the checksum it must have, and its control fields."""

    name: str
    version: str
    arch: str
    url: str
    sha256: str
    size: int
    fields: tuple[tuple[str, str], ...]  # the index paragraph, for the dpkg status database and the SBOM

    def field(self, key: str, default: str = "") -> str:
        return next((v for k, v in self.fields if k == key), default)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "arch": self.arch, "url": self.url,
                "sha256": self.sha256, "size": self.size, "fields": [list(kv) for kv in self.fields]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Package:
        return cls(data["name"], data["version"], data["arch"], data["url"], data["sha256"], int(data["size"]),
                   tuple((k, v) for k, v in data["fields"]))


def compare_versions(a: str, b: str) -> int:
    """Debian version order (deb-version(7)), negative when a < b."""
    return int(version_compare(a, b))


def _fits(version: str, constraint: tuple[str, str] | None) -> bool:
    if constraint is None:
        return True
    op, wanted = constraint
    return _OPS[op](compare_versions(version, wanted))


class Universe:
    """Every package of the indices for one architecture: by name (newest first) and by what they provide."""

    def __init__(self, arch: str, indices: Iterable[tuple[str, bytes]]) -> None:
        """`indices`: (archive URI, uncompressed Packages text) pairs; later duplicates of a version lose."""
        self.arch = arch
        self.by_name: dict[str, list[dict[str, str]]] = {}
        self.providers: dict[str, list[tuple[dict[str, str], str | None]]] = {}
        for uri, text in indices:
            for para in deb822.Packages.iter_paragraphs(io.BytesIO(text), use_apt_pkg=False):
                if para.get("Architecture") not in (arch, "all"):
                    continue
                entry = dict(para)
                entry["_uri"] = uri
                versions = self.by_name.setdefault(entry["Package"], [])
                if any(v["Version"] == entry["Version"] for v in versions):
                    continue
                versions.append(entry)
        for versions in self.by_name.values():
            versions.sort(key=_VersionKey, reverse=True)
            for entry in versions[:1]:
                for group in _relations(entry, "Provides"):
                    for alt in group:
                        provided = alt["version"][1] if alt.get("version") else None
                        self.providers.setdefault(alt["name"], []).append((entry, provided))
        for provs in self.providers.values():
            provs.sort(key=lambda p: p[0]["Package"])

    def candidate(self, name: str, constraint: tuple[str, str] | None) -> dict[str, str] | None:
        """The newest real package called `name` that fits `constraint`."""
        return next((v for v in self.by_name.get(name, []) if _fits(v["Version"], constraint)), None)

    def provider(self, name: str, constraint: tuple[str, str] | None) -> list[dict[str, str]]:
        """Packages that provide `name` (with a provided version fitting `constraint`, when one is given)."""
        return [entry for entry, provided in self.providers.get(name, [])
                if constraint is None or (provided is not None and _fits(provided, constraint))]


class _VersionKey:
    __slots__ = ("version",)

    def __init__(self, entry: dict[str, str]) -> None:
        self.version = entry["Version"]

    def __lt__(self, other: _VersionKey) -> bool:
        return compare_versions(self.version, other.version) < 0


def _relations(entry: Mapping[str, str], field: str) -> list[list[Any]]:
    text = entry.get(field)
    return PkgRelation.parse_relations(text) if text else []


def _to_package(entry: dict[str, str]) -> Package:
    fields = tuple((k, v) for k, v in entry.items() if not k.startswith("_") and k not in ("Filename", "SHA256",
                   "MD5sum", "Size", "Description-md5", "Tag"))
    return Package(entry["Package"], entry["Version"], entry["Architecture"], f"{entry['_uri']}/{entry['Filename']}",
                   entry["SHA256"], int(entry["Size"]), fields)


def resolve(universe: Universe, wanted: Iterable[str], exclude: Iterable[str] = ()) -> tuple[Package, ...]:
    """The closure of `wanted` under Pre-Depends and Depends, sorted by name."""
    excluded = set(exclude)
    chosen: dict[str, dict[str, str]] = {}
    provided: dict[str, list[tuple[str, str | None]]] = {}  # virtual name -> (chosen provider, version)
    queue: list[tuple[str, str]] = []  # (package name, who asked)

    def choose(entry: dict[str, str]) -> None:
        chosen[entry["Package"]] = entry
        for group in _relations(entry, "Provides"):
            for alt in group:
                provided.setdefault(alt["name"], []).append((entry["Package"], alt["version"][1] if alt.get(
                    "version") else None))
        queue.append((entry["Package"], entry["Package"]))

    def satisfied(alt: dict[str, Any]) -> bool:
        name, constraint = alt["name"], alt.get("version")
        if name in excluded:
            return True
        if name in chosen and _fits(chosen[name]["Version"], constraint):
            return True
        return any(constraint is None or (v is not None and _fits(v, constraint)) for _, v in provided.get(name, []))

    for name in sorted(set(wanted)):
        entry = universe.candidate(name, None)
        if entry is None:
            virtual = universe.provider(name, None)
            if not virtual:
                close = difflib.get_close_matches(name, universe.by_name.keys(), n=3)
                raise BuildError(f"package '{name}' is not in the {universe.arch} indices",
                                 hint=f"did you mean {', '.join(close)}?" if close else "check the name and suite")
            entry = virtual[0]
        if entry["Package"] not in chosen:
            choose(entry)

    while queue:
        name, _ = queue.pop(0)
        entry = chosen[name]
        for group in _relations(entry, "Pre-Depends") + _relations(entry, "Depends"):
            group = [alt for alt in group if not alt.get("arch") or any(
                a.enabled == (a.arch == universe.arch) for a in alt["arch"])]
            if not group or any(satisfied(alt) for alt in group):
                continue
            pick = _pick(universe, group, chosen)
            if pick is None:
                wanted_text = " | ".join(_describe(alt) for alt in group)
                raise BuildError(f"{name} {entry['Version']} depends on '{wanted_text}', which no {universe.arch} "
                                 "package of the indices satisfies (or it contradicts an earlier choice: "
                                 f"{_clash(group, chosen)})",
                                 hint="add a matching package (mlpack base build --packages), or check that the "
                                      "suite's update/security pockets are in the sources")
            choose(pick)
    return tuple(_to_package(chosen[n]) for n in sorted(chosen))


def _pick(universe: Universe, group: list[dict[str, Any]], chosen: Mapping[str, Any]) -> dict[str, str] | None:
    for alt in group:
        if alt["name"] in chosen:
            continue  # chosen, but at a version that does not fit: only another alternative can help
        entry = universe.candidate(alt["name"], alt.get("version"))
        if entry is not None:
            return entry
    for alt in group:
        providers = [p for p in universe.provider(alt["name"], alt.get("version")) if p["Package"] not in chosen]
        if providers:
            return providers[0]
    return None


def _describe(alt: Mapping[str, Any]) -> str:
    return f"{alt['name']} ({alt['version'][0]} {alt['version'][1]})" if alt.get("version") else str(alt["name"])


def _clash(group: list[dict[str, Any]], chosen: Mapping[str, Mapping[str, str]]) -> str:
    found = [f"{alt['name']} {chosen[alt['name']]['Version']} is chosen" for alt in group if alt["name"] in chosen]
    return "; ".join(found) or "none chosen"
