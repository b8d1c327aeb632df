"""`mlpack export`: one call from a trained model to a verified image per target (the product's main job).

    convert (unless ONNX; parity-gated)  ->  optimize per the profile, behind the accuracy gate
      ->  per platform: base + deps layer + runtime layer + model layer + config  ->  budget check
      ->  OCI layout (an index when the target has several platforms) + docker-archive per platform + push

Nothing is written to `out` until everything has been built: the outputs are assembled in the run's folder beside
`out` (`runs.folder`) and renamed into place, so a failed export leaves `out` as it was (absent, or the previous
export), and a killed one leaves a folder that the next run of mlpack sweeps.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlpk.packager import assemble, exportdir, locks, runs, targets
from mlpk.packager.errors import ConfigError, InputError
from mlpk.packager.exportdir import ExportReport, LayerEntry, PlatformBuild, Pushed, ServedModel, WheelsLock
from mlpk.packager.oci import Image, Index, Layer, Platform, index, known, sources
from mlpk.packager.targets import Target

Step = Callable[[str], None]
OPTIMIZE_MODES = ("auto", "none", "fp16", "int8-dynamic", "int8-static")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model of a repository image: its file, and the name and version it is served under (None: the name
    `mlpack serve` gives the file; the version after the newest of that name)."""

    path: Path
    name: str | None = None
    version: int | None = None

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """`PATH`, `NAME=PATH` or `NAME/VERSION=PATH`; text naming a file or folder that exists is always a PATH."""
        from mlpk.runtimes.config import MODEL_NAME

        if "=" in text and not Path(text).exists():
            left, _, right = text.partition("=")
            name, _, version = left.partition("/")
            if right and MODEL_NAME.fullmatch(name) and (not version or version.isdigit() and int(version) > 0):
                return cls(Path(right), name, int(version) if version else None)
        return cls(Path(text))

    def served_name(self) -> str:
        from mlpk.runtimes.config import name_from_file

        return self.name or name_from_file(self.path.name if self.path.is_dir() else self.path.stem)


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """What to export, where, and the user's overrides of the target profile."""

    model: Path
    target: str  # a built-in name or a profile TOML
    out: Path
    tag: str | None = None
    name: str | None = None  # the model's name in URLs (default: the model file's name, as `mlpack serve` gives it)
    push: str | None = None
    base: str | None = None  # registry ref | oci:DIR | docker-archive:FILE.tar (one platform) | DIR | FILE.tar
    quantize: str | None = None  # overrides optimize.quantize
    calibration: Path | None = None
    sample_data: Path | None = None
    tolerance: str | None = None  # the parity gate, as convert's --tolerance (default: the source kind's)
    python: str | None = None
    wheel_index: str | None = None
    budget_mb: float | None = None
    grpc_port: int | None = None  # overrides grpc_port (0: no gRPC in the image)
    model_class: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    trust_pickle: bool = False
    archive: bool = True  # write docker-archive tars beside the layout
    prebuild_engine: bool = False  # build the TensorRT engine here (needs TensorRT and the fleet's GPU)
    # A model repository image (several models, NAME=PATH forms, or --add-version): each version in a layer of its
    # own under assemble.MODELS_DIR. `model` is then the first one's path.
    models: tuple[ModelSpec, ...] = ()
    add_version: bool = False  # add `models` to the export at `out`, keeping every layer it has

    @property
    def is_repository(self) -> bool:
        return bool(self.models) or self.add_version

    def model_name(self) -> str:
        """The name the image answers under: --name, else the name `mlpack serve MODEL` gives the model's file (or
        folder), so a client written against one answers against the other."""
        from mlpk.runtimes.config import name_from_file

        return self.name or name_from_file(self.model.name if self.model.is_dir() else self.model.stem)

    def overrides(self) -> dict[str, Any]:
        over: dict[str, Any] = {}
        if self.python:
            over["python"] = self.python
        if self.wheel_index:
            over["wheels"] = {"extra_index": self.wheel_index}
        if self.quantize:
            if self.quantize not in OPTIMIZE_MODES:
                raise ConfigError(f"--quantize {self.quantize} is not one of {', '.join(OPTIMIZE_MODES)}")
            over["optimize"] = {"quantize": self.quantize}
        if self.budget_mb is not None:
            over["budget_mb"] = self.budget_mb
        if self.grpc_port is not None:
            over["grpc_port"] = self.grpc_port
        return over


def _check_names(request: ExportRequest) -> None:
    """Refuse a --tag or --push that is no image reference, a --name that is no model name, and a --wheel-index
    that is no URL, before any work."""
    from urllib.parse import urlsplit

    from mlpk.runtimes.config import model_name

    from mlpk.packager.oci.reference import Reference

    for flag, value in (("--tag", request.tag), ("--push", request.push)):
        if value is None:
            continue
        try:
            Reference.parse(value)
        except ConfigError:
            raise ConfigError(f"{flag} {value!r} is not an image reference",
                              hint=f"give {flag} [HOST[:PORT]/]NAME[:TAG] with a lowercase NAME, e.g. "
                                   "mlpack/model:cpu") from None
    if request.name is not None:
        try:
            model_name("--name", request.name)
        except ValueError as err:
            raise ConfigError(str(err), hint="give --name letters, digits, '.', '_' and '-', e.g. --name scorer-v2") \
                from None
    if request.is_repository:
        _check_repository(request)
    if request.wheel_index is not None:
        url = urlsplit(request.wheel_index)
        if url.scheme not in ("http", "https", "file") or (url.scheme != "file" and not url.netloc):
            raise ConfigError(f"--wheel-index {request.wheel_index!r} is not an http(s) or file URL",
                              hint="give --wheel-index the URL of a PEP 503 index, e.g. https://HOST/simple/")


# Flags that describe one model's data: with several models, each is exported on its own call (--add-version).
ONE_MODEL_FLAGS = (("--sample-data", "sample_data"), ("--calibration", "calibration"), ("--name", "name"),
                   ("--model-class", "model_class"), ("--model-args", "model_args"),
                   ("--prebuild-engine", "prebuild_engine"))


def _check_repository(request: ExportRequest) -> None:
    """Refuse what a repository export cannot take: one model's flags with several models, a name that is no model
    name, a version given twice, a TensorRT engine (one model's), --add-version with no export at --out."""
    from mlpk.runtimes.config import model_name

    specs = request.models or (ModelSpec(request.model),)
    if len(specs) > 1:
        for flag, field_name in ONE_MODEL_FLAGS:
            if getattr(request, field_name):
                raise ConfigError(f"{flag} describes one model, and {len(specs)} models were given",
                                  hint=f"export the first with mlpack export MODEL {flag} …, then add each other one "
                                       f"with its own {flag} by mlpack export MODEL --add-version --out SAME_OUT")
    if request.prebuild_engine:
        raise ConfigError("--prebuild-engine builds the engine of a one-model image",
                          hint="leave --prebuild-engine out: the server builds each version's engine at its first "
                               "start and keeps it in MLPACK_TRT_CACHE")
    for spec in specs:
        if spec.name is not None:
            try:
                model_name("model name", spec.name)
            except ValueError as err:
                raise ConfigError(str(err), hint="give NAME=PATH or NAME/VERSION=PATH with NAME of letters, "
                                                 "digits, '.', '_' and '-'") from None
    if request.add_version and not exportdir.is_export(request.out):
        raise ConfigError(f"--add-version adds to the export at --out {request.out}, and there is none",
                          hint="export the first version with mlpack export MODEL --target T --out OUT, then add "
                               "versions with --add-version --out OUT")


def resolve_target(request: ExportRequest) -> Target:
    _check_names(request)
    target = targets.load(request.target, request.overrides())
    if target.wheels.extra_index_required and not target.wheels.extra_index:
        raise ConfigError(f"target {target.name} installs {target.wheels.requirements[0]}, which is not on PyPI for "
                          f"{', '.join(target.platforms)}", hint=f"give NVIDIA's Jetson wheel index with "
                          f"--wheel-index URL (or {targets.JETSON_INDEX_ENV})")
    return target


def plan(request: ExportRequest) -> list[str]:
    """The steps an export would take, resolved, without doing any of them."""
    target = resolve_target(request)
    if request.is_repository:
        names = ", ".join(f"{spec.served_name()}" + (f"/{spec.version}" if spec.version else "") + f" ({spec.path})"
                          for spec in _specs(request))
        where = f"added to the export at {request.out}, whose layers stay" if request.add_version else \
            "side by side in a model repository"
        steps = [f"check {names}; convert each to ONNX with a parity gate unless it is ONNX already; each version "
                 f"in a layer of its own, {where}"]
    else:
        steps = [f"check {request.model}; convert it to ONNX with a parity gate unless it is ONNX already"]
    steps.append(f"optimize: {_mode(target, request)} (gate: max drop {target.optimize.max_drop:g}, for "
                 f"{target.optimize.consumer})")
    for platform in target.platforms:
        base = request.base or (f"debian {target.base.suite} base built from packages" if target.base.kind ==
                                "debian" else target.base.ref)
        steps.append(f"{platform}: base {base}; deps {', '.join(target.wheels.requirements)} as {target.abi} "
                     f"wheels; runtime ({target.runtime}); model layer; budget {target.budget_mb:g} MB")
    outputs = [f"OCI layout {request.out}/oci" + (" (index)" if len(target.platforms) > 1 else "")]
    if request.archive:
        outputs.append(f"docker-archive per platform in {request.out}")
    if request.push:
        outputs.append(f"push to {request.push}")
    steps.append("write " + ", ".join(outputs))
    return steps


def _mode(target: Target, request: ExportRequest) -> str:
    mode = target.optimize.quantize
    if mode != "auto":
        return mode
    if target.optimize.consumer == "tensorrt":
        return "int8-static" if request.calibration else "fp16"
    return "int8-dynamic (only on at least 32 real samples, kept only if it passes the gate, else fp32)"


def export(request: ExportRequest, step: Step = lambda _: None) -> ExportReport:
    """Run the whole export; see the module docstring."""
    clock: dict[str, float] = {}
    read_back = known.READ_BACK.total
    target = resolve_target(request)
    _check_out(request.out)
    if request.prebuild_engine:
        from mlpk.packager import tensorrt

        for platform in target.platforms:  # before any work: a missing toolchain is known now
            tensorrt.check_available(target, platform)
    previous = Previous.read(request.out, target) if request.add_version else None
    request.out.parent.mkdir(parents=True, exist_ok=True)
    with runs.folder("export", near=request.out.parent) as work:  # beside out: the result is renamed into place
        started = time.perf_counter()
        step("converting the model")
        versions, model, prepared = _prepare_models(request, target, work, step, previous)
        clock["model"] = time.perf_counter() - started

        started = time.perf_counter()
        tag = request.tag or (previous.tag if previous else
                              f"mlpack/{_slug(request.model.stem if request.model.is_file() else request.model.name)}"
                              f":{target.name}")
        labels = _labels(versions, request.is_repository)
        step("building the runtime and model layers")
        runtime = assemble.runtime_layer(target.python)
        if previous is not None:
            previous.check_runtime(runtime)
        images: list[Image] = []
        builds: list[PlatformBuild] = []
        staging = work / "out"
        staging.mkdir()
        model_names = ("model",) if isinstance(model, Layer) else tuple(m.name for m in model)
        for platform in target.platforms:
            checked: Any = ()  # the layers already checked: the base's, by its safety check
            if previous is not None:
                img, names, lock = previous.extend(platform, model, labels)
                if lock is not None:
                    (staging / lock.file).parent.mkdir(exist_ok=True)
                    shutil.copyfile(request.out / lock.file, staging / lock.file)
            else:
                img, lock, checked = _build_platform(request, target, platform, work, staging, runtime, model, labels,
                                                     step)
                names = ("deps", "runtime", *model_names)
            if request.prebuild_engine:
                from mlpk.packager import tensorrt
                from mlpk.packager.oci import append_layers

                step(f"{platform}: building the TensorRT engine on this GPU")
                card = json.loads(prepared.files["model-card.json"].read_text())
                engine = tensorrt.engine_layer(prepared.files["model.onnx"], target, card, platform)
                img = append_layers(img, engine, created_by="mlpack: TensorRT engine (prebuilt)")
                names += ("engine",)
            step(f"{platform}: checking the size budget")
            parts = assemble.parts(img, names, checked=checked)
            size = assemble.check_budget(target, platform, parts)
            builds.append(PlatformBuild(platform, str(img.digest), tuple(
                LayerEntry(p.name, str(p.layer.digest), p.layer.size, p.uncompressed) for p in parts),
                round(size, 2), None, lock))
            images.append(img)
        clock["build"] = time.perf_counter() - started

        started = time.perf_counter()
        step("writing outputs")
        result: Image | Index = images[0] if len(images) == 1 else index(*images)
        builds = _write(result, images, builds, staging, tag, request.archive)
        _ship_files(versions, staging, request.out, request.is_repository)
        pushed = None
        if request.push:
            from mlpk.packager.oci import remote

            step(f"pushing to {request.push}")
            pushed = Pushed.from_dict(remote.push(result, request.push).to_dict())
        clock["write"] = time.perf_counter() - started
        report = ExportReport(
            target=target.name, tag=tag, out=str(request.out), model=prepared.summary,
            optimization=prepared.optimization, platforms=tuple(builds), digest=str(result.digest),
            budget_mb=target.budget_mb, pushed=pushed, run=tuple(_run_hints(target, tag, builds, request.out)),
            seconds={k: round(v, 2) for k, v in clock.items()}, models=tuple(v.served() for v in versions),
            cached_layers_read_bytes=known.READ_BACK.total - read_back)
        exportdir.write_report(report, staging)
        _replace(staging, request.out, work / "previous")
    return report


def _build_platform(request: ExportRequest, target: Target, platform: str, work: Path, staging: Path,
                    runtime: Layer, model: Layer | list[assemble.ModelLayer], labels: dict[str, str | None],
                    step: Step) -> tuple[Image, WheelsLock, Any]:
    """base + deps + runtime + model for `platform`, with the wheels lock it used written into `staging`: (the image,
    its lock entry for the report, the base's layer reports)."""
    step(f"{platform}: base image")
    base = _base(request, target, platform)
    step(f"{platform}: installing {target.abi} wheels")
    lock_file = locks.file_name(platform)  # re-used from the previous export to `out` while it still fits
    previous = locks.read(request.out / lock_file) if (request.out / lock_file).is_file() else None
    deps, installed = assemble.deps_layer(target, platform, work, sbom=base.sbom, lock=previous)
    (staging / lock_file).parent.mkdir(exist_ok=True)
    (staging / lock_file).write_text(installed.lock.text())
    img = assemble.assemble(base.image, target, platform, deps=deps, runtime=runtime, model=model,
                            labels={**labels, "dev.mlpack.base.digest": str(base.image.digest)})
    lock_entry = WheelsLock(lock_file, installed.relock or "re-used", tuple(installed.refetched))
    return img, lock_entry, base.layers


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One model version an image serves, as the report lists it. `files` are the ones this export prepared
    (None: carried over from the export --add-version added to)."""

    name: str
    version: int
    layer: str  # the name of its layer in the report: `model` (a one-model image) or `model NAME/VERSION`
    sha256: str  # of the source model as given
    source: str  # its kind
    card: dict[str, Any]
    optimization: dict[str, Any]
    files: dict[str, Path] | None = None

    def served(self) -> ServedModel:
        return ServedModel(self.name, self.version, self.layer, self.sha256, self.source, self.card,
                           self.optimization)

    @classmethod
    def carried(cls, served: ServedModel) -> ModelVersion:
        """A version of the export --add-version adds to (its files stay in that export)."""
        return cls(served.name, served.version, served.layer, served.sha256, served.source, dict(served.card),
                   dict(served.optimization))


def _specs(request: ExportRequest) -> tuple[ModelSpec, ...]:
    specs = request.models or (ModelSpec(request.model),)
    if request.name and len(specs) == 1 and specs[0].name is None:
        specs = (ModelSpec(specs[0].path, request.name, specs[0].version),)
    return specs


def _prepare_models(request: ExportRequest, target: Target, work: Path, step: Step, previous: Previous | None
                    ) -> tuple[list[ModelVersion], Layer | list[assemble.ModelLayer], Any]:
    """Convert and optimize every model of the request: (every version the image serves, the model layer or the
    new version layers, the last model prepared)."""

    from mlpk.packager import modelprep

    if not request.is_repository:
        prepared = modelprep.prepare(request, target, work / "model", step)
        version = ModelVersion(prepared.name, 1, "model", prepared.sha256, prepared.source_kind, prepared.summary,
                               prepared.optimization, prepared.files)
        return [version], assemble.model_layer(prepared.files), prepared
    carried = list(previous.versions) if previous else []
    planned: list[tuple[ModelSpec, str, int]] = []
    for spec in _specs(request):  # every name and version first: a clash is known before any conversion
        name = spec.served_name()
        taken = [v.version for v in carried if v.name == name] + [v for n, v in
                                                                  ((p[1], p[2]) for p in planned) if n == name]
        version = spec.version or max(taken, default=0) + 1
        if version in taken:
            where = f"the export at {request.out}" if any(v.name == name and v.version == version
                                                           for v in carried) else "this export"
            raise ConfigError(f"model {name} version {version} is already in {where}",
                              hint=f"give another version with {name}/VERSION=PATH, or leave the version out "
                                   "for the next one")
        planned.append((spec, name, version))
    versions, layers, prepared = list(carried), [], None
    links = previous.links if previous else ()
    for index, (spec, name, version) in enumerate(planned):
        step(f"converting {name} version {version}")
        one = dataclasses.replace(request, model=spec.path, name=name, models=(), add_version=False)
        prepared = modelprep.prepare(one, target, work / f"model-{index}", step)
        layer = assemble.version_layer(name, version, prepared.files, links=links if index == 0 else ())
        layers.append(layer)
        versions.append(ModelVersion(name, version, layer.name, prepared.sha256, prepared.source_kind,
                                     prepared.summary, prepared.optimization, prepared.files))
    return sorted(versions, key=lambda v: (v.name, v.version)), layers, prepared


def _labels(versions: list[ModelVersion], repository: bool) -> dict[str, str | None]:
    if not repository:
        [only] = versions
        return {"org.opencontainers.image.title": only.name, "dev.mlpack.model.sha256": only.sha256,
                "dev.mlpack.model.source": only.source}
    return {"org.opencontainers.image.title": ", ".join(dict.fromkeys(v.name for v in versions)),
            "dev.mlpack.models": ",".join(f"{v.name}/{v.version}" for v in versions),
            "dev.mlpack.model.sha256": None, "dev.mlpack.model.source": None}  # one model's labels: none here


def _ship_files(versions: list[ModelVersion], staging: Path, out: Path, repository: bool) -> None:
    """The shipped models as the image's model layers hold them: OUT/model/ (one model), or
    OUT/models/NAME/VERSION/ (a repository; versions carried over are copied from the export added to)."""
    for version in versions:
        folder = staging / "models" / version.name / str(version.version) if repository else staging / "model"
        if version.files is None:
            earlier = out / "models" / version.name / str(version.version)
            shutil.copytree(earlier if earlier.is_dir() else out / "model", folder)
            continue
        folder.mkdir(parents=True)
        for name, source in version.files.items():
            shutil.copyfile(source, folder / name)


@dataclass(frozen=True, slots=True)
class Previous:
    """The export `--add-version` adds to: its image (or index), report and model versions. `links`: the model of a
    one-model image, to be served from the repository as version 1 of its name."""

    out: Path
    item: Image | Index
    report: ExportReport
    versions: tuple[ModelVersion, ...]
    links: tuple[tuple[str, int], ...]

    @property
    def tag(self) -> str:
        return self.report.tag

    @classmethod
    def read(cls, out: Path, target: Target) -> Previous:
        from mlpk.packager.oci import layout

        try:
            report = exportdir.read(out)
            item = layout.read(out / exportdir.LAYOUT)
        except (OSError, ValueError, InputError) as err:
            raise ConfigError(f"the export at --out {out} cannot be read: {err}",
                              hint="export it again with mlpack export MODEL --target T --out OUT") from None
        if report.target != target.name:
            raise ConfigError(f"the export at --out {out} is for target {report.target}, not {target.name}",
                              hint=f"give --target {report.target} to add to it, or another --out")
        images = list(item.images) if isinstance(item, Index) else [item]
        first = images[0]
        env = dict(entry.split("=", 1) for entry in (first.config.get("config") or {}).get("Env") or []
                   if "=" in entry)
        labels = (first.config.get("config") or {}).get("Labels") or {}
        if report.models:
            versions = tuple(ModelVersion.carried(entry) for entry in report.models)
        else:  # written before exports listed their models: its one model
            versions = (ModelVersion(str(labels.get("org.opencontainers.image.title") or "model"), 1, "model",
                                     str(labels.get("dev.mlpack.model.sha256", "")),
                                     str(labels.get("dev.mlpack.model.source", "")), dict(report.model),
                                     dict(report.optimization)),)
        single = env.get("MLPACK_MODEL_DIR") == assemble.MODEL_DIR
        links = ((versions[0].name, 1),) if single else ()
        if any(build.layer("engine") for build in report.platforms):
            raise ConfigError(f"the export at --out {out} ships a prebuilt TensorRT engine for its one model",
                              hint="export it again without --prebuild-engine, then add versions with --add-version")
        return cls(out, item, report, versions, links)

    def check_runtime(self, runtime: Layer) -> None:
        """The runtime layer must be this mlpack's: the old one may not serve a repository."""
        for build in self.report.platforms:
            entry = build.layer("runtime")
            old = entry.digest if entry else None
            if old != str(runtime.digest):
                models = " ".join(f"{v.name}/{v.version}=MODEL" for v in self.versions)
                raise ConfigError(f"the export at --out {self.out} was built by another version of mlpack (its "
                                  f"runtime layer is {str(old)[:19]}, this one's {str(runtime.digest)[:19]}), which "
                                  "may not serve a model repository",
                                  hint=f"export every version again at once: mlpack export {models} NEW_MODEL "
                                       f"--target {self.report.target} --out {self.out}")

    def extend(self, platform: str, model: Layer | list[assemble.ModelLayer], labels: dict[str, str | None]
               ) -> tuple[Image, tuple[str, ...], WheelsLock | None]:
        """The earlier image for `platform` with the new version layers on top: (image, its layer names above the
        base, the wheels lock entry it keeps)."""
        assert not isinstance(model, Layer)  # --add-version always makes version layers
        images = list(self.item.images) if isinstance(self.item, Index) else [self.item]
        wanted = Platform.parse(platform)
        img = next((i for i in images if wanted.matches(i.platform)), None)
        build = self.report.platform(platform)
        if img is None or build is None:
            raise ConfigError(f"the export at --out {self.out} has no image for {platform}",
                              hint="export it again with mlpack export MODEL --target T --out OUT")
        names = tuple(layer.name for layer in build.layers if not layer.name.startswith("base"))
        extended = assemble.add_versions(img, model, labels)
        lock = None if build.wheels_lock is None else dataclasses.replace(
            build.wheels_lock, status="re-used (--add-version keeps every layer of the export)")
        return extended, names + tuple(m.name for m in model), lock


def _slug(name: str) -> str:
    text = "".join(c if c.isalnum() or c in "-._" else "-" for c in name.lower()).strip("-._")
    return text or "model"


def _base(request: ExportRequest, target: Target, platform: str) -> sources.Base:
    """The base image for `platform` (the --base source, else the target's), through the layer-safety check whatever
    its source, with its SBOM when mlpack built it from Debian packages."""
    source = sources.parse(request.base or target.base.source)
    if source.kind is sources.Kind.SCRATCH:
        raise ConfigError(f"--base {source} has no Python, which the {target.runtime} runtime of {target.name} runs on",
                          hint="give a base with python3 (debian:SUITE, a registry ref, oci:DIR or "
                               "docker-archive:FILE.tar), or leave --base out for the target's own")
    return sources.base(source, Platform.parse(platform))


def _write(result: Image | Index, images: list[Image], builds: list[PlatformBuild], staging: Path, tag: str,
           archive: bool) -> list[PlatformBuild]:
    from mlpk.packager.oci import layout, tarball

    layout.write(result, staging / "oci", tag.rsplit(":", 1)[-1] if ":" in tag.rsplit("/", 1)[-1] else None,
                 link=True)
    if not archive:
        return builds
    out = []
    for img, build in zip(images, builds, strict=True):
        arch = Platform.parse(build.platform).architecture
        name = f"image-{arch}.tar"
        tarball.write(img, staging / name, tag if len(images) == 1 else f"{tag}-{arch}")
        out.append(PlatformBuild(build.platform, build.digest, build.layers, build.size_mb, name, build.wheels_lock))
    return out


def _run_hints(target: Target, tag: str, builds: list[PlatformBuild], out: Path) -> list[str]:
    hints = []
    for build in builds:
        if build.archive:
            hints.append(f"docker load -i {out / build.archive}")
    image = tag if len(builds) == 1 else f"{tag}-{Platform.parse(builds[0].platform).architecture}"
    from mlpk.packager import locations

    hints.append(target.run_hint.replace("{image}", image).replace("{rie}", str(locations.cache_dir() / "rie")))
    return hints


def _check_out(out: Path) -> None:
    """Refuse an --out that is not an earlier export, or where nothing can be written, before any work starts; the
    probe creates what export would (missing parents, a temporary directory beside `out`) and removes it again."""
    try:
        taken = out.exists() and (not out.is_dir() or (not exportdir.is_export(out) and any(out.iterdir())))
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


def _replace(staging: Path, out: Path, old: Path) -> None:
    """Put `staging` at `out`, replacing a previous export there as a whole: the previous one is renamed to `old`
    (in the run's folder, so a run killed right then leaves nothing beside `out`), then removed."""
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)

