"""Can a given onnxruntime version load this model? IR version and ai.onnx opset against a data table.

The table (ort_compat.json) is data, not code (shared STYLE.md 4): one row per onnxruntime minor release. For a
release newer than the table, the installed onnxruntime is probed directly (it is asked to load tiny models of
rising IR / opset); for a newer release that is not installed, the check is skipped with a note.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from mlpk.packager.errors import ConfigError, ConversionError

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True, slots=True)
class OrtLimits:
    """The newest IR version and ai.onnx opset an onnxruntime release loads, and where that figure came from."""

    version: str
    ir: int
    opset: int
    source: str  # "table" | "probed"


@functools.cache
def table() -> dict[str, OrtLimits]:
    raw = json.loads(resources.files(__package__).joinpath("ort_compat.json").read_text())
    return {minor: OrtLimits(minor, row["ir"], row["opset"], "table") for minor, row in raw["releases"].items()}


def _minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def _loads(ir: int, opset: int) -> bool:
    import onnx
    import onnxruntime as ort
    from onnx import helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - any refusal means "does not load"
        return False
    return True


@functools.cache
def probe_installed() -> OrtLimits:
    """Limits of the installed onnxruntime, found by loading tiny models (fast: a few sessions)."""
    import onnxruntime as ort

    newest = max(table().values(), key=lambda row: (row.ir, row.opset))
    ir, opset = newest.ir, newest.opset
    while ir < 30 and _loads(ir + 1, opset):
        ir += 1
    while opset < 60 and _loads(ir, opset + 1):
        opset += 1
    return OrtLimits(_minor(ort.__version__), ir, opset, "probed")


def limits(version: str | None = None) -> OrtLimits | None:
    """Limits for onnxruntime `version` (default: the installed one); None when unknown and not installed."""
    import onnxruntime as ort

    if version is not None and not re.fullmatch(r"\d+\.\d+(\.\d+)?", version.strip()):
        raise ConfigError(f"onnxruntime version {version!r} is not X.Y or X.Y.Z", hint="e.g. --ort-version 1.20")
    installed = _minor(ort.__version__)
    wanted = _minor(version) if version else installed
    row = table().get(wanted)
    if row is not None:
        return row
    oldest = min(table(), key=_as_tuple)
    if _as_tuple(wanted) < _as_tuple(oldest):
        raise ConfigError(f"onnxruntime {version} is older than any mlpack knows the limits of (the oldest is "
                          f"{oldest}), so it cannot check that a model loads there",
                          hint=f"name onnxruntime {oldest} or newer (--ort-version)")
    return probe_installed() if wanted == installed else None


def _as_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def check(model: onnx.ModelProto, name: str, ort_version: str | None = None) -> str:
    """Raise ConversionError when onnxruntime `ort_version` cannot load `model`; return a one-line note."""
    opsets = {entry.domain or "ai.onnx": entry.version for entry in model.opset_import}
    opset = opsets.get("ai.onnx")
    found = limits(ort_version)
    if found is None:
        return f"onnxruntime {ort_version} is newer than the compatibility table; IR/opset not checked"
    problems = []
    if model.ir_version > found.ir:
        problems.append(f"IR version {model.ir_version} (it loads up to {found.ir})")
    if opset is not None and opset > found.opset:
        problems.append(f"opset {opset} (it loads up to {found.opset})")
    if problems:
        raise ConversionError(
            f"{name} needs {' and '.join(problems)}, but the target's onnxruntime {found.version} cannot load it",
            hint=f"convert it with mlpack convert MODEL --opset {found.opset} (older opsets convert down) and use that "
                 ".onnx, or use a newer onnxruntime")
    return f"IR {model.ir_version}, opset {opset} load in onnxruntime {found.version} ({found.source})"


def lower_ir(model: onnx.ModelProto) -> str | None:
    """Stamp the lowest IR version the model's opsets need, if the model passes the checker at it; mutates
    `model`. Exporters stamp the newest IR they know (the dynamo exporter writes IR 10 for opset 18), which older
    runtimes refuse although nothing in the model needs it. Returns a note when the IR changed."""
    import onnx

    current = model.ir_version
    try:
        needed = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    except ValueError:
        return None
    if needed >= current:
        return None
    model.ir_version = needed
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError):
        model.ir_version = current  # the model uses something newer IRs added (e.g. float8 types)
        return None
    return f"IR version lowered {current} -> {needed} (the lowest its opsets need)"


def merge_opsets(model: onnx.ModelProto) -> str | None:
    """Keep one opset import per domain (the highest version; "" and "ai.onnx" are one domain); mutates `model`.
    Some converters list a domain twice (skl2onnx writes "" twice for pipelines), which onnxruntime loads but its
    quantization tools refuse ("Failed to find proper ai.onnx domain"). Returns a note when entries were merged."""
    from onnx import helper

    versions: dict[str, int] = {}
    for entry in model.opset_import:
        domain = "" if entry.domain == "ai.onnx" else entry.domain
        versions[domain] = max(versions.get(domain, 0), entry.version)
    if len(versions) == len(model.opset_import):
        return None
    listed = ", ".join(f"{e.domain or 'ai.onnx'} {e.version}" for e in model.opset_import)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in versions.items())
    return f"opset imports merged to one per domain (the model listed {listed})"
