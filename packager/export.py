"""`mlpack export`: one call from a trained model to a verified image per target (the product's main job).

    convert (unless ONNX; parity-gated)  ->  optimize per the profile, behind the accuracy gate
      ->  per platform: base + deps layer + runtime layer + model layer + config  ->  budget check
      ->  OCI layout (an index when the target has several platforms) + docker-archive per platform + push

Nothing is written to `out` until everything has been built: the outputs are assembled in the run's folder beside
`out` (`runs.folder`) and renamed into place, so a failed export leaves `out` as it was (absent, or the previous
export), and a killed one leaves a folder that the next run of mlpack sweeps.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlpk.packager import assemble, locks, runs, targets
from mlpk.packager.errors import ConfigError
from mlpk.packager.oci import Image, Index, Platform, index, sources
from mlpk.packager.targets import Target

Step = Callable[[str], None]
OPTIMIZE_MODES = ("auto", "none", "fp16", "int8-dynamic", "int8-static")


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


@dataclass(frozen=True, slots=True)
class PlatformBuild:
    platform: str
    digest: str
    layers: list[dict[str, Any]]
    size_mb: float
    archive: str | None
    # file (in out), status (re-used | resolved: why) and refetched (cached wheels that failed their sha256)
    wheels_lock: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExportReport:
    """What an export built, measured and wrote."""

    target: str
    tag: str
    out: str
    model: dict[str, Any]
    optimization: dict[str, Any]
    platforms: list[PlatformBuild]
    digest: str  # of the index (several platforms) or the image
    budget_mb: float
    pushed: dict[str, Any] | None
    run: list[str]
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["platforms"] = [{k: getattr(p, k) for k in p.__dataclass_fields__} for p in self.platforms]
        return data


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
    if request.wheel_index is not None:
        url = urlsplit(request.wheel_index)
        if url.scheme not in ("http", "https", "file") or (url.scheme != "file" and not url.netloc):
            raise ConfigError(f"--wheel-index {request.wheel_index!r} is not an http(s) or file URL",
                              hint="give --wheel-index the URL of a PEP 503 index, e.g. https://HOST/simple/")


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
    from mlpk.packager import modelprep

    clock: dict[str, float] = {}
    target = resolve_target(request)
    _check_out(request.out)
    if request.prebuild_engine:
        from mlpk.packager import tensorrt

        for platform in target.platforms:  # before any work: a missing toolchain is known now
            tensorrt.check_available(target, platform)
    request.out.parent.mkdir(parents=True, exist_ok=True)
    with runs.folder("export", near=request.out.parent) as work:  # beside out: the result is renamed into place
        started = time.perf_counter()
        step("converting the model")
        prepared = modelprep.prepare(request, target, work / "model", step)
        clock["model"] = time.perf_counter() - started

        started = time.perf_counter()
        tag = request.tag or f"mlpack/{_slug(request.model.stem if request.model.is_file() else request.model.name)}"\
            f":{target.name}"
        labels = {"org.opencontainers.image.title": prepared.name, "dev.mlpack.model.sha256": prepared.sha256,
                  "dev.mlpack.model.source": prepared.source_kind}
        step("building the runtime and model layers")
        runtime = assemble.runtime_layer(target.python)
        model = assemble.model_layer(prepared.files)
        images: list[Image] = []
        builds: list[PlatformBuild] = []
        staging = work / "out"
        staging.mkdir()
        for platform in target.platforms:
            step(f"{platform}: base image")
            base, base_sbom = _base(request, target, platform)
            step(f"{platform}: installing {target.abi} wheels")
            lock_file = locks.file_name(platform)  # re-used from the previous export to `out` while it still fits
            previous = locks.read(request.out / lock_file) if (request.out / lock_file).is_file() else None
            deps, installed = assemble.deps_layer(target, platform, work, sbom=base_sbom, lock=previous)
            (staging / lock_file).parent.mkdir(exist_ok=True)
            (staging / lock_file).write_text(installed.lock.text())
            img = assemble.assemble(base.image, target, platform, deps=deps, runtime=runtime, model=model,
                                    labels={**labels, "dev.mlpack.base.digest": str(base.image.digest)})
            names: tuple[str, ...] = ("deps", "runtime", "model")
            if request.prebuild_engine:
                from mlpk.packager import tensorrt
                from mlpk.packager.oci import append_layers

                step(f"{platform}: building the TensorRT engine on this GPU")
                card = json.loads(prepared.files["model-card.json"].read_text())
                engine = tensorrt.engine_layer(prepared.files["model.onnx"], target, card, platform)
                img = append_layers(img, engine, created_by="mlpack: TensorRT engine (prebuilt)")
                names += ("engine",)
            step(f"{platform}: checking the size budget")
            parts = assemble.parts(img, names, checked=base.layers)
            size = assemble.check_budget(target, platform, parts)
            builds.append(PlatformBuild(platform, str(img.digest), [
                {"name": p.name, "digest": str(p.layer.digest), "compressed": p.layer.size,
                 "uncompressed": p.uncompressed} for p in parts], round(size, 2), None,
                {"file": lock_file, "status": installed.relock or "re-used", "refetched": list(installed.refetched)}))
            images.append(img)
        clock["build"] = time.perf_counter() - started

        started = time.perf_counter()
        step("writing outputs")
        result: Image | Index = images[0] if len(images) == 1 else index(*images)
        builds = _write(result, images, builds, staging, tag, request.archive)
        (staging / "model").mkdir()
        for name, source in prepared.files.items():  # the shipped model, as the image's model layer holds it
            shutil.copyfile(source, staging / "model" / name)
        pushed = None
        if request.push:
            from mlpk.packager.oci import remote

            step(f"pushing to {request.push}")
            pushed = remote.push(result, request.push).to_dict()
        clock["write"] = time.perf_counter() - started
        report = ExportReport(
            target=target.name, tag=tag, out=str(request.out), model=prepared.summary,
            optimization=prepared.optimization, platforms=builds, digest=str(result.digest),
            budget_mb=target.budget_mb, pushed=pushed, run=_run_hints(target, tag, builds, request.out),
            seconds={k: round(v, 2) for k, v in clock.items()})
        (staging / "report.json").write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True))
        _replace(staging, request.out, work / "previous")
    return report


def _slug(name: str) -> str:
    text = "".join(c if c.isalnum() or c in "-._" else "-" for c in name.lower()).strip("-._")
    return text or "model"


def _base(request: ExportRequest, target: Target, platform: str) -> tuple[sources.Base, Any]:
    """The base image for `platform`, through the layer-safety check whatever its source, and, when mlpack built
    it, its SBOM."""
    ref = request.base
    if ref is None and target.base.kind == "debian":
        from mlpk.packager.base import pipeline

        suite = target.base.suite or "bookworm"
        arch = Platform.parse(platform).architecture
        built = pipeline.build(pipeline.BaseSpec(suite=suite, arch=arch))
        return sources.Base.checked(built.image, f"debian:{suite} ({arch})"), built.sbom()
    ref = ref or target.base.ref or ""
    if sources.kind_of(ref) == "scratch":
        raise ConfigError(f"--base {ref} has no Python, which the {target.runtime} runtime of {target.name} runs on",
                          hint="give a base with python3 (a registry ref, oci:DIR or docker-archive:FILE.tar), or "
                               "leave --base out for the target's own")
    return sources.base(ref, Platform.parse(platform)), None


def _write(result: Image | Index, images: list[Image], builds: list[PlatformBuild], staging: Path, tag: str,
           archive: bool) -> list[PlatformBuild]:
    from mlpk.packager.oci import layout, tarball

    layout.write(result, staging / "oci", tag.rsplit(":", 1)[-1] if ":" in tag.rsplit("/", 1)[-1] else None)
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
        taken = out.exists() and (not out.is_dir() or (not (out / "report.json").is_file() and any(out.iterdir())))
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

