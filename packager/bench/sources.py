"""What `mlpack bench` is given, resolved: a model on disk, or an image (an `mlpack export` directory, an OCI layout,
a docker-archive or a registry reference) with its layer sizes, its model files and whether it is a Lambda image.

An image's model is the one its model layer ships under /opt/mlpack/model (assemble.MODEL_DIR), read from the
topmost layer that holds it (a prebuilt TensorRT engine may sit above it); an export directory has the same files in
its model/ folder already.
"""

from __future__ import annotations

import gzip
import json
import platform as host
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mlpk.packager import assemble, exportdir
from mlpk.packager import card as cards
from mlpk.packager.assemble import MODEL_DIR
from mlpk.packager.card import TensorSpec
from mlpk.packager.convert.specs import graph_inputs
from mlpk.packager.deliver.images import resolve
from mlpk.packager.emulation import ARCH_OF_MACHINE
from mlpk.packager.errors import BuildError, InputError
from mlpk.packager.exportdir import ExportReport, LayerEntry
from mlpk.packager.oci import Image, Platform
from mlpk.packager.oci.safety import check_member
from mlpk.packager.oci.validate import known_layer
from mlpk.packager.sample_data import generate
from mlpk.runtimes.dtypes import numpy_to_v2

Kind = Literal["model", "export", "layout", "archive", "registry"]
MODEL_FILE = "model.onnx"
CARD_FILE = "model-card.json"
_IMAGE_HINT = ("give an .onnx file, a directory with model.onnx, an `mlpack export` directory, an OCI layout, a "
               "docker-archive .tar or HOST/REPO:TAG")


@dataclass(frozen=True, slots=True)
class Source:
    """The argument, resolved: its kind, and for images the single-platform image chosen and its export report."""

    text: str
    kind: Kind
    model_path: Path | None = None  # a model given directly: the .onnx file or its directory
    image: Image | None = None
    tag: str | None = None
    report: ExportReport | None = None
    export_dir: Path | None = None

    @property
    def platform(self) -> str | None:
        return None if self.image is None else str(self.image.platform)

    @property
    def is_lambda(self) -> bool:
        """Whether the image runs the Lambda runtime interface client instead of the HTTP server (as
        assemble.configure sets it up for `runtime = "lambda"` targets)."""
        if self.image is None:
            return False
        config = self.image.config.get("config") or {}
        argv = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
        target = str((config.get("Labels") or {}).get("dev.mlpack.target", ""))
        return target.startswith("lambda") or any("awslambdaric" in a or "lambda_handler" in a for a in argv)

    def command(self) -> list[str]:
        """The image's entrypoint followed by its cmd."""
        config = (self.image.config.get("config") or {}) if self.image is not None else {}
        return [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]

    def to_dict(self) -> dict[str, Any]:
        return {"argument": self.text, "kind": self.kind, "platform": self.platform, "tag": self.tag,
                "digest": None if self.image is None else str(self.image.digest), "lambda": self.is_lambda}


def host_platform() -> str:
    """linux/ARCH of this machine, in OCI's architecture names."""
    machine = host.machine().lower()
    return f"linux/{ARCH_OF_MACHINE.get(machine, machine)}"


def _is_model_dir(path: Path) -> bool:
    """A directory the runtime serves: model.onnx or a single .onnx file in it (not an export or OCI layout)."""
    if not path.is_dir() or (path / "oci-layout").is_file() or exportdir.is_export(path):
        return False
    return (path / MODEL_FILE).is_file() or len(list(path.glob("*.onnx"))) == 1


def open_source(text: str, platform: str | None = None) -> Source:
    """Resolve `text`; from a multi-platform index, the image for `platform` (default: this machine's)."""
    path = Path(text).expanduser()
    if (path.is_file() and path.suffix == ".onnx") or _is_model_dir(path):
        return Source(text, "model", model_path=path)
    if not path.exists() and (path.suffix in (".onnx", ".tar") or text.startswith(("/", "./", "../", "~"))):
        raise InputError(f"'{text}' does not exist", hint=_IMAGE_HINT)
    if path.is_file() and not tarfile.is_tarfile(path):
        raise InputError(f"'{text}' is neither an ONNX model (.onnx) nor a docker-archive tar", hint=_IMAGE_HINT)
    if path.is_dir() and not exportdir.is_export(path) and not (path / "oci-layout").is_file():
        raise InputError(f"'{text}' holds neither model.onnx, an `mlpack export` (report.json) nor an OCI layout "
                         "(oci-layout)", hint=_IMAGE_HINT)
    try:
        resolved = resolve(str(path) if path.exists() else text, platform or host_platform(), strict=False)
    except BuildError as err:  # an index without an image for the platform asked
        raise InputError(err.message, hint="choose one of its platforms with --platform") from err
    kind: Kind = ("export" if resolved.report is not None else "layout" if path.is_dir()
                  else "archive" if path.is_file() else "registry")
    if platform is not None and not Platform.parse(platform).matches(resolved.image.platform):
        raise InputError(f"'{text}' is an image for {resolved.image.platform}, not {platform}",
                         hint="drop --platform, or give an image built for that platform")
    return Source(text, kind, image=resolved.image, tag=resolved.tag, report=resolved.report,
                  export_dir=path if kind == "export" else None)


def model_dir(source: Source, workdir: Path) -> Path:
    """The source's model on this host, as the runtime takes it (an .onnx file, or a directory with model.onnx and
    model-card.json): the model given, the export's model/ folder, or the image's model layer extracted into
    `workdir`."""
    if source.model_path is not None:
        return source.model_path
    if source.export_dir is not None and (source.export_dir / "model" / MODEL_FILE).is_file():
        return source.export_dir / "model"
    assert source.image is not None
    return _extract_model(source.image, workdir / "model")


def _extract_model(img: Image, dest: Path) -> Path:
    prefix = MODEL_DIR.strip("/") + "/"
    for layer in reversed(img.layers):
        found = False
        shutil.rmtree(dest, ignore_errors=True)
        with layer.open() as raw, gzip.GzipFile(fileobj=raw, mode="rb") as unzipped, \
                tarfile.open(fileobj=unzipped, mode="r|") as tar:
            for info in tar:
                check_member(info)
                name = info.name.removeprefix("./")
                if not (info.isfile() and name.startswith(prefix)):
                    continue
                relative = Path(name[len(prefix):])
                if not relative.parts or ".." in relative.parts:
                    continue
                target = dest / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                member = tar.extractfile(info)
                if member is not None:
                    with target.open("wb") as out:
                        shutil.copyfileobj(member, out)
                found = found or name == prefix + MODEL_FILE
        if found:
            return dest
    shutil.rmtree(dest, ignore_errors=True)
    raise InputError(f"image {img.digest} has no {MODEL_DIR}/{MODEL_FILE} in any layer",
                     hint="bench images built by `mlpack export` (or give the .onnx model itself)")


def model_file(directory_or_file: Path) -> Path:
    """The .onnx file of a model path: the file itself, a directory's model.onnx, or its only .onnx file."""
    if directory_or_file.is_file():
        return directory_or_file
    default = directory_or_file / MODEL_FILE
    if default.is_file():
        return default
    found = sorted(directory_or_file.glob("*.onnx"))
    if len(found) != 1:
        raise InputError(f"'{directory_or_file}' holds {len(found)} .onnx files and no {MODEL_FILE}",
                         hint="give the .onnx file itself")
    return found[0]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """The model a server will serve: its name (as the runtime names it), file, size and inputs."""

    name: str
    file: Path
    bytes: int
    inputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "file": self.file.name, "bytes": self.bytes,
                "inputs": [spec.to_dict() for spec in self.inputs]}


def model_info(model: Path) -> ModelInfo:
    """Read the model at `model` (a file or directory). Its card is the one embedded in the model, else
    model-card.json beside it; the inputs are the card's when it lists them, else the ONNX graph's; the name is the
    card's, else the file's stem (the runtime's rule, mlpk.runtimes.model.load)."""
    import onnx

    file = model_file(model)
    try:
        proto = onnx.load(str(file), load_external_data=False)
    except Exception as err:  # onnx raises DecodeError, OSError, ValueError... for a file that is not a model
        raise InputError(f"'{file}' is not a readable ONNX model ({type(err).__name__}: {err})"[:400],
                         hint="check it with `python -c \"import onnx; onnx.checker.check_model('MODEL.onnx')\"`") \
            from err
    found = None
    try:
        found = cards.from_model(proto, origin=file.name)
        if found is None and (file.parent / CARD_FILE).is_file():
            found = cards.ModelCard.from_dict(json.loads((file.parent / CARD_FILE).read_text()), origin=CARD_FILE)
    except (InputError, json.JSONDecodeError, OSError):
        found = None  # a card we cannot read: the graph still says what the inputs are
    specs = found.inputs if found is not None and found.inputs else graph_inputs(proto)
    if not specs:
        raise InputError(f"'{file}' has no inputs, so there is nothing to send it", hint="give a model with inputs")
    return ModelInfo(found.name if found is not None and found.name else file.stem, file, file.stat().st_size,
                     specs)


def layer_sizes(source: Source) -> tuple[LayerEntry, ...]:
    """The image's layers with compressed and uncompressed sizes: from the export report when it describes this
    image, else from what is known of each layer (reading those never seen before), named as the image's history
    names them (assemble.part_names)."""
    img = source.image
    if img is None:
        return ()
    for build in source.report.platforms if source.report is not None else ():
        if build.digest == str(img.digest) and len(build.layers) == len(img.layers):
            return build.layers
    return tuple(LayerEntry(name, str(layer.digest), layer.size, known_layer(layer).uncompressed_size)
                 for name, layer in zip(assemble.part_names(img), img.layers, strict=True))


def infer_body(specs: tuple[TensorSpec, ...]) -> bytes:
    """An Open Inference Protocol v2 JSON request of one sample (sample_data.generate at batch 1) for `specs`; the
    same object is a direct-invocation event for mlpack's Lambda handler."""
    arrays = generate(specs, batch=1).inputs
    inputs = [{"name": name, "shape": list(array.shape), "datatype": numpy_to_v2(array.dtype),
               "data": array.ravel().tolist()} for name, array in arrays.items()]
    return json.dumps({"inputs": inputs}).encode()
