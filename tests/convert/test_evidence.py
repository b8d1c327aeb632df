"""The evidence layer on models shaped like third-party ones (issue 13): scalar and state inputs, graph-imposed
size constraints, feeds without a shared sample axis, ZipMap outputs, and a tolerance that travels with the card."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from mlpk.packager import card as cards
from mlpk.packager import feeds, signature
from mlpk.packager.convert import convert
from mlpk.packager.errors import InputError
from tests.convert.onnx_models import linear, strided, voice


def test_a_scalar_and_a_state_input_convert_without_data(tmp_path: Path) -> None:
    """The voice model runs only with sr 16000 or 8000: the signature finds both values in the graph, marks the
    state, and parity runs on feeds made from it (no shared sample axis: one feed each)."""
    result = convert(voice(tmp_path / "vad.onnx"), tmp_path / "out" / "vad.onnx")
    sig = signature.Signature.from_dict(result.card.signature or {})
    sr, state = sig.input("sr"), sig.input("state")
    assert sr is not None and sr.scalar and sr.values[:2] == (16000.0, 8000.0) and sr.example_shape == ()
    assert state is not None and state.state and state.example_shape == (2, 1, 128)
    assert result.parity is not None and result.parity.passed and "synthetic" in result.parity.inputs_from
    assert result.evidence is not None and not result.evidence.stacked and len(result.evidence) == 8


def test_one_feed_per_file_and_feeds_stacked_on_a_new_axis(tmp_path: Path) -> None:
    """Sample data that today's .npz convention could not express: one whole feed (sr a 0-d array), a directory
    of such files, and n feeds stacked on a new leading axis."""
    model = voice(tmp_path / "vad.onnx")
    rng = np.random.default_rng(1)
    one = {"input": rng.standard_normal((1, 512)).astype(np.float32), "state": np.zeros((2, 1, 128), np.float32),
           "sr": np.array(16000)}
    np.savez(tmp_path / "one.npz", **one)
    result = convert(model, tmp_path / "a" / "vad.onnx", sample_data=tmp_path / "one.npz")
    assert result.parity is not None and result.parity.samples == 1 and result.parity.inputs_from == "sample data one.npz"
    (tmp_path / "feeds").mkdir()
    for i, sr in enumerate((16000, 8000, 16000)):
        np.savez(tmp_path / "feeds" / f"{i}.npz", **{**one, "sr": np.array(sr)})
    result = convert(model, tmp_path / "b" / "vad.onnx", sample_data=tmp_path / "feeds")
    assert result.parity is not None and result.parity.samples == 3
    np.savez(tmp_path / "many.npz", input=rng.standard_normal((5, 1, 512)).astype(np.float32),
             state=np.zeros((5, 2, 1, 128), np.float32), sr=np.full(5, 8000))
    result = convert(model, tmp_path / "c" / "vad.onnx", sample_data=tmp_path / "many.npz")
    assert result.parity is not None and result.parity.samples == 5


def test_a_wrong_shape_names_the_input_and_both_shapes(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", input=np.ones((1, 512), np.float32), state=np.zeros((3, 1, 64), np.float32),
             sr=np.array(16000))
    with pytest.raises(InputError, match=r"array 'state' has shape \[3, 1, 64\], the model expects "
                                         r"state: float32\[2, \?, 128\]"):
        convert(voice(tmp_path / "vad.onnx"), tmp_path / "out" / "vad.onnx", sample_data=tmp_path / "bad.npz")
    assert not (tmp_path / "out").exists()


def test_a_size_constraint_of_the_graph_is_probed(tmp_path: Path) -> None:
    """H and W must be multiples of 32 (a detector's grid): probing finds a size that runs; the card keeps it for
    the server's warm-up."""
    result = convert(strided(tmp_path / "det.onnx"), tmp_path / "out" / "det.onnx")
    image = signature.Signature.from_dict(result.card.signature or {}).input("image")
    assert image is not None and image.example_shape is not None
    assert image.example_shape[2] % 32 == 0 and image.example_shape[3] % 32 == 0
    assert result.parity is not None and result.parity.passed
    odd = convert(strided(tmp_path / "odd.onnx", stride=96), tmp_path / "out" / "odd.onnx")  # 96: from the graph
    shape = signature.Signature.from_dict(odd.card.signature or {}).inputs[0].example_shape
    assert shape is not None and shape[2] % 96 == 0


def test_no_shape_that_runs_is_one_clear_error(tmp_path: Path) -> None:
    """A model no probed size satisfies (multiples of 5000, beyond the sizes taken from the graph's constants)
    asks for real data, naming the flag."""
    with pytest.raises(InputError, match="found no input shapes the model runs with") as err:
        convert(strided(tmp_path / "big.onnx", stride=5000), tmp_path / "out" / "big.onnx")
    assert err.value.hint is not None and "--sample-data" in err.value.hint


def test_zipmap_outputs_become_tensors_in_class_order(tmp_path: Path) -> None:
    """A ZipMap classifier (a sequence of maps, which no v2 client can read) is served as a (rows, classes)
    tensor under the same output name; parity compares it with the maps of the user's file."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["probs"], axis=1),
         helper.make_node("ZipMap", ["probs"], ["output_probability"], domain="ai.onnx.ml",
                          classlabels_strings=["zebra", "apple", "mango"])],
        "zip", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_value_info("output_probability", helper.make_sequence_type_proto(helper.make_map_type_proto(
            TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, []))))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml",
                                                                                                      3)],
                              ir_version=8)
    onnx.save(model, str(tmp_path / "zip.onnx"))
    result = convert(tmp_path / "zip.onnx", tmp_path / "out" / "zip.onnx")
    assert [o.to_dict() for o in result.card.outputs] == [{"name": "output_probability", "dtype": "float32",
                                                           "shape": ["batch", 3]}]
    assert result.card.extra["class_labels"] == {"output_probability": ["zebra", "apple", "mango"]}
    assert result.parity is not None and result.parity.passed and result.parity.outputs[0].max_abs < 1e-6


def test_a_tolerance_chosen_at_convert_travels_with_the_card(tmp_path: Path) -> None:
    first = convert(linear(tmp_path / "lin.onnx"), tmp_path / "a" / "lin.onnx", tolerance="atol=0.5")
    assert first.card.parity is not None and first.card.parity["tolerance"]["atol"] == 0.5
    again = convert(first.output, tmp_path / "b" / "lin.onnx")
    assert again.parity is not None and again.parity.tolerance.atol == 0.5
    assert again.card.extra["upstream"]["source"]["file"] == "lin.onnx"
    assert cards.read(again.output) == again.card


def test_feeds_select_split_and_batches_across_parts(tmp_path: Path) -> None:
    sig = signature.from_model(onnx.load(str(linear(tmp_path / "feeds-lin.onnx"))))
    data = feeds.interpret({"x": np.arange(40, dtype=np.float32).reshape(10, 4), "labels": np.arange(10)}, sig, "t")
    calibration, held = data.split(0.3)
    assert len(calibration) == 7 and len(held) == 3 and list(held.labels) == [7, 8, 9]
    assert [len(b["x"]) for b in data.batches(4)] == [4, 4, 2]
    joined = feeds.combine([data, data.head(2)], "both")
    assert len(joined) == 12 and len(joined.parts) == 1
