"""Assembling a target's image from its parts, daemonless (shared DESIGN.md, "The path of a model"):

    base image  +  deps layer (wheels for the platform)  +  runtime layer (mlpk.runtimes)  +  model layer  + config

Layers go from the least to the most often changed, so a model-only change gives a new top layer and every other
layer keeps its digest. `build` returns a `Built` (an image per platform, or the index of several, with every layer
a named `Part`) and writes nothing but cache blobs; sinks write it (exportdir.write, oci.build.write_outputs).

A part's name travels with its layer: the report lists it, and the image's history says `mlpack: NAME (DETAIL)`,
which `part_names` reads back from any image mlpack built (bench, inspect).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mlpk.packager import __version__, deps, locks, wheels
from mlpk.packager.deps import PREFIX, SBOM_PATH, SITE
from mlpk.packager.errors import BuildError
from mlpk.packager.oci import (Entry, Image, Index, Layer, Platform, append_layers, index, layer_from_entries, sources,
                               with_config)
from mlpk.packager.oci.validate import known_layer
from mlpk.packager.targets import Target

LIB = f"{PREFIX}/lib"  # the runtime code: LIB/mlpk/runtimes
MODEL_DIR = f"{PREFIX}/model"  # one model: its files
MODELS_DIR = f"{PREFIX}/models"  # a model repository (runtimes/repository.py): MODELS_DIR/NAME/VERSION/its files
# Files of mlpk.runtimes that ship in images (code, the OpenAPI document it serves, the gRPC descriptor set).
RUNTIME_SUFFIXES = (".py", ".json", ".yaml", ".binpb")
# What the history says of a part beside its name (`mlpack: NAME (DETAIL)`).
DETAILS = {"deps": "wheels", "runtime": "mlpk.runtimes", "engine": "TensorRT, prebuilt"}
HISTORY_PREFIX = "mlpack: "

__all__ = ["LIB", "MODELS_DIR", "MODEL_DIR", "PREFIX", "SBOM_PATH", "SITE", "Built", "Part", "PlatformImage",
           "build", "check_budget", "configure", "extend", "model_layer", "part_names", "runtime_layer",
           "version_layer"]


@dataclass(frozen=True, slots=True)
class Part:
    """One layer of an assembled image with its name for the report (base, base[i], deps, runtime, model,
    `model NAME/VERSION`, engine) and its uncompressed size."""

    name: str
    layer: Layer
    uncompressed: int

    @classmethod
    def of(cls, name: str, layer: Layer) -> Part:
        """`layer` named `name`, its size from what is known of it (a layer mlpack made is never read for it)."""
        return cls(name, layer, known_layer(layer).uncompressed_size)

    @property
    def history(self) -> str:
        detail = DETAILS.get(self.name)
        return f"{HISTORY_PREFIX}{self.name}" + (f" ({detail})" if detail else "")


def part_names(img: Image) -> list[str]:
    """The part name of each of `img`'s layers, read from its history (`mlpack: NAME (DETAIL)`); layers without
    one are the base's: `base`, or `base[i]` when there are several."""
    history = [h for h in img.config.get("history") or [] if not h.get("empty_layer")]
    said = [str(h.get("created_by", "")) for h in history] if len(history) == len(img.layers) else \
        [""] * len(img.layers)
    names = [text.removeprefix(HISTORY_PREFIX).split(" (")[0] if text.startswith(HISTORY_PREFIX) else ""
             for text in said]
    unnamed = [i for i, name in enumerate(names) if not name]
    for position, i in enumerate(unnamed):
        names[i] = "base" if len(unnamed) == 1 else f"base[{position}]"
    return names


def _stack(img: Image, parts: Sequence[Part]) -> Image:
    for part in parts:
        img = append_layers(img, part.layer, created_by=part.history)
    return img


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


def model_layer(files: Mapping[str, Path]) -> Layer:
    """The model's files (name in MODEL_DIR -> source), read-only for the runtime user."""
    entries = [Entry(MODEL_DIR, "dir", mode=0o755)]
    entries += [Entry(f"{MODEL_DIR}/{name}", "file", source=source, mode=0o644)
                for name, source in sorted(files.items())]
    return layer_from_entries(entries)


def version_label(name: str, version: int) -> str:
    return f"model {name}/{version}"


def version_layer(name: str, version: int, files: Mapping[str, Path], *,
                  links: Sequence[tuple[str, int]] = ()) -> Part:
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
    return Part.of(version_label(name, version), layer_from_entries(unique))


def configure(img: Image, target: Target, *, labels: Mapping[str, str | None], model_dir: str = MODEL_DIR) -> Image:
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
        env.update(target.serve.env())
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


def _check_platform(base: Image, target: Target, platform: str) -> None:
    if not Platform.parse(platform).matches(base.platform):  # arm64 is arm64/v8, however the base records it
        raise BuildError(f"the base image is for {base.platform}, but {target.name} builds {platform}",
                         hint="give a base for that platform (an index, or --base for each platform)")


def assemble(base: Image, target: Target, platform: str, *, deps: Layer, runtime: Layer,
             model: Layer | Sequence[Part], labels: Mapping[str, str | None]) -> Image:
    """base + deps + runtime + model, configured for `target`; `model` is one model's layer, or the version parts
    of a model repository (served from MODELS_DIR)."""
    _check_platform(base, target, platform)
    models = list(model) if isinstance(model, Sequence) else [Part("model", model, 0)]
    img = _stack(base, [Part("deps", deps, 0), Part("runtime", runtime, 0), *models])
    return configure(img, target, labels=labels, model_dir=MODELS_DIR if isinstance(model, Sequence) else MODEL_DIR)


def check_budget(target: Target, platform: str, layer_parts: Sequence[Part]) -> float:
    """The image's uncompressed size in MB; BuildError with the per-layer table when it exceeds the budget."""
    total = sum(p.uncompressed for p in layer_parts) / 1e6
    if total > target.budget_mb:
        table = ", ".join(f"{p.name} {p.uncompressed / 1e6:.1f} MB" for p in layer_parts)
        raise BuildError(f"the {target.name} image for {platform} is {total:.1f} MB, over its budget of "
                         f"{target.budget_mb:g} MB (layers: {table})",
                         hint="quantize the model (mlpack export --quantize MODE), give a slimmer --base, or "
                              "raise the budget with --budget-mb MB")
    return total


@dataclass(frozen=True, slots=True)
class PlatformImage:
    """The image of one platform, its parts bottom to top, its uncompressed size in MB, and the wheels lock its
    deps layer was installed from: its text and file name, why it was resolved ('' when re-used) and the cached
    wheels that were fetched again."""

    platform: str
    image: Image
    parts: tuple[Part, ...]
    size_mb: float
    lock_file: str
    lock_text: str | None  # None: an earlier export that kept no lock file
    lock_status: str
    refetched: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Built:
    """A target's image per platform, built and checked against the budget; nothing written yet."""

    target: Target
    platforms: tuple[PlatformImage, ...]

    @property
    def item(self) -> Image | Index:
        """The image (one platform) or the index of every platform's image."""
        images = [p.image for p in self.platforms]
        return images[0] if len(images) == 1 else index(*images)


Step = Callable[[str], None]


def _finish(target: Target, platform: str, img: Image, parts: Sequence[Part], lock_file: str, lock_text: str | None,
            status: str, refetched: tuple[str, ...], step: Step) -> PlatformImage:
    step(f"{platform}: checking the size budget")
    size = check_budget(target, platform, parts)
    return PlatformImage(platform, img, tuple(parts), round(size, 2), lock_file, lock_text, status, refetched)


def build(target: Target, models: Sequence[Part], *, labels: Mapping[str, str | None], workdir: Path,
          base: str | None = None, locks_found: Mapping[str, locks.Lock] | None = None,
          engine: Callable[[str], Layer] | None = None, step: Step = lambda _: None) -> Built:
    """Every platform's image of `target` serving `models` (one part named `model`, or a repository's version
    parts): the base (`base`, an image source, else the target's) through its safety check, the deps layer
    (installed from the lock in `locks_found` for the platform while it still answers the requirements), the
    runtime layer, the models, the config with `labels`, and with `engine` the prebuilt TensorRT engine for the
    platform on top; each checked against the budget. Writes nothing but cache blobs."""
    step("building the runtime layer")
    runtime = Part.of("runtime", runtime_layer(target.python))
    repository = not (len(models) == 1 and models[0].name == "model")
    built = []
    for platform in target.platforms:
        step(f"{platform}: base image")
        found = sources.base(base or target.base.source, Platform.parse(platform))
        step(f"{platform}: installing {target.abi} wheels")
        layer, installed = deps.layer(target, platform, workdir, sbom=found.sbom,
                                      lock=(locks_found or {}).get(platform))
        sizes = {report.digest: report.uncompressed_size for report in found.layers}
        below = [Part("base" if len(found.image.layers) == 1 else f"base[{i}]", la, sizes[la.digest])
                 for i, la in enumerate(found.image.layers)]
        above = [Part.of("deps", layer), runtime, *models]
        img = configure(_stack(found.image, above), target,
                        labels={**labels, "dev.mlpack.base.digest": str(found.image.digest)},
                        model_dir=MODELS_DIR if repository else MODEL_DIR)
        if engine is not None:
            step(f"{platform}: building the TensorRT engine on this GPU")
            prebuilt = Part.of("engine", engine(platform))
            img, above = _stack(img, [prebuilt]), [*above, prebuilt]
        built.append(_finish(target, platform, img, [*below, *above], locks.file_name(platform),
                             installed.lock.text(), installed.relock or "re-used", tuple(installed.refetched), step))
    return Built(target, tuple(built))


def extend(target: Target, images: Sequence[PlatformImage], versions: Sequence[Part],
           labels: Mapping[str, str | None], step: Step = lambda _: None) -> Built:
    """Earlier images (`mlpack export --add-version`: every layer kept, with its lock) with more model versions on
    top, serving the repository at MODELS_DIR."""
    built = []
    for earlier in images:
        img = with_config(_stack(earlier.image, versions), env={"MLPACK_MODEL_DIR": MODELS_DIR}, labels=labels)
        built.append(_finish(target, earlier.platform, img, [*earlier.parts, *versions], earlier.lock_file,
                             earlier.lock_text, "re-used (--add-version keeps every layer of the export)",
                             earlier.refetched, step))
    return Built(target, tuple(built))
