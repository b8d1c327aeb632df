"""Assembling a target's image from its parts, daemonless (shared DESIGN.md, "The path of a model"):

    base image  +  deps layer (wheels for the platform)  +  runtime layer (mlpk.runtimes)  +  model layer  + config

Layers go from the least to the most often changed, so a model-only change gives a new top layer and every other
layer keeps its digest. Building returns images and writes nothing but cache blobs; sinks write.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from mlpk.packager import __version__, locations, locks, wheels
from mlpk.packager.errors import BuildError
from mlpk.packager.oci import BlobLayer, Digest, Entry, Image, Layer, Platform, append_layers, layer_from_entries, \
    with_config
from mlpk.packager.oci.cache import default_cache
from mlpk.packager.oci.validate import LayerReport, known_layer
from mlpk.packager.targets import Target

PREFIX = "/opt/mlpack"
LIB = f"{PREFIX}/lib"  # the runtime code: LIB/mlpk/runtimes
SITE = f"{PREFIX}/site-packages"  # the deps
MODEL_DIR = f"{PREFIX}/model"  # one model: its files
MODELS_DIR = f"{PREFIX}/models"  # a model repository (runtimes/repository.py): MODELS_DIR/NAME/VERSION/its files
SBOM_PATH = f"{PREFIX}/sbom.cdx.json"  # model.onnx, model-card.json (and external data, when the model has it)
# Files of mlpk.runtimes that ship in images (code, the OpenAPI document it serves, the gRPC descriptor set).
RUNTIME_SUFFIXES = (".py", ".json", ".yaml", ".binpb")


@dataclass(frozen=True, slots=True)
class Part:
    """One layer of an assembled image, named for the report."""

    name: str  # base | deps | runtime | model
    layer: Layer
    uncompressed: int


def _runtime_sources() -> Iterator[tuple[str, Path]]:
    root = resources.files("mlpk.runtimes")
    with resources.as_file(root) as path:
        for source in sorted(Path(path).rglob("*")):
            rel = source.relative_to(path)
            if source.is_file() and source.suffix in RUNTIME_SUFFIXES and "__pycache__" not in rel.parts:
                yield rel.as_posix(), source


def runtime_layer(python: str) -> Layer:
    """mlpk.runtimes at LIB/mlpk/runtimes, byte-compiled (hash-based pycs) when the host Python is the target's."""
    with tempfile.TemporaryDirectory(prefix="mlpack-runtime-") as tmp:
        staged = Path(tmp) / "mlpk" / "runtimes"
        for rel, source in _runtime_sources():
            dest = staged / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
        if python == f"{sys.version_info[0]}.{sys.version_info[1]}":
            wheels.compile_tree(staged, f"{LIB}/mlpk/runtimes")
        entries = [Entry(f"{LIB}/{p.relative_to(tmp).as_posix()}", "dir" if p.is_dir() else "file",
                         source=None if p.is_dir() else p, mode=0o755 if p.is_dir() else 0o644)
                   for p in sorted(Path(tmp).rglob("*"))]
        return layer_from_entries(entries)


def deps_layer(target: Target, platform: str, workdir: Path, *, sbom: object | None = None,
               lock: locks.Lock | None = None) -> tuple[Layer, wheels.Deps]:
    """The target's requirements for `platform`, installed from wheels at SITE, with the image's CycloneDX SBOM
    (the base's packages when mlpack built the base, plus every installed distribution) at SBOM_PATH.

    The wheels are the ones `lock` pins while it answers the target's requirements, else a fresh resolution
    (wheels.lock_for); the returned Deps carries the lock used. The finished layer is remembered under a key of
    everything that decides its bytes (the lock's pins, platform, Python, glibc and the base's SBOM identity), so a
    re-export whose deps did not change reuses it without installing anything: the model-only change is the fast
    path. The remembered blob is hashed before it is reused; one that no longer matches is evicted and the layer
    rebuilt.
    """
    lock, relock = wheels.lock_for(target.wheels.requirements, platform=platform, python=target.python,
                                   glibc=target.base.glibc, index=target.wheels.index,
                                   extra_index=target.wheels.extra_index, previous=lock)
    base_id = str(getattr(sbom, "serial_number", "")) if sbom is not None else ""
    key = _deps_key(target, platform, lock, base_id)
    cached = _cached_deps(key, platform, target.python, lock, relock)
    if cached is not None:
        return cached
    deps = wheels.install(target.wheels.requirements, workdir / f"site-{platform.replace('/', '-')}",
                          platform=platform, python=target.python, glibc=target.base.glibc,
                          index=target.wheels.index, extra_index=target.wheels.extra_index, image_path=SITE,
                          lock=lock)
    deps = replace(deps, relock=relock)
    entries = [Entry(SITE, "dir", mode=0o755)]
    for path in sorted(deps.root.rglob("*")):
        image_path = f"{SITE}/{path.relative_to(deps.root).as_posix()}"
        if path.is_symlink():
            entries.append(Entry(image_path, "symlink", target=str(path.readlink())))
        elif path.is_dir():
            entries.append(Entry(image_path, "dir", mode=0o755))
        else:
            entries.append(Entry(image_path, "file", source=path, mode=0o755 if path.stat().st_mode & 0o111
                                 else 0o644))
    sbom_file = workdir / f"sbom-{platform.replace('/', '-')}.cdx.json"
    sbom_file.write_text(image_sbom(sbom, deps.distributions, target, platform))
    entries.append(Entry(SBOM_PATH, "file", source=sbom_file, mode=0o644))
    layer = layer_from_entries(entries)
    _remember_deps(key, layer, deps)
    return layer, deps


DEPS_CACHE_VERSION = "1"


def _deps_key(target: Target, platform: str, lock: locks.Lock, base_id: str) -> str:
    ident = [DEPS_CACHE_VERSION, __version__, list(target.wheels.requirements), target.wheels.index,
             target.wheels.extra_index, platform, target.python, target.base.glibc, SITE, SBOM_PATH, base_id,
             target.name, lock.text(), sorted(wheels.PRUNED)]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()


def _deps_record(key: str) -> Path:
    return locations.cache_dir() / "layers" / f"deps-{key}.json"


def _cached_deps(key: str, platform: str, python: str, lock: locks.Lock,
                 relock: str) -> tuple[Layer, wheels.Deps] | None:
    record = _deps_record(key)
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    store = default_cache()
    digest = Digest.parse(data["digest"])
    if not store.sound(digest, int(data["size"])):
        store.evict(digest)  # a corrupted blob is never reused: the caller builds the layer again
        return None
    layer = BlobLayer(store.path(digest), digest, Digest.parse(data["diff_id"]), int(data["size"]))
    found = tuple(wheels.Distribution(**d) for d in data["distributions"])
    return layer, wheels.Deps(Path(SITE), platform, python, found, int(data["pruned_bytes"]), bool(data["compiled"]),
                              lock, relock)


def _remember_deps(key: str, layer: Layer, deps: wheels.Deps) -> None:
    record = _deps_record(key)
    record.parent.mkdir(parents=True, exist_ok=True)
    data = {"digest": str(layer.digest), "diff_id": str(layer.diff_id), "size": layer.size,
            "distributions": [{"name": d.name, "version": d.version, "license": d.license, "summary": d.summary}
                              for d in deps.distributions],
            "pruned_bytes": deps.pruned_bytes, "compiled": deps.compiled}
    tmp = record.with_name(f".{record.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, record)


def image_sbom(base_sbom: object | None, distributions: tuple[wheels.Distribution, ...], target: Target,
               platform: str) -> str:
    """CycloneDX JSON: the base's SBOM (or an empty one for bases mlpack did not build) plus the Python
    distributions of the deps layer."""
    from mlpk.packager.base import sbom

    if base_sbom is None:
        from cyclonedx.model.bom import Bom, BomMetaData
        from cyclonedx.model.component import Component, ComponentType

        import uuid
        from datetime import UTC, datetime

        from mlpk.packager.oci.layer import source_date_epoch

        name = f"mlpack-{target.name}-{platform.replace('/', '-')}"
        ident = name + "".join(f" {d.name}=={d.version}" for d in distributions)
        root = Component(name=name, type=ComponentType.CONTAINER, bom_ref="mlpack-image")
        # Serial number and timestamp derive from the inputs, so the deps layer stays reproducible.
        base_sbom = Bom(metadata=BomMetaData(component=root,
                                             timestamp=datetime.fromtimestamp(source_date_epoch(), UTC)),
                        serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"mlpack-image:{ident}"))
    sbom.add_python_distributions(base_sbom, [(d.name, d.version) for d in distributions])
    return sbom.to_json(base_sbom)


def model_layer(files: dict[str, Path]) -> Layer:
    """The model's files (name in MODEL_DIR -> source), read-only for the runtime user."""
    entries = [Entry(MODEL_DIR, "dir", mode=0o755)]
    entries += [Entry(f"{MODEL_DIR}/{name}", "file", source=source, mode=0o644)
                for name, source in sorted(files.items())]
    return layer_from_entries(entries)


@dataclass(frozen=True, slots=True)
class ModelLayer:
    """The layer of one model version in a repository image, and its name in the report (`model NAME/VERSION`,
    or `model` for the model layer of a one-model image)."""

    name: str
    layer: Layer


def version_label(name: str, version: int) -> str:
    return f"model {name}/{version}"


def version_layer(name: str, version: int, files: dict[str, Path], *,
                  links: Sequence[tuple[str, int]] = ()) -> ModelLayer:
    """One model version at MODELS_DIR/NAME/VERSION, in a layer of its own, so adding a version to an image adds
    one layer and leaves the others' digests alone. `links`: (NAME, VERSION) of a one-model image's model
    (MODEL_DIR, in a layer below) to serve from the repository too, as a relative symlink to it."""
    entries = [Entry(MODELS_DIR, "dir", mode=0o755)]
    for linked_name, linked_version in links:
        entries.append(Entry(f"{MODELS_DIR}/{linked_name}", "dir", mode=0o755))
        entries.append(Entry(f"{MODELS_DIR}/{linked_name}/{linked_version}", "symlink", target="../../model"))
    folder = f"{MODELS_DIR}/{name}"
    entries += [Entry(folder, "dir", mode=0o755), Entry(f"{folder}/{version}", "dir", mode=0o755)]
    entries += [Entry(f"{folder}/{version}/{file}", "file", source=source, mode=0o644)
                for file, source in sorted(files.items())]
    unique = list({entry.path: entry for entry in entries}.values())  # a linked name may be this layer's own
    return ModelLayer(version_label(name, version), layer_from_entries(unique))


def configure(img: Image, target: Target, *, labels: dict[str, str | None], model_dir: str = MODEL_DIR) -> Image:
    """The runtime config for `target`: entrypoint, env, non-root user, ports, labels; the server reads its model
    (or model repository) from `model_dir`."""
    python = "/usr/bin/python3"
    if target.runtime == "lambda":
        entrypoint = [python, "-m", "awslambdaric"]
        cmd = ["mlpk.runtimes.lambda_handler.handler"]
    else:
        entrypoint = [python, "-m", "mlpk.runtimes.server"]
        cmd = []
    env = {
        "PYTHONPATH": f"{LIB}:{SITE}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "MLPACK_MODEL_DIR": model_dir,
        "MLPACK_PROVIDERS": ",".join(target.providers),
    }
    if target.runtime == "server":
        env["MLPACK_GRPC_PORT"] = str(target.grpc_port)
    if target.tensorrt is not None:
        env["MLPACK_TRT_CACHE"] = target.tensorrt.engine_cache
    env.update(target.env)
    all_labels = {
        "org.opencontainers.image.title": labels.get("org.opencontainers.image.title", target.name),
        "dev.mlpack.target": target.name,
        "dev.mlpack.version": __version__,
        **target.labels,
        **labels,
    }
    return with_config(img, entrypoint=entrypoint, cmd=cmd, env=env, user=target.user, workdir="/tmp",
                       labels=all_labels, exposed_ports=[str(p) for p in target.exposed_ports])


def assemble(base: Image, target: Target, platform: str, *, deps: Layer, runtime: Layer,
             model: Layer | Sequence[ModelLayer], labels: dict[str, str | None]) -> Image:
    """base + deps + runtime + model, configured for `target`; `model` is one model's layer, or the version layers
    of a model repository (served from MODELS_DIR)."""
    if not Platform.parse(platform).matches(base.platform):  # arm64 is arm64/v8, however the base records it
        raise BuildError(f"the base image is for {base.platform}, but {target.name} builds {platform}",
                         hint="give a base for that platform (an index, or --base for each platform)")
    img = append_layers(base, deps, created_by="mlpack: deps (wheels)")
    img = append_layers(img, runtime, created_by="mlpack: runtime (mlpk.runtimes)")
    if isinstance(model, Sequence):
        for version in model:
            img = append_layers(img, version.layer, created_by=f"mlpack: {version.name}")
        return configure(img, target, labels=labels, model_dir=MODELS_DIR)
    img = append_layers(img, model, created_by="mlpack: model")
    return configure(img, target, labels=labels)


def add_versions(img: Image, versions: Sequence[ModelLayer], labels: dict[str, str | None]) -> Image:
    """An exported image with more model versions on top (`mlpack export --add-version`): every layer it has is
    kept, and it serves the repository at MODELS_DIR."""
    for version in versions:
        img = append_layers(img, version.layer, created_by=f"mlpack: {version.name}")
    return with_config(img, env={"MLPACK_MODEL_DIR": MODELS_DIR}, labels=labels)


def parts(img: Image, names: tuple[str, ...] = ("deps", "runtime", "model"),
          checked: Sequence[LayerReport] = ()) -> list[Part]:
    """The image's layers named for the report: the top ones by `names`, everything below as base. Each layer is
    checked (digest, members, diff_id) unless `checked` already holds its report (the base's, from its check),
    once per layer content (validate.known_layer)."""
    known = {report.digest: report.uncompressed_size for report in checked}

    def size(layer: Layer) -> int:
        found = known.get(layer.digest)
        return found if found is not None else known_layer(layer).uncompressed_size

    layers = list(img.layers)
    top = len(names)
    out = [Part("base" if len(layers) - top == 1 else f"base[{i}]", layer, size(layer))
           for i, layer in enumerate(layers[:-top])]
    out += [Part(name, layer, size(layer)) for name, layer in zip(names, layers[-top:])]
    return out


def check_budget(target: Target, platform: str, layer_parts: list[Part]) -> float:
    """The image's uncompressed size in MB; BuildError with the per-layer table when it exceeds the budget."""
    total = sum(p.uncompressed for p in layer_parts) / 1e6
    if total > target.budget_mb:
        table = ", ".join(f"{p.name} {p.uncompressed / 1e6:.1f} MB" for p in layer_parts)
        raise BuildError(f"the {target.name} image for {platform} is {total:.1f} MB, over its budget of "
                         f"{target.budget_mb:g} MB (layers: {table})",
                         hint="quantize the model (mlpack export --quantize MODE), give a slimmer --base, or "
                              "raise the budget with --budget-mb MB")
    return total
