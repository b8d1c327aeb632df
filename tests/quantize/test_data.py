"""Calibration / evaluation data: the accepted layouts, and one-line errors for the rest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlpk.packager.errors import InputError
from mlpk.packager.quantize import data
from mlpk.packager.signature import InputSignature, Signature


def _sig(*items: InputSignature) -> Signature:
    return Signature(items, ())


IMAGE = _sig(InputSignature("image", "float32", ("batch", 1, 8, 8)))
TWO = _sig(InputSignature("a", "float32", (None, 3)), InputSignature("b", "int64", (None,)))


def test_npz_keyed_by_input_name_with_labels(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", image=np.ones((5, 1, 8, 8), np.float64), labels=np.arange(5))
    got = data.load(tmp_path / "d.npz", IMAGE)
    assert len(got) == 5 and got.inputs["image"].dtype == np.float32
    assert got.labels is not None and list(got.labels) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("key", ["x", "inputs", "whatever"])
def test_single_input_model_accepts_an_alias_or_its_only_array(tmp_path: Path, key: str) -> None:
    np.savez(tmp_path / "d.npz", **{key: np.zeros((3, 1, 8, 8), np.float32)}, y=np.zeros(3, np.int64))
    got = data.load(tmp_path / "d.npz", IMAGE)
    assert set(got.inputs) == {"image"} and got.labels is not None


def test_string_arrays_feed_a_string_input_as_objects(tmp_path: Path) -> None:
    """numpy saves text as fixed-width unicode (<U..); onnxruntime's string tensors take str objects."""
    np.savez(tmp_path / "d.npz", input=np.array([["rain today"], ["goal!"]]), labels=np.array([0, 1]))
    got = data.load(tmp_path / "d.npz", _sig(InputSignature("input", "str", (None, 1))))
    assert got.inputs["input"].dtype == object and got.inputs["input"][1, 0] == "goal!"


def test_directory_of_npy_files_one_per_input(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.ones((4, 3), np.float32))
    np.save(tmp_path / "b.npy", np.arange(4))
    got = data.load(tmp_path, TWO)
    assert len(got) == 4 and got.labels is None


def test_directory_of_npz_files_is_concatenated(tmp_path: Path) -> None:
    for index in range(3):
        np.savez(tmp_path / f"part{index}.npz", a=np.full((2, 3), index, np.float32), b=np.arange(2))
    got = data.load(tmp_path, TWO)
    assert len(got) == 6 and got.inputs["a"][-1, 0] == 2


def test_directory_of_npz_files_with_different_keys_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "p0.npz", a=np.zeros((2, 3)), b=np.zeros(2))
    np.savez(tmp_path / "p1.npz", a=np.zeros((2, 3)))
    with pytest.raises(InputError, match=r"p1.npz has no array for the model input\(s\) \['b'\]"):
        data.load(tmp_path, TWO)


def test_missing_input_names_the_inputs(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", a=np.zeros((2, 3)))
    with pytest.raises(InputError, match=r"no array for the model input\(s\) \[.b.\]"):
        data.load(tmp_path / "d.npz", TWO)


def test_wrong_fixed_dimension_names_axis_and_shapes(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", image=np.zeros((2, 1, 8, 9), np.float32))
    with pytest.raises(InputError, match=r"'image' has shape \[2, 1, 8, 9\], the model expects "
                                         r"image: float32\[batch, 1, 8, 8\]"):
        data.load(tmp_path / "d.npz", IMAGE)


def test_sample_counts_must_agree(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", image=np.zeros((2, 1, 8, 8), np.float32), labels=np.zeros(3))
    with pytest.raises(InputError, match="disagree on the number of samples"):
        data.load(tmp_path / "d.npz", IMAGE)


def test_not_an_npz_and_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(InputError, match="bad.npz is not a readable .npz archive"):
        data.load(tmp_path / "bad.npz", IMAGE)
    with pytest.raises(InputError, match="does not exist"):
        data.load(tmp_path / "nope.npz", IMAGE)


def test_split_holds_out_the_tail() -> None:
    full = data.Dataset(({"a": np.arange(10, dtype=np.float32)[:, None]},), np.arange(10), "d")
    calibration, evaluation = full.split(0.3)
    assert len(calibration) == 7 and len(evaluation) == 3
    assert evaluation.labels is not None and list(evaluation.labels) == [7, 8, 9]
    with pytest.raises(InputError, match="at least 2") as err:
        full.select(slice(0, 1)).split(0.5)
    assert "(mlpack quantize --eval)" in (err.value.hint or "")  # export reaches this too, and has no --eval


def test_sample_data_beside_the_model(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    assert data.sample_data(model) is None
    (tmp_path / "held_out.npz").write_bytes(b"")
    assert data.sample_data(model) == tmp_path / "held_out.npz"  # the only .npz beside the model
    (tmp_path / "other.npz").write_bytes(b"")
    assert data.sample_data(model) is None  # two candidates: ambiguous, so none
    (tmp_path / "m-data.npz").write_bytes(b"")
    assert data.sample_data(model) == tmp_path / "m-data.npz"


def test_synthetic_data_follows_the_signature() -> None:
    """Free batch axes stack the samples; fixed dims are kept (a [3, 2] input never becomes a batch of 64)."""
    got = data.synthetic(_sig(*IMAGE.inputs, TWO.inputs[1]), 7)
    assert got.inputs["image"].shape == (7, 1, 8, 8) and got.inputs["b"].dtype == np.int64 and got.synthetic
    fixed = data.synthetic(_sig(InputSignature("m", "float32", (3, 2), example_shape=(3, 2))), 5)
    assert len(fixed.parts) == 5 and all(part["m"].shape == (3, 2) for part in fixed.parts)


def test_a_scalar_input_is_one_feed_or_stacked_on_a_new_axis(tmp_path: Path) -> None:
    sig = _sig(InputSignature("input", "float32", (None, None)), InputSignature("sr", "int64", ()))
    np.savez(tmp_path / "one.npz", input=np.zeros((1, 512), np.float32), sr=np.array(16000))
    one = data.load(tmp_path / "one.npz", sig)
    assert len(one) == 1 and one.parts[0]["sr"].shape == () and not one.stacked
    np.savez(tmp_path / "many.npz", input=np.zeros((4, 1, 512), np.float32), sr=np.full(4, 8000))
    many = data.load(tmp_path / "many.npz", sig)
    assert len(many) == 4 and [p["input"].shape for p in many.batches(64)] == [(1, 512)] * 4
