"""Parity inputs: .npz binding to model inputs, and deterministic generated inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlpk.packager.card import TensorSpec
from mlpk.packager.errors import InputError
from mlpk.packager.sample_data import bind, generate, load_npz


def test_load_and_bind(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", anything=np.ones((5, 3), np.float64), labels=np.arange(5))
    data = load_npz(tmp_path / "d.npz")
    assert data.count == 5 and list(data.labels) == [0, 1, 2, 3, 4]
    bound = bind(data, [TensorSpec("x", "float32", ("batch", 3))])  # one array feeds a one-input model
    assert bound.inputs["x"].dtype == np.float32
    texts = load_npz(_save(tmp_path / "t.npz", input=np.array(["a b", "c"])))
    text = bind(texts, [TensorSpec("input", "str", (None, 1))])
    assert text.inputs["input"].shape == (2, 1)


def _save(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_bad_sample_data(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_npz(tmp_path / "none.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="bad.npz is not a readable .npz"):
        load_npz(tmp_path / "bad.npz")
    with pytest.raises(InputError, match="different sample counts"):
        load_npz(_save(tmp_path / "c.npz", a=np.ones(2), b=np.ones(3)))
    data = load_npz(_save(tmp_path / "two.npz", a=np.ones((2, 3)), b=np.ones((2, 3))))
    with pytest.raises(InputError, match=r"lacks arrays for the model inputs \['x'\]"):
        bind(data, [TensorSpec("x", "float32", (None, 3)), TensorSpec("a", "float32", (None, 3))])
    with pytest.raises(InputError, match="expects rank 4"):
        bind(load_npz(_save(tmp_path / "r.npz", x=np.ones((2, 3)))), [TensorSpec("x", "float32", (None, 3, 3, 1))])


def test_generated_inputs_are_deterministic_and_typed() -> None:
    specs = [TensorSpec("f", "float32", ("batch", 3)), TensorSpec("i", "int64", ("batch", "seq")),
             TensorSpec("b", "bool", (2,)), TensorSpec("s", "str", (None, 1))]
    first, second = generate(specs), generate(specs)
    for name in ("f", "i", "b", "s"):
        np.testing.assert_array_equal(first.inputs[name], second.inputs[name])
    assert first.inputs["f"].shape == (8, 3) and first.inputs["i"].shape == (8, 4)
    assert first.inputs["i"].min() >= 0 and first.inputs["i"].max() < 10
    assert first.inputs["b"].dtype == bool and first.inputs["s"].dtype.kind == "U"
    with pytest.raises(InputError, match="unknown rank"):
        generate([TensorSpec("x", "float32", None)])
