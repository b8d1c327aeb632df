"""The export directory (`mlpack export --out OUT`) as a medium of its own, and its report as a typed value.

    OUT/report.json              the ExportReport (this module is the only one that reads or writes it)
    OUT/oci/                     an OCI layout: the image, or the index of a multi-platform target
    OUT/image-ARCH.tar           a docker-archive per platform (unless --no-archive)
    OUT/model/ | OUT/models/NAME/VERSION/   the shipped model files, as the model layers hold them
    OUT/locks/PLATFORM.txt       the wheels each platform's deps layer was installed from

Deliver, bench and manifests read an export through `read`; nothing else parses report.json.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlpk.packager.errors import InputError
from mlpk.packager.oci.platform import Platform

REPORT = "report.json"
LAYOUT = "oci"


@dataclass(frozen=True, slots=True)
class LayerEntry:
    """One layer of an exported image as the report lists it: its name (base, deps, runtime, model, ...) and sizes."""

    name: str
    digest: str
    compressed: int
    uncompressed: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "digest": self.digest, "compressed": self.compressed,
                "uncompressed": self.uncompressed}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerEntry:
        return cls(str(data["name"]), str(data["digest"]), int(data["compressed"]), int(data["uncompressed"]))


@dataclass(frozen=True, slots=True)
class WheelsLock:
    """The lock a platform's deps layer was installed from: its file in OUT, whether it was re-used or resolved
    (and why), and the cached wheels that failed their sha256 and were fetched again."""

    file: str
    status: str
    refetched: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "status": self.status, "refetched": list(self.refetched)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WheelsLock | None:
        if not data:
            return None
        return cls(str(data["file"]), str(data.get("status", "")), tuple(str(r) for r in data.get("refetched") or ()))


@dataclass(frozen=True, slots=True)
class PlatformBuild:
    """The image of one platform: its digest, layers, uncompressed size in MB, archive file and wheels lock."""

    platform: str
    digest: str
    layers: tuple[LayerEntry, ...]
    size_mb: float
    archive: str | None
    wheels_lock: WheelsLock | None = None

    def layer(self, name: str) -> LayerEntry | None:
        return next((entry for entry in self.layers if entry.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"platform": self.platform, "digest": self.digest, "layers": [e.to_dict() for e in self.layers],
                "size_mb": self.size_mb, "archive": self.archive,
                "wheels_lock": self.wheels_lock.to_dict() if self.wheels_lock else {}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlatformBuild:
        return cls(str(data["platform"]), str(data["digest"]),
                   tuple(LayerEntry.from_dict(e) for e in data.get("layers") or ()), float(data.get("size_mb", 0)),
                   data.get("archive"), WheelsLock.from_dict(data.get("wheels_lock") or {}))


@dataclass(frozen=True, slots=True)
class Pushed:
    """Where a push put the image (or index), and per blob whether it was uploaded, mounted or already there."""

    reference: str
    digest: str
    blobs: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "digest": self.digest, "blobs": dict(self.blobs)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Pushed | None:
        if not data:
            return None
        return cls(str(data["reference"]), str(data.get("digest", "")), dict(data.get("blobs") or {}))


@dataclass(frozen=True, slots=True)
class ServedModel:
    """One model version the image serves: its name, version, the name of its layer (`model` in a one-model
    image, `model NAME/VERSION` in a repository), the source model's sha256 and kind, its card summary and what its
    optimization did."""

    name: str
    version: int
    layer: str
    sha256: str
    source: str
    card: Mapping[str, Any]
    optimization: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "layer": self.layer, "sha256": self.sha256,
                "source": self.source, "card": dict(self.card), "optimization": dict(self.optimization)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServedModel:
        return cls(str(data["name"]), int(data["version"]), str(data["layer"]), str(data["sha256"]),
                   str(data["source"]), dict(data["card"]), dict(data["optimization"]))


@dataclass(frozen=True, slots=True)
class ExportReport:
    """What an export built, measured and wrote. `model` and `optimization` are the card summary and optimization
    of the model this export prepared (the last one, for several); `models` lists every version the image serves.
    `cached_layers_read_bytes` counts the bytes of layers made or cached before this export that it read back
    (hashing, decompressing or copying them through mlpack): 0 when every layer it did not make was reused as it
    was."""

    target: str
    tag: str
    out: str
    model: Mapping[str, Any]
    optimization: Mapping[str, Any]
    platforms: tuple[PlatformBuild, ...]
    digest: str  # of the index (several platforms) or the image
    budget_mb: float
    pushed: Pushed | None
    run: tuple[str, ...]
    seconds: Mapping[str, float]
    models: tuple[ServedModel, ...] = ()
    cached_layers_read_bytes: int = 0

    def platform(self, platform: str) -> PlatformBuild | None:
        """The build for `platform` (compared as platforms: arm64 is arm64/v8)."""
        wanted = Platform.parse(platform)
        return next((b for b in self.platforms if wanted.matches(Platform.parse(b.platform))), None)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "tag": self.tag, "out": self.out, "model": dict(self.model),
                "optimization": dict(self.optimization), "platforms": [b.to_dict() for b in self.platforms],
                "digest": self.digest, "budget_mb": self.budget_mb,
                "pushed": self.pushed.to_dict() if self.pushed else None, "run": list(self.run),
                "seconds": dict(self.seconds), "models": [m.to_dict() for m in self.models],
                "cached_layers_read_bytes": self.cached_layers_read_bytes}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportReport:
        """A report as written by this or an earlier mlpack (which did not list `models` or count reads)."""
        return cls(str(data["target"]), str(data["tag"]), str(data.get("out", "")), dict(data.get("model") or {}),
                   dict(data.get("optimization") or {}),
                   tuple(PlatformBuild.from_dict(b) for b in data.get("platforms") or ()), str(data["digest"]),
                   float(data.get("budget_mb", 0)), Pushed.from_dict(data.get("pushed")),
                   tuple(str(r) for r in data.get("run") or ()), dict(data.get("seconds") or {}),
                   tuple(ServedModel.from_dict(m) for m in data.get("models") or ()),
                   int(data.get("cached_layers_read_bytes", 0)))


def is_export(path: Path) -> bool:
    """Whether `path` is a directory an `mlpack export` wrote (it holds a report)."""
    return (Path(path) / REPORT).is_file()


def read(path: Path) -> ExportReport:
    """The report of the export at `path`; InputError naming the file when it is missing or not a report."""
    file = Path(path) / REPORT
    try:
        return ExportReport.from_dict(json.loads(file.read_text()))
    except FileNotFoundError as err:
        raise InputError(f"'{path}' is not an mlpack export (it has no {REPORT})",
                         hint="give the --out directory of mlpack export") from err
    except OSError as err:
        raise InputError(f"'{file}' cannot be read: {err.strerror}", hint="check its permissions") from err
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"'{file}' is not an export report ({type(err).__name__}: {err})"[:300],
                         hint="export again with mlpack export MODEL --target T --out OUT") from err


def write_report(report: ExportReport, path: Path) -> None:
    """Write `report` into the export directory being assembled at `path`."""
    (Path(path) / REPORT).write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True))
