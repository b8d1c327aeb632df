"""mlpack's cache on the build machine as areas to list, verify, clean and prune (`mlpack cache`).

    area     folders under locations.cache_dir()           one entry is
    blobs    blobs/                                        an OCI blob: a layer built, pulled or rewritten
    debs     base/downloads/                               a verified Debian download (.deb, Packages index)
    bases    base/images/, base/plans/, base/blobs/        a built base image (OCI layout and its record)
    layers   layers/                                       the record of a finished deps layer (blob in blobs/)
    wheels   wheels/                                       a downloaded wheel (per platform, Python and glibc)
    runs     runs/                                         the record of a run's temporary work (runs.py)
    corpus   corpus/                                       a file of the test corpus (listed when present)

Everything in the cache is fetched again or rebuilt when it is missing, so any area can be removed while no
mlpack command runs (one that is running may fail when its cache goes). `verify` re-hashes what is named by its
content (blobs, debs, base images with their records); wheels are listed and cleaned by size only. `prune` removes
what killed runs and writers left (run folders and temporary blobs whose owner is gone, as every run's own sweep
does, `runs.sweep`; other temporary files once untouched for an hour) and, with an age, entries stored longer ago
than that.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpk.packager import atomic, locations, runs
from mlpk.packager.base import archive, pipeline
from mlpk.packager.errors import ConfigError, MlpackError
from mlpk.packager.oci.cache import BlobCache, remove_stale

TMP_AGE_S = 3600.0  # a temporary file untouched this long belongs to a writer that is gone


@dataclass(frozen=True, slots=True)
class Area:
    """One kind of thing mlpack caches: its folders (relative to the cache root) and the glob of one entry."""

    name: str
    folders: tuple[str, ...]
    entry: str  # glob, relative to the cache root
    what: str
    optional: bool = False  # listed only when present


AREAS = (
    Area("blobs", ("blobs",), "blobs/sha256/*", "OCI blobs (layers built, pulled or rewritten)"),
    Area("debs", ("base/downloads",), "base/downloads/??/[!.]*", "verified Debian downloads (.debs, indices)"),
    Area("bases", ("base/images", "base/plans", "base/blobs"), "base/images/[!.]*.json",
         "base images built from Debian packages, and their plans"),
    Area("layers", ("layers",), "layers/deps-*.json", "records of finished deps layers"),
    Area("wheels", ("wheels",), "wheels/*/*.whl", "downloaded wheels per platform, Python and glibc"),
    Area("runs", ("runs",), "runs/*.lock", "records of runs' temporary work (swept once their owner is gone)"),
    Area("corpus", ("corpus",), "corpus/**/*", "the test corpus's downloads", optional=True),
)
NAMES = tuple(a.name for a in AREAS)


@dataclass(frozen=True, slots=True)
class Usage:
    """What one area holds: entries and bytes (every file under its folders, temporary ones included)."""

    area: str
    folders: tuple[Path, ...]
    entries: int
    bytes: int
    what: str

    def to_dict(self) -> dict[str, Any]:
        return {"area": self.area, "folders": [str(f) for f in self.folders], "entries": self.entries,
                "bytes": self.bytes, "what": self.what}


@dataclass(frozen=True, slots=True)
class BadEntry:
    """A cache entry whose bytes do not match the digest it is named or recorded by."""

    area: str
    path: Path
    reason: str
    evicted: bool

    def to_dict(self) -> dict[str, Any]:
        return {"area": self.area, "path": str(self.path), "reason": self.reason, "evicted": self.evicted}


@dataclass(frozen=True, slots=True)
class Verification:
    """What `verify` read: entries checked per area, and the bad ones."""

    checked: tuple[tuple[str, int], ...]
    bad: tuple[BadEntry, ...]

    @property
    def remaining(self) -> tuple[BadEntry, ...]:
        """Bad entries still in the cache (all of them, unless they were evicted with fix=True)."""
        return tuple(b for b in self.bad if not b.evicted)

    def to_dict(self) -> dict[str, Any]:
        return {"checked": dict(self.checked), "bad": [b.to_dict() for b in self.bad],
                "remaining": len(self.remaining)}


@dataclass(frozen=True, slots=True)
class Removal:
    """What was removed from one area."""

    area: str
    entries: int
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"area": self.area, "entries": self.entries, "bytes": self.bytes}


def _root(root: Path | None) -> Path:
    return Path(root) if root is not None else locations.cache_dir()


def _files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():  # an area folder may be a link to a shared one (bench shares the downloads)
            yield from (p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        elif path.is_symlink() or path.is_file():
            yield path


def _bytes(paths: Iterable[Path]) -> int:
    total = 0
    for path in _files(paths):
        try:
            total += path.lstat().st_size
        except FileNotFoundError:
            continue
    return total


def _area(name: str) -> Area:
    for area in AREAS:
        if area.name == name:
            return area
    raise ConfigError(f"'{name}' is not a cache area", hint=f"use one of: {', '.join(NAMES)}")


def usage(root: Path | None = None) -> list[Usage]:
    """Entries and bytes of every area (optional ones only when present)."""
    base = _root(root)
    out = []
    for area in AREAS:
        folders = tuple(base / f for f in area.folders)
        if area.optional and not any(f.exists() for f in folders):
            continue
        entries = sum(1 for p in base.glob(area.entry) if p.is_file())
        out.append(Usage(area.name, folders, entries, _bytes(folders), area.what))
    return out


def verify(*, fix: bool = False, root: Path | None = None) -> Verification:
    """Re-hash blobs, the .deb store and the base images; with `fix`, evict the bad entries (each is fetched
    again or rebuilt when next needed)."""
    base = _root(root)
    checked: dict[str, int] = {}
    bad: list[BadEntry] = []

    def found(area: str, path: Path, reason: str, evict: Any) -> None:
        if fix:
            evict(path)
        bad.append(BadEntry(area, path, reason, fix))

    def unlink(path: Path) -> None:
        path.unlink(missing_ok=True)

    for area, cache in (("blobs", BlobCache(base / "blobs")), ("bases", BlobCache(base / "base" / "blobs"))):
        checked[area] = checked.get(area, 0) + len(cache.entries())
        for path in cache.bad():
            found(area, path, "its bytes do not hash to its name", unlink)
    store = archive.Store(base / "base" / "downloads")
    checked["debs"] = len(store.entries())
    for path in store.check():
        found("debs", path, "its bytes do not hash to its name", unlink)
    images = sorted({p.with_suffix("") for p in (base / "base" / "images").glob("[!.]*")})
    checked["bases"] += len(images)
    for stored in images:
        try:
            pipeline.proven(stored)
        except (ValueError, KeyError, TypeError, MlpackError) as err:
            found("bases", stored, str(err), pipeline.evict)
    return Verification(tuple(sorted(checked.items())), tuple(bad))


def clean(names: Sequence[str] = (), root: Path | None = None) -> list[Removal]:
    """Remove the named areas (all when none are named); returns what each freed."""
    base = _root(root)
    areas = [_area(n) for n in dict.fromkeys(names)] or list(AREAS)
    out = []
    for area in areas:
        entries = sum(1 for p in base.glob(area.entry) if p.is_file())
        folders = [base / f for f in area.folders]
        freed = _bytes(f for f in folders if not f.is_symlink())  # a linked folder is unlinked, not emptied
        for folder in folders:
            if folder.is_symlink() or folder.is_file():
                folder.unlink()
            elif folder.exists():
                shutil.rmtree(folder)
        out.append(Removal(area.name, entries, freed))
    return out


def prune(*, older_than_days: float | None = None, root: Path | None = None) -> list[Removal]:
    """Remove what killed writers left (the blob caches' and the download store's own rules; other temporary files
    once untouched for an hour) and, with `older_than_days`, the entries of blobs, debs, bases and layers stored
    longer ago than that; returns what each area freed."""
    base = _root(root)
    if older_than_days is not None and older_than_days < 0:
        raise ConfigError(f"--older-than {older_than_days:g} is negative", hint="give a number of days, e.g. 30")

    def stale(*patterns: str, age: float = TMP_AGE_S) -> Callable[[], int]:
        return lambda: remove_stale([p for pattern in patterns for p in base.glob(pattern)], age)

    def swept(*folders: str) -> Callable[[], int]:  # atomic writes' temporaries whose writers are gone
        return lambda: sum(atomic.sweep(base / folder) for folder in folders)

    leftovers: dict[str, list[Callable[[], int]]] = {
        "blobs": [BlobCache(base / "blobs").prune_tmp],
        "debs": [archive.Store(base / "base" / "downloads").prune_partial],
        "bases": [BlobCache(base / "base" / "blobs").prune_tmp, swept("base/plans", "base/images"),
                  stale(f"base/plans/{archive.PARTIAL}*", f"base/images/{archive.PARTIAL}*", "base/images/.*.tmp-*",
                        "base/images/.*.old-*")],  # what mlpack versions before atomic.sweep left: by age
        "layers": [swept("layers"), stale("layers/.*.tmp")],
        "runs": [lambda: runs.sweep().folders if base == locations.cache_dir() else 0],  # sweep() reads the cache
    }
    stored = {"blobs": ("blobs/sha256/*",), "debs": ("base/downloads/??/[!.]*",),
              "bases": ("base/images/[!.]*", "base/plans/[!.]*", "base/blobs/sha256/*"),
              "layers": ("layers/deps-*.json",), "runs": ()}
    out = []
    for name, removers in leftovers.items():
        folders = [base / f for f in _area(name).folders]
        before = _bytes(folders)
        removed = sum(remove() for remove in removers)
        if older_than_days is not None:
            removed += stale(*stored[name], age=older_than_days * 86400)()
        out.append(Removal(name, removed, before - _bytes(folders)))
    return out
