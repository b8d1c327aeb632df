"""Keras 3 functional models in the shapes users build them: several inputs (a list, or a dict of named inputs),
outputs as a dict, and a model Keras 3 saved as HDF5. Each converts and answers as Keras does on inputs parity did
not use; a file neither Keras reads back is refused with the way out. Real Keras 3 and TensorFlow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlpk.packager.convert import convert
from mlpk.packager.errors import InputError

pytestmark = pytest.mark.keras


def _two_inputs(as_dict: bool, dict_outputs: bool):  # noqa: ANN202 - a Keras 3 model
    import keras

    keras.utils.set_random_seed(0)
    numbers, codes = keras.Input((16,), name="num"), keras.Input((8,), name="cat", dtype="int32")
    embedded = keras.layers.Flatten()(keras.layers.Embedding(50, 4)(codes))
    hidden = keras.layers.Dense(12, activation="relu")(keras.layers.Concatenate()([numbers, embedded]))
    price, classes = keras.layers.Dense(1, name="zprice")(hidden), keras.layers.Dense(5, activation="softmax",
                                                                                      name="acat")(hidden)
    inputs = {"num": numbers, "cat": codes} if as_dict else [numbers, codes]
    return keras.Model(inputs, {"zprice": price, "acat": classes} if dict_outputs else [price, classes])


@pytest.mark.parametrize(("as_dict", "dict_outputs"), [(False, False), (True, False), (False, True)])
def test_several_inputs_and_named_outputs_convert(tmp_path: Path, as_dict: bool, dict_outputs: bool) -> None:
    """Before: two inputs failed in tf2onnx ("too many positional arguments", the message naming mlpack's temporary
    directory), and dict outputs failed parity as a shape mismatch."""
    import onnxruntime as ort

    model = _two_inputs(as_dict, dict_outputs)
    model.save(tmp_path / "m.keras")
    result = convert(tmp_path / "m.keras", tmp_path / "out" / "m.onnx")
    assert result.parity is not None and result.parity.passed
    session = ort.InferenceSession(str(result.output), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    feed = {"num": rng.normal(0, 3, (5, 16)).astype(np.float32), "cat": rng.integers(0, 50, (5, 8)).astype(np.int32)}
    want = model(feed if as_dict else [feed["num"], feed["cat"]], training=False)
    want = dict(want) if dict_outputs else dict(zip(["price", "classes"], want, strict=True))
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))
    for name, value in got.items():  # the price is the one output with one column
        expected = (want["zprice"] if dict_outputs else want["price"]) if value.shape[1] == 1 else \
            (want["acat"] if dict_outputs else want["classes"])
        np.testing.assert_allclose(value, np.asarray(expected), atol=1e-5, err_msg=name)
    if dict_outputs:
        assert sorted(got) == ["acat", "zprice"]


def test_hdf5_written_by_keras3(tmp_path: Path) -> None:
    """tf-keras cannot read the layer configs Keras 3 writes into HDF5: Keras 3 loads it and converts it; a file
    neither reads back names Keras 3's own format."""
    import keras

    keras.utils.set_random_seed(0)
    keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2)]) \
        .save(tmp_path / "dense.h5")
    result = convert(tmp_path / "dense.h5", tmp_path / "out" / "dense.onnx")
    assert result.parity is not None and result.parity.passed and "exported by Keras 3" in result.exporter

    tokens = keras.Input((None,), dtype="int32", name="tokens")
    masked = keras.layers.Embedding(100, 8, mask_zero=True)(tokens)  # Keras 3 writes the mask as a NotEqual layer
    keras.Model(tokens, keras.layers.Dense(2)(keras.layers.GRU(4)(masked))).save(tmp_path / "gru.h5")
    with pytest.raises(InputError, match=r"written by Keras 3\.\S+ in the legacy HDF5 format") as refused:
        convert(tmp_path / "gru.h5", tmp_path / "out" / "gru.onnx")
    assert "model.save('model.keras')" in refused.value.hint


def test_stateful_layers_lambda_layers_and_unknown_classes(tmp_path: Path) -> None:
    """A stateful LSTM converted with samples passed parity on a first call and shipped as a model that starts from
    zeros every call: refused. A Lambda layer (bytecode in the file) loads with --trust-pickle; without it, and for a
    layer class Keras cannot find, the refusal names the way out, not "the file may be truncated"."""
    import keras

    from mlpk.packager.convert import ConvertOptions
    from mlpk.packager.errors import ConversionError

    keras.utils.set_random_seed(0)
    keras.Sequential([keras.Input((5, 3), batch_size=2), keras.layers.LSTM(4, stateful=True),
                      keras.layers.Dense(2)]).save(tmp_path / "stateful.keras")
    with pytest.raises(ConversionError, match="are stateful") as stateful:
        convert(tmp_path / "stateful.keras", tmp_path / "out" / "stateful.onnx")
    assert "stateful=False" in stateful.value.hint

    keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2.0), keras.layers.Dense(2)]) \
        .save(tmp_path / "lambda.keras")
    with pytest.raises(InputError, match="holds a Lambda layer") as unsafe:
        convert(tmp_path / "lambda.keras", tmp_path / "out" / "lambda.onnx")
    assert "--trust-pickle" in unsafe.value.hint and "mlpack convert DIR" in unsafe.value.hint
    result = convert(tmp_path / "lambda.keras", tmp_path / "out" / "lambda.onnx",
                     options=ConvertOptions(trust_pickle=True))
    assert result.parity is not None and result.parity.passed

    @keras.saving.register_keras_serializable(package="user")
    class Doubling(keras.layers.Layer):
        def call(self, x):  # noqa: ANN001, ANN202 - a Keras layer
            return x * 2.0

    keras.Sequential([keras.Input((4,)), Doubling(), keras.layers.Dense(2)]).save(tmp_path / "custom.keras")
    keras.saving.get_custom_objects().pop("user>Doubling")
    with pytest.raises(InputError, match="layer class Keras cannot find") as unknown:
        convert(tmp_path / "custom.keras", tmp_path / "out" / "custom.onnx")
    assert "model.export('DIR')" in unknown.value.hint


def test_a_conversion_leaves_nothing_in_the_temporary_directory(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorFlow's autograph writes every function it converts to __autograph_generated_file*.py in the temporary
    directory and keeps them: a Keras conversion left 4 to 27 such files in /tmp."""
    import tempfile

    import keras

    own = tmp_path / "tmp"
    own.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(own))
    model = _two_inputs(as_dict=False, dict_outputs=False)
    model.save(tmp_path / "m.keras")
    result = convert(tmp_path / "m.keras", tmp_path / "out" / "m.onnx")
    assert result.parity is not None and result.parity.passed
    assert sorted(p.name for p in own.iterdir()) == [], "the conversion left files in the temporary directory"
    assert keras.__version__.startswith("3")


def test_a_resize_that_differs_when_it_scales_down_is_refused(tmp_path: Path) -> None:
    """Resizing(32, 32, "area") on images of any size: made inputs are as small as the model takes (2x2), where the
    converted resize scales up and agrees with Keras; on real images it scales down and does not (0.12 apart on
    224x224, a third of the output's scale). Parity also runs with the free axes at about 75, and refuses it."""
    import keras

    from mlpk.packager.errors import ConversionError

    keras.utils.set_random_seed(0)
    images = keras.Input((None, None, 3), name="image")
    hidden = keras.layers.Rescaling(1 / 255)(keras.layers.Resizing(32, 32, interpolation="area")(images))
    features = keras.layers.Conv2D(8, 3, activation="relu")(hidden)
    scores = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(features))
    keras.Model(images, scores).save(tmp_path / "m.keras")
    with pytest.raises(ConversionError, match=r"at image\[1, \d+, \d+, 3\] \(about 75 on each\) it answers otherwise"):
        convert(tmp_path / "m.keras", tmp_path / "out" / "m.onnx")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_integers_below_zero_refuse_a_truncating_division(tmp_path: Path) -> None:
    """Day offsets to week and weekday (floor_divide and mod by 7): tf2onnx writes the integer floor division as a
    Div, which truncates, so -8 becomes week -1 instead of -2. Parity's made integers (0-9) never showed it; it now
    also runs them negated, and refuses the model."""
    import keras

    @keras.saving.register_keras_serializable("mlpack_tests")
    class WeekSplit(keras.layers.Layer):
        def call(self, days):  # noqa: ANN001, ANN202 - Keras's signature
            return [keras.ops.cast(keras.ops.floor_divide(days, 7), "float32"),
                    keras.ops.cast(keras.ops.mod(days, 7), "float32")]

    days = keras.Input((1,), dtype="int32", name="day")
    keras.Model(days, WeekSplit()(days)).save(tmp_path / "m.keras")
    from mlpk.packager.errors import ValidationError

    with pytest.raises(ValidationError, match=r"with integers negated \(as real inputs may be\), the ONNX model "
                                              r"answers otherwise"):
        convert(tmp_path / "m.keras", tmp_path / "out" / "m.onnx")
