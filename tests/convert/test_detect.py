"""Format detection from content (no framework needed): magic bytes and archive members decide, the suffix only
explains what was expected."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import pytest

from mlpk.packager.convert.detect import detect
from mlpk.packager.errors import InputError
from tests.convert.onnx_models import linear


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize(("members", "expected"), [
    ({"m/constants.pkl": b"", "m/code/__torch__/m.py": b"", "m/data.pkl": b""}, "torchscript"),
    ({"m/archive_format": b"pt2", "m/models/model.json": b"{}"}, "torch-export"),
    ({"m/data.pkl": b"", "m/byteorder": b"little"}, "torch-save"),
    ({"config.json": b"{}", "metadata.json": json.dumps({"keras_version": "2.21.0"}).encode()}, "keras-zip"),
    ({"config.json": b"{}", "metadata.json": json.dumps({"keras_version": "3.15.1"}).encode()}, "keras3-zip"),
])
def test_zip_members_decide(tmp_path: Path, members: dict[str, bytes], expected: str) -> None:
    assert detect(_zip(tmp_path / "model.bin", members)) == expected


def test_other_magic(tmp_path: Path) -> None:
    (tmp_path / "a.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 8)
    assert detect(tmp_path / "a.h5") == "keras-h5"
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    (tmp_path / "w.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    assert detect(tmp_path / "w.safetensors") == "safetensors"
    (tmp_path / "m.joblib").write_bytes(b"\x80\x04\x95" + b"\0" * 8)
    assert detect(tmp_path / "m.joblib") == "pickle"
    (tmp_path / "m.pth").write_bytes(b"\x80\x02\x8a" + b"\0" * 8)
    assert detect(tmp_path / "m.pth") == "torch-save"
    assert detect(linear(tmp_path / "x.model")) == "onnx"
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"")
    assert detect(tmp_path / "sm") == "tf-savedmodel"


def test_unknown_zip_and_truncated_zip(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="a zip archive but not a Keras"):
        detect(_zip(tmp_path / "docs.pt", {"readme.txt": b"hi"}))
    data = _zip(tmp_path / "full.pt", {"m/data.pkl": b"x" * 1000}).read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:-30])
    with pytest.raises(InputError, match=r"cut.pt is a truncated or damaged zip archive .*expected a PyTorch file"):
        detect(tmp_path / "cut.pt")
