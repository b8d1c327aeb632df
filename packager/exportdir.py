"""The export directory (`mlpack export --out OUT`) as a medium of its own, and its report as a typed value.

    OUT/report.json              the ExportReport (this module is the only one that reads or writes it)
    OUT/oci/                     an OCI layout: the image, or the index of a multi-platform target
    OUT/image-ARCH.tar           a docker-archive per platform (unless --no-archive)
    OUT/model/ | OUT/models/NAME/VERSION/   the shipped model files, as the model layers hold them
    OUT/locks/PLATFORM.txt       the wheels each platform's deps layer was installed from

`write` is the sink: it puts what `assemble.build` built (and the model files it ships) into a run's staging folder,
then renames it into place as a whole, so a failed export leaves OUT as it was and a killed one leaves only what
the next run of mlpack sweeps. Deliver, bench and manifests read an export through `read`; nothing else parses
report.json.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlpk.packager import locations, runs
from mlpk.packager.assemble import Built, PlatformImage
from mlpk.packager.errors import ConfigError, InputError
from mlpk.packager.oci import known
from mlpk.packager.oci.build import write_outputs
from mlpk.packager.oci.platform import Platform
from mlpk.packager.oci.reference import split_tag
from mlpk.packager.oci.remote import PushReport

REPORT = "report.json"
LAYOUT = "oci"
MODEL = "model"  # a one-model image's files
MODELS = "models"  # a repository's: MODELS/NAME/VERSION


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
    def of(cls, push: PushReport) -> Pushed:
        return cls(push.reference, str(push.digest), dict(push.blobs))

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


# --- the sink -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ShippedModel:
    """A model version the image serves, with the files this export prepared for it (None: carried over from the
    export --add-version added to, whose folder holds them)."""

    served: ServedModel
    files: Mapping[str, Path] | None = None


@dataclass(frozen=True, slots=True)
class Contents:
    """Everything an export directory holds, before it is written: the built images, their tag, the models they
    serve (a repository's, or the one model's), and the card summary and optimization of the model this export
    prepared (the last one, for several)."""

    built: Built
    tag: str
    models: tuple[ShippedModel, ...]
    model: Mapping[str, Any]
    optimization: Mapping[str, Any]
    repository: bool


def check_out(out: Path) -> None:
    """Refuse an --out that is not an earlier export, or where nothing can be written, before any work starts; the
    probe creates what export would (missing parents, a temporary directory beside `out`) and removes it again."""
    try:
        taken = out.exists() and (not out.is_dir() or (not is_export(out) and any(out.iterdir())))
    except OSError as err:
        raise ConfigError(f"--out {out} cannot be inspected: {err.strerror}",
                          hint="choose an --out directory you can read and write") from err
    if taken:
        raise ConfigError(f"--out {out} exists and is not an earlier mlpack export",
                          hint="choose an empty or new directory")
    parent = out.absolute().parent
    existing = next(place for place in (parent, *parent.parents) if place.exists() or place.is_symlink())
    if not existing.is_dir():
        raise ConfigError(f"--out {out} is under {existing}, which is a file, not a directory",
                          hint="choose an --out path whose parents are directories (or new)")
    created: list[Path] = []
    where = existing
    try:
        for place in reversed([parent, *parent.parents][:len(parent.parents) - len(existing.parents)]):
            place.mkdir()
            created.append(place)
            where = place
        with runs.folder("export", near=parent):  # what the export will make there (a killed probe is swept too)
            pass
    except OSError as err:
        raise ConfigError(f"--out {out} cannot be written: {err.strerror} (in {where})",
                          hint="choose an --out directory in a place you can write to") from err
    finally:
        for place in reversed(created):
            place.rmdir()


def _archive_tag(tag: str, platform: PlatformImage, several: bool) -> str:
    return f"{tag}-{Platform.parse(platform.platform).architecture}" if several else tag


def _ship(models: tuple[ShippedModel, ...], staging: Path, out: Path, repository: bool) -> None:
    """The shipped models as the image's model layers hold them: OUT/model/ (one model), or
    OUT/models/NAME/VERSION/ (a repository; versions carried over are copied from the export added to)."""
    for model in models:
        served = model.served
        folder = staging / MODELS / served.name / str(served.version) if repository else staging / MODEL
        if model.files is None:
            earlier = out / MODELS / served.name / str(served.version)
            shutil.copytree(earlier if earlier.is_dir() else out / MODEL, folder)
            continue
        folder.mkdir(parents=True)
        for name, source in model.files.items():
            shutil.copyfile(source, folder / name)


def _run_hints(contents: Contents, builds: tuple[PlatformBuild, ...], out: Path) -> tuple[str, ...]:
    hints = [f"docker load -i {out / build.archive}" for build in builds if build.archive]
    first = contents.built.platforms[0]
    image = _archive_tag(contents.tag, first, len(builds) > 1)
    rie = str(locations.cache_dir() / "rie")
    return (*hints, contents.built.target.run_hint.replace("{image}", image).replace("{rie}", rie))


def write(contents: Contents, out: Path, work: Path, *, archive: bool = True, push: str | None = None,
          seconds: Mapping[str, float] | None = None, read_back_since: int | None = None) -> ExportReport:
    """Write `contents` as the export directory `out`, assembled in `work` (a run's folder beside `out`) and renamed
    into place, replacing an earlier export there as a whole: the OCI layout (oci.build.write_outputs), a
    docker-archive per platform when `archive`, the shipped model files, each platform's wheels lock and the
    report; with `push`, the image (or index) is pushed to that reference first. Returns the report; its seconds
    are `seconds` plus this write's, and it counts the layer bytes read back since `read_back_since` (a reading
    of known.READ_BACK taken when the export began)."""
    started = time.perf_counter()
    built, several = contents.built, len(contents.built.platforms) > 1
    staging = work / "out"
    staging.mkdir()
    item = built.item
    write_outputs(item, layout_dir=staging / LAYOUT, tag=split_tag(contents.tag)[1])
    builds = []
    for platform in built.platforms:
        name = f"image-{Platform.parse(platform.platform).architecture}.tar" if archive else None
        if name is not None:
            write_outputs(platform.image, tar=staging / name, tag=_archive_tag(contents.tag, platform, several))
        if platform.lock_text is not None:
            lock = staging / platform.lock_file
            lock.parent.mkdir(exist_ok=True)
            lock.write_text(platform.lock_text)
        builds.append(PlatformBuild(
            platform.platform, str(platform.image.digest),
            tuple(LayerEntry(p.name, str(p.layer.digest), p.layer.size, p.uncompressed) for p in platform.parts),
            platform.size_mb, name, WheelsLock(platform.lock_file, platform.lock_status, platform.refetched)))
    _ship(contents.models, staging, out, contents.repository)
    pushed = write_outputs(item, push=push).pushed if push else None
    report = ExportReport(
        target=built.target.name, tag=contents.tag, out=str(out), model=contents.model,
        optimization=contents.optimization, platforms=tuple(builds), digest=str(item.digest),
        budget_mb=built.target.budget_mb, pushed=Pushed.of(pushed) if pushed else None,
        run=_run_hints(contents, tuple(builds), out),
        seconds={**{k: round(v, 2) for k, v in (seconds or {}).items()},
                 "write": round(time.perf_counter() - started, 2)},
        models=tuple(m.served for m in contents.models),
        cached_layers_read_bytes=known.READ_BACK.total - read_back_since if read_back_since is not None else 0)
    write_report(report, staging)
    _replace(staging, out, work / "previous")
    return report


def _replace(staging: Path, out: Path, old: Path) -> None:
    """Put `staging` at `out`, replacing a previous export there as a whole: the previous one is renamed to `old`
    (in the run's folder, so a run killed right then leaves nothing beside `out`), then removed."""
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)
