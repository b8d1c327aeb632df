"""`mlpack export`: one call from a trained model to a verified image per target (the product's main job).

    export(request)
      resolve_target            the target profile with the request's overrides; names and flags checked
      _prepare_models           modelprep.prepare per model: convert (unless ONNX; parity-gated), then optimize per
                                the profile behind the accuracy gate; a model layer (or a layer per version)
      assemble.build            per platform: base (oci.sources) + deps layer + runtime layer + model layer(s) +
                                config, checked against the budget: a Built, nothing written
      exportdir.write           the sink: OCI layout (an index for several platforms) and a docker-archive per
                                platform through oci.build.write_outputs, model files, locks, report; push

Nothing is written to `out` until everything has been built: the outputs are assembled in the run's folder beside
`out` (`runs.folder`) and renamed into place, so a failed export leaves `out` as it was (absent, or the previous
export), and a killed one leaves a folder that the next run of mlpack sweeps.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlpk.packager import assemble, exportdir, locks, modelprep, runs, targets, tensorrt
from mlpk.packager.assemble import Part, PlatformImage
from mlpk.packager.card import TensorSpec
from mlpk.packager.errors import ConfigError, InputError
from mlpk.packager.exportdir import ExportReport, ServedModel, ShippedModel
from mlpk.packager.oci import Image, Index, Layer, Platform, known, layout
from mlpk.packager.oci.reference import Reference
from mlpk.packager.targets import QuantizeMode, Target
from mlpk.runtimes.config import MODEL_NAME, model_name, name_from_file

Step = Callable[[str], None]


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
        if "=" in text and not Path(text).exists():
            left, _, right = text.partition("=")
            name, _, version = left.partition("/")
            if right and MODEL_NAME.fullmatch(name) and (not version or (version.isdigit() and int(version) > 0)):
                return cls(Path(right), name, int(version) if version else None)
        return cls(Path(text))

    def served_name(self) -> str:
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
    inputs: tuple[TensorSpec, ...] = ()  # --input NAME:SHAPE:DTYPE, as convert's: overrides what the model declares
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
        return self.name or name_from_file(self.model.name if self.model.is_dir() else self.model.stem)

    def overrides(self) -> dict[str, Any]:
        over: dict[str, Any] = {}
        if self.python:
            over["python"] = self.python
        if self.wheel_index:
            over["wheels"] = {"extra_index": self.wheel_index}
        if self.quantize:
            if self.quantize not in set(QuantizeMode):
                raise ConfigError(f"--quantize {self.quantize} is not one of {', '.join(QuantizeMode)}",
                                  hint=f"give --quantize {'|'.join(QuantizeMode)}")
            over["optimize"] = {"quantize": self.quantize}
        if self.budget_mb is not None:
            over["budget_mb"] = self.budget_mb
        if self.grpc_port is not None:
            over["grpc_port"] = self.grpc_port
        return over


def _check_names(request: ExportRequest) -> None:
    """Refuse a --tag or --push that is no image reference, a --name that is no model name, and a --wheel-index
    that is no URL, before any work."""
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
    mode = modelprep.planned_mode(target, request.quantize, request.calibration is not None)
    steps.append(f"optimize: {mode} (gate: max drop {target.optimize.max_drop:g}, for {target.optimize.consumer})")
    for platform in target.platforms:
        base = request.base or (f"debian {target.base.suite} base built from packages" if target.base.kind ==
                                "debian" else target.base.ref)
        steps.append(f"{platform}: base {base}; deps {', '.join(target.wheels.requirements)} as {target.abi} "
                     f"wheels; runtime ({target.runtime}); model layer; budget {target.budget_mb:g} MB")
    outputs = [f"OCI layout {request.out}/{exportdir.LAYOUT}" + (" (index)" if len(target.platforms) > 1 else "")]
    if request.archive:
        outputs.append(f"docker-archive per platform in {request.out}")
    if request.push:
        outputs.append(f"push to {request.push}")
    steps.append("write " + ", ".join(outputs))
    return steps


def export(request: ExportRequest, step: Step = lambda _: None) -> ExportReport:
    """Run the whole export; see the module docstring."""
    read_back = known.READ_BACK.total
    target = resolve_target(request)
    exportdir.check_out(request.out)
    if request.prebuild_engine:
        for platform in target.platforms:  # before any work: a missing toolchain is known now
            tensorrt.check_available(target, platform)
    previous = Previous.read(request.out, target) if request.add_version else None
    request.out.parent.mkdir(parents=True, exist_ok=True)
    with runs.folder("export", near=request.out.parent) as work:  # beside out: the result is renamed into place
        started = time.perf_counter()
        step("converting the model")
        versions, models, prepared = _prepare_models(request, target, work, step, previous)
        seconds = {"model": time.perf_counter() - started}

        started = time.perf_counter()
        tag = request.tag or (previous.tag if previous else
                              f"mlpack/{_slug(request.model.stem if request.model.is_file() else request.model.name)}"
                              f":{target.name}")
        labels = _labels(versions, request.is_repository)
        if previous is not None:
            built = assemble.extend(target, previous.images(target), models, labels, step)
        else:
            engine = None
            if request.prebuild_engine:
                card = prepared.card.to_dict()
                onnx_file = prepared.files["model.onnx"]

                def engine(platform: str) -> Layer:
                    return tensorrt.engine_layer(onnx_file, target, card, platform)

            found = {platform: _lock_at(request.out, platform) for platform in target.platforms}
            built = assemble.build(target, models, labels=labels, workdir=work, base=request.base,
                                   locks_found={p: lock for p, lock in found.items() if lock is not None},
                                   engine=engine, step=step)
        seconds["build"] = time.perf_counter() - started

        step("writing outputs" + (f" and pushing to {request.push}" if request.push else ""))
        contents = exportdir.Contents(built, tag, tuple(versions), prepared.summary(),
                                      prepared.optimization.to_dict(), request.is_repository)
        return exportdir.write(contents, request.out, work, archive=request.archive, push=request.push,
                               seconds=seconds, read_back_since=read_back)


def _lock_at(out: Path, platform: str) -> locks.Lock | None:
    """The wheels lock the export at `out` installed `platform`'s deps from: re-used while it still fits."""
    path = out / locks.file_name(platform)
    return locks.read(path) if path.is_file() else None


def _specs(request: ExportRequest) -> tuple[ModelSpec, ...]:
    specs = request.models or (ModelSpec(request.model),)
    if request.name and len(specs) == 1 and specs[0].name is None:
        specs = (ModelSpec(specs[0].path, request.name, specs[0].version),)
    return specs


def _prepare_models(request: ExportRequest, target: Target, work: Path, step: Step, previous: Previous | None
                    ) -> tuple[list[ShippedModel], list[Part], modelprep.PreparedModel]:
    """Convert and optimize every model of the request: (every version the image serves, the model part or the
    new version parts, the last model prepared)."""
    if not request.is_repository:
        only = modelprep.prepare(request, target, work / "model", step)
        served = ServedModel(only.name, 1, "model", only.sha256, only.source_kind, only.summary(),
                             only.optimization.to_dict())
        return [ShippedModel(served, only.files)], [Part.of("model", assemble.model_layer(only.files))], only
    carried = list(previous.versions) if previous else []
    planned: list[tuple[ModelSpec, str, int]] = []
    for spec in _specs(request):  # every name and version first: a clash is known before any conversion
        name = spec.served_name()
        taken = [v.served.version for v in carried if v.served.name == name] + \
            [version for _, other, version in planned if other == name]
        version = spec.version or max(taken, default=0) + 1
        if version in taken:
            where = f"the export at {request.out}" if any(v.served.name == name and v.served.version == version
                                                           for v in carried) else "this export"
            raise ConfigError(f"model {name} version {version} is already in {where}",
                              hint=f"give another version with {name}/VERSION=PATH, or leave the version out "
                                   "for the next one")
        planned.append((spec, name, version))
    versions, parts = list(carried), []
    links = previous.links if previous else ()
    prepared: modelprep.PreparedModel | None = None
    for number, (spec, name, version) in enumerate(planned):
        step(f"converting {name} version {version}")
        one = dataclasses.replace(request, model=spec.path, name=name, models=(), add_version=False)
        prepared = modelprep.prepare(one, target, work / f"model-{number}", step)
        part = assemble.version_layer(name, version, prepared.files, links=links if number == 0 else ())
        parts.append(part)
        versions.append(ShippedModel(ServedModel(name, version, part.name, prepared.sha256, prepared.source_kind,
                                                 prepared.summary(), prepared.optimization.to_dict()),
                                     prepared.files))
    assert prepared is not None, "a repository export prepares at least one model"
    return sorted(versions, key=lambda v: (v.served.name, v.served.version)), parts, prepared


def _labels(versions: list[ShippedModel], repository: bool) -> dict[str, str | None]:
    served = [v.served for v in versions]
    if not repository:
        [only] = served
        return {"org.opencontainers.image.title": only.name, "dev.mlpack.model.sha256": only.sha256,
                "dev.mlpack.model.source": only.source}
    return {"org.opencontainers.image.title": ", ".join(dict.fromkeys(v.name for v in served)),
            "dev.mlpack.models": ",".join(f"{v.name}/{v.version}" for v in served),
            "dev.mlpack.model.sha256": None, "dev.mlpack.model.source": None}  # one model's labels: none here


@dataclass(frozen=True, slots=True)
class Previous:
    """The export `--add-version` adds to: its image (or index), report and model versions. `links`: the model of a
    one-model image, to be served from the repository as version 1 of its name."""

    out: Path
    item: Image | Index
    report: ExportReport
    versions: tuple[ShippedModel, ...]
    links: tuple[tuple[str, int], ...]

    @property
    def tag(self) -> str:
        return self.report.tag

    @classmethod
    def read(cls, out: Path, target: Target) -> Previous:
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
            versions = tuple(ShippedModel(entry) for entry in report.models)
        else:  # written before exports listed their models: its one model
            versions = (ShippedModel(ServedModel(
                str(labels.get("org.opencontainers.image.title") or "model"), 1, "model",
                str(labels.get("dev.mlpack.model.sha256", "")), str(labels.get("dev.mlpack.model.source", "")),
                dict(report.model), dict(report.optimization))),)
        single = env.get("MLPACK_MODEL_DIR") == assemble.MODEL_DIR
        links = ((versions[0].served.name, 1),) if single else ()
        if any(build.layer("engine") for build in report.platforms):
            raise ConfigError(f"the export at --out {out} ships a prebuilt TensorRT engine for its one model",
                              hint="export it again without --prebuild-engine, then add versions with --add-version")
        return cls(out, item, report, versions, links)

    def images(self, target: Target) -> list[PlatformImage]:
        """The earlier export's image per platform of `target`, with its named parts and its wheels lock, once its
        runtime layer is this mlpack's (the old one may not serve a repository)."""
        runtime = assemble.runtime_layer(target.python)
        for build in self.report.platforms:
            entry = build.layer("runtime")
            old = entry.digest if entry else None
            if old != str(runtime.digest):
                models = " ".join(f"{v.served.name}/{v.served.version}=MODEL" for v in self.versions)
                raise ConfigError(f"the export at --out {self.out} was built by another version of mlpack (its "
                                  f"runtime layer is {str(old)[:19]}, this one's {str(runtime.digest)[:19]}), which "
                                  "may not serve a model repository",
                                  hint=f"export every version again at once: mlpack export {models} NEW_MODEL "
                                       f"--target {self.report.target} --out {self.out}")
        images = list(self.item.images) if isinstance(self.item, Index) else [self.item]
        out = []
        for platform in target.platforms:
            wanted = Platform.parse(platform)
            img = next((i for i in images if wanted.matches(i.platform)), None)
            found = self.report.platform(platform)
            if img is None or found is None or [e.digest for e in found.layers] != [str(la.digest) for la in
                                                                                   img.layers]:
                raise ConfigError(f"the export at --out {self.out} has no image for {platform} that its report "
                                  "describes", hint="export it again with mlpack export MODEL --target T --out OUT")
            parts = tuple(Part(entry.name, layer, entry.uncompressed) for entry, layer in zip(found.layers,
                                                                                            img.layers, strict=True))
            lock = found.wheels_lock
            lock_file = lock.file if lock else locks.file_name(platform)
            text = (self.out / lock_file).read_text() if (self.out / lock_file).is_file() else None
            out.append(PlatformImage(platform, img, parts, found.size_mb, lock_file, text, "",
                                     lock.refetched if lock else ()))
        return out


def _slug(name: str) -> str:
    text = "".join(c if c.isalnum() or c in "-._" else "-" for c in name.lower()).strip("-._")
    return text or "model"
