"""Which format a model file is, from its content (magic bytes, archive members), with the suffix as a cross-check.

Content wins: a valid ONNX model named `model.bin` converts. A file whose content matches no known format is an
InputError naming the file, what its suffix promised, and what was expected — before any framework is imported.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import Literal

from mlpk.packager.errors import InputError

Format = Literal["onnx", "keras-h5", "keras-zip", "keras3-zip", "tf-savedmodel", "torchscript", "torch-export",
                 "torch-save", "safetensors", "pickle"]

# What each suffix promises, for messages (and to break ties when content alone is ambiguous).
SUFFIXES: dict[str, str] = {
    ".onnx": "an ONNX model (protobuf)",
    ".h5": "a Keras HDF5 model", ".hdf5": "a Keras HDF5 model",
    ".keras": "a Keras .keras archive (zip with config.json)",
    ".pt": "a PyTorch file (TorchScript or torch.save zip)", ".pth": "a PyTorch file (torch.save zip)",
    ".pt2": "a torch.export program (zip)",
    ".safetensors": "a safetensors state dict",
    ".joblib": "a joblib/pickle scikit-learn model", ".pkl": "a pickle file", ".pickle": "a pickle file",
}
EXPECTED = (".onnx, .h5, .keras, a TF SavedModel directory, .pt / .pth (TorchScript or state dict), .pt2, "
            ".safetensors, .joblib / .pkl")
_HDF5 = b"\x89HDF\r\n\x1a\n"
_ZIP = b"PK\x03\x04"


def _expected(path: Path) -> str:
    promise = SUFFIXES.get(path.suffix.lower())
    if promise:
        return f"expected {promise}"
    return f"suffix {path.suffix or '(none)'!r} is not a model format; expected one of {EXPECTED}"


def _zip_format(path: Path) -> Format:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "config.json" in names and "metadata.json" in names:
                try:
                    meta = json.loads(archive.read("metadata.json"))
                except (ValueError, KeyError):
                    meta = {}
                version = str(meta.get("keras_version", "3"))
                return "keras-zip" if version.startswith("2.") else "keras3-zip"
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise InputError(f"{path.name} is a truncated or damaged zip archive ({err}); {_expected(path)}",
                         hint="save or download the model again") from err
    stems = {name.split("/", 1)[1] for name in names if "/" in name}
    if "constants.pkl" in stems or any(s.startswith("code/") for s in stems):
        return "torchscript"
    if "archive_format" in stems or "models/model.json" in stems or \
            any(n.endswith("serialized_exported_program.json") for n in names):
        return "torch-export"
    if "data.pkl" in stems:
        return "torch-save"
    raise InputError(f"{path.name} is a zip archive but not a Keras, TorchScript, torch.export or torch.save "
                     f"file; {_expected(path)}")


def _is_safetensors(head: bytes, size: int) -> bool:
    # safetensors: 8-byte little-endian header length, then a JSON object (spec: github.com/huggingface/safetensors).
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 0 < length <= size - 8 and head[8:9] == b"{"


def _looks_like_onnx(head: bytes) -> bool:
    # ModelProto serializes ir_version (field 1, varint: tag 0x08) first in every writer we know of (onnx, ORT,
    # torch, tf2onnx); the full parse happens in the ONNX converter.
    return head[:1] == b"\x08" and len(head) > 1 and 1 <= head[1] <= 15


def detect(path: Path) -> Format:
    """The format of the model at `path`; InputError when it is missing, empty or of no known format."""
    if not path.exists():
        raise InputError(f"model {path} does not exist", hint="check the path")
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return "tf-savedmodel"
        raise InputError(f"{path.name}/ is a directory but not a TF SavedModel (no saved_model.pb in it); "
                         f"expected a SavedModel directory or a model file",
                         hint="pass the directory written by model.save(DIR) or tf.saved_model.save")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path.name} is empty (0 bytes); {_expected(path)}", hint="save or download the model again")
    with path.open("rb") as stream:
        head = stream.read(64)
    if head.startswith(_HDF5):
        return "keras-h5"
    if head.startswith(_ZIP):
        return _zip_format(path)
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:  # pickle protocol 2..5 (joblib, torch legacy)
        return "torch-save" if path.suffix.lower() in (".pt", ".pth") else "pickle"
    if head[:2] in (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda", b"\x1f\x8b", b"BZ", b"\xfd7") and \
            path.suffix.lower() in (".joblib", ".pkl", ".pickle"):
        return "pickle"  # joblib's compressed pickles (zlib, gzip, bz2, xz)
    if _is_safetensors(head, size):
        return "safetensors"
    if _looks_like_onnx(head):
        return "onnx"
    raise InputError(f"{path.name}: content is not a model format mlpack knows ({size} bytes, starts "
                     f"{head[:8]!r}); {_expected(path)}", hint="pass a model file in one of the supported formats")
