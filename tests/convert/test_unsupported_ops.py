"""Acceptance: a model with an op the converter cannot handle fails with ConversionError naming the op, and
nothing is written."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest

from mlpk.packager.card import TensorSpec
from mlpk.packager.convert import ConvertOptions, convert
from mlpk.packager.errors import ConversionError

@pytest.mark.keras
def test_unconvertible_tf_op_names_the_op(tmp_path: Path) -> None:
    import tensorflow as tf

    class Model(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def __call__(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": tf.math.lgamma(x) + 1.0}  # tf2onnx 1.17 has no mapping for Lgamma

    saved = tmp_path / "lgamma_model"
    model = Model()
    tf.saved_model.save(model, str(saved), signatures={"serving_default": model.__call__})
    with pytest.raises(ConversionError, match=r"cannot convert the op\(s\) Lgamma to ONNX") as info:
        convert(saved, tmp_path / "out" / "m.onnx")
    assert "lgamma_model" in str(info.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


class Doubler:
    """A transformer skl2onnx has no converter for (stands for any custom pipeline step)."""

    def fit(self, x, y=None):  # noqa: ANN001, ANN201 - scikit-learn's duck-typed protocol
        return self

    def transform(self, x):  # noqa: ANN001, ANN201
        return np.asarray(x) * 2

    def get_params(self, deep: bool = True) -> dict[str, object]:
        return {}

    def set_params(self, **params: object) -> Doubler:
        return self


@pytest.mark.sklearn
def test_unconvertible_sklearn_step_names_it(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3)).astype(np.float32)
    model = make_pipeline(Doubler(), LogisticRegression()).fit(x, (x[:, 0] > 0).astype(int))
    joblib.dump(model, tmp_path / "custom.joblib")
    with pytest.raises(ConversionError, match="Doubler") as info:
        convert(tmp_path / "custom.joblib", tmp_path / "out" / "m.onnx",
                options=ConvertOptions(trust_pickle=True, inputs=(TensorSpec("input", "float32", (None, 3)),)))
    assert "custom.joblib" in str(info.value) and "nothing written" in str(info.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


_ZETA_MODULE = '''
import torch


class Zeta(torch.nn.Module):
    """Hurwitz zeta: no ONNX lowering in either torch exporter."""

    def forward(self, x):
        return torch.special.zeta(x, torch.full_like(x, 2.0))
'''


@pytest.mark.torch
def test_unconvertible_torch_op_names_the_op(tmp_path: Path) -> None:
    import torch

    (tmp_path / "zeta_model.py").write_text(_ZETA_MODULE)
    torch.save({}, tmp_path / "zeta.pt")  # a module without parameters: an empty state dict
    with pytest.raises(ConversionError, match="aten::special_zeta") as info:
        convert(tmp_path / "zeta.pt", tmp_path / "out" / "m.onnx",
                options=ConvertOptions(model_class=f"{tmp_path / 'zeta_model.py'}:Zeta",
                                       inputs=(TensorSpec("x", "float32", ("batch", 4)),)))
    assert "dynamo exporter failed first" in str(info.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
