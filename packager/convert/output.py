"""Writing a converted model and its card: all or nothing.

Files are staged in a hidden directory beside the destination and renamed into place only once everything is
written, so a failure (or Ctrl-C) never leaves a half-written model. Models over protobuf's 2 GB limit are saved
with their tensors in an external data file `NAME.onnx.data` beside the model.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from mlpk.packager.errors import InputError

if TYPE_CHECKING:
    import onnx

# Stay clear of protobuf's hard 2 GiB message limit (with headroom for the graph itself).
EXTERNAL_DATA_ABOVE = 1_800_000_000
# Tensors smaller than this stay inline even then (onnx's own default threshold).
EXTERNAL_TENSOR_MIN = 1024


@contextmanager
def staging(destination: Path) -> Iterator[Path]:
    """A temporary directory on the destination's file system, removed afterwards whatever happens."""
    parent = destination.parent
    created = [p for p in (parent, *parent.parents) if not p.exists()]  # removed again if nothing is published
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the output directory {parent} ({err.strerror})") from err
    stage = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=parent))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in created:  # innermost first; a folder something else was written to stays
            with contextlib.suppress(OSError):
                folder.rmdir()


def save(model: onnx.ModelProto, path: Path) -> list[Path]:
    """Save `model` at `path` (with external data when large); returns the files written.

    Saving with external data moves the tensors out of `model` (onnx clears their raw data); saving such a model
    again at the same path rewrites only the graph file and keeps the data file already beside it."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    data = path.name + ".data"
    if (path.with_name(data)).is_file() and any(uses_external_data(t) for t in _get_all_tensors(model)):
        onnx.save_model(model, str(path))
        return [path, path.with_name(data)]
    if model.ByteSize() > EXTERNAL_DATA_ABOVE:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data,
                        size_threshold=EXTERNAL_TENSOR_MIN)
        return [p for p in (path, path.with_name(data)) if p.is_file()]
    onnx.save_model(model, str(path))
    return [path]


def publish(files: list[Path], destination_dir: Path) -> list[Path]:
    """Move staged files into `destination_dir` (atomic per file on one file system); returns their new paths."""
    placed = []
    for file in files:
        target = destination_dir / file.name
        os.replace(file, target)
        placed.append(target)
    return placed
