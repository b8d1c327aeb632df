"""ONNX sources: checker, shape inference, symbolic dims kept, old-style initializer inputs, external data, and
the IR/opset check against the onnxruntime a target carries (ort_compat.json)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mlpk.packager import card as cards
from mlpk.packager.convert import ConvertOptions, compat, convert, output
from mlpk.packager.errors import ConfigError, ConversionError
from tests.convert.onnx_models import linear


def test_symbolic_dims_are_kept_and_parity_compares_with_the_users_file(tmp_path: Path) -> None:
    """Without sample data, parity runs on synthetic rows shaped by the signature, and says so."""
    result = convert(linear(tmp_path / "lin.onnx", batch="N"), tmp_path / "out" / "lin.onnx")
    assert [s.to_dict() for s in result.card.inputs] == [{"name": "x", "dtype": "float32", "shape": ["N", 4]}]
    assert result.card.outputs[0].shape == ("N", 3)
    assert result.parity is not None and result.parity.passed
    assert result.parity.inputs_from.startswith("8 synthetic samples")
    assert result.parity.outputs[0].max_abs <= 1e-5  # optimized vs unoptimized onnxruntime on the user's file
    assert result.card.signature is not None and result.card.signature["inputs"][0]["example_shape"] == [1, 4]


def test_initializers_listed_as_inputs_are_not_inputs(tmp_path: Path) -> None:
    """Exporters before IR 4 listed every weight as a graph input too; those must not become model inputs."""
    source = linear(tmp_path / "old.onnx", opset=9, ir=3, initializers_as_inputs=True)
    result = convert(source, tmp_path / "out" / "old.onnx")
    assert [s.name for s in result.card.inputs] == ["x"]
    assert result.parity is not None and result.parity.passed
    shipped = onnx.load(str(result.output))
    assert [i.name for i in shipped.graph.input] == ["x"] and shipped.ir_version >= 4, "weights are not inputs"
    assert any("initializers were also listed as graph inputs" in n for n in result.notes)


def test_external_data_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model whose tensors live in an external file (the > 2 GB layout) loads, converts, and is written in the
    same layout when above the size limit (lowered here so the test stays small)."""
    (tmp_path / "src").mkdir()
    source = linear(tmp_path / "src" / "big.onnx", external=True)
    assert (tmp_path / "src" / "big.onnx.weights").is_file()
    monkeypatch.setattr(output, "EXTERNAL_DATA_ABOVE", 16)
    monkeypatch.setattr(output, "EXTERNAL_TENSOR_MIN", 0)
    result = convert(source, tmp_path / "out" / "big.onnx")
    assert sorted(p.name for p in result.files) == ["big.card.json", "big.onnx", "big.onnx.data"]
    session = ort.InferenceSession(str(result.output), providers=["CPUExecutionProvider"])
    x = np.ones((2, 4), np.float32)
    reference = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], reference.run(None, {"x": x})[0])
    assert cards.read(result.output) == result.card


def test_card_is_embedded_and_beside(tmp_path: Path) -> None:
    result = convert(linear(tmp_path / "lin.onnx"), tmp_path / "out" / "lin.onnx")
    model = onnx.load(str(result.output))
    assert cards.from_model(model) == result.card
    assert result.card.source.sha256 == cards.sha256_of(tmp_path / "lin.onnx")
    assert result.card.to_dict()["schema"] == "mlpack.model-card/v1"


def test_opset_too_new_for_target_runtime_names_both_versions(tmp_path: Path) -> None:
    source = linear(tmp_path / "new.onnx", opset=19, ir=9)
    with pytest.raises(ConversionError) as info:
        convert(source, tmp_path / "out" / "m.onnx", ort_version="1.14")
    message = info.value.one_line()
    assert "opset 19" in message and "onnxruntime 1.14" in message and "IR version 9" in message
    assert "mlpack convert MODEL --opset 18" in message  # export reaches this too, and has no --opset
    assert not (tmp_path / "out").exists()
    # The hint works: converting the opset down makes it loadable there.
    result = convert(source, tmp_path / "out" / "m.onnx", options=ConvertOptions(opset=18), ort_version="1.14")
    assert result.card.extra["conversion"]["opset"] == 18


def test_compat_table_rows_and_unknown_versions() -> None:
    assert compat.limits("1.18.1") == compat.OrtLimits("1.18", 10, 21, "table")
    installed = compat.limits()
    assert installed is not None and installed.opset >= 21 and installed.ir >= 10
    assert compat.limits("9.99") is None
    model = onnx.load_from_string(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])).SerializeToString())
    assert "not checked" in compat.check(model, "m", "9.99")


def test_ort_version_must_look_like_a_version() -> None:
    with pytest.raises(ConfigError, match="'latest' is not X.Y"):
        compat.limits("latest")


@pytest.mark.parametrize(("declared", "now"), [([1, 5], ["N", 3]), ([1], ["N", 3])])
def test_output_shapes_a_file_declares_wrongly_are_made_true(tmp_path: Path, declared: list, now: list) -> None:
    """A third-party file may declare an output's shape wrongly (ddddocr's [1, seqlen] for [seq, 1, 8210]):
    onnxruntime warns on every run and the card, and so the server's metadata, would repeat it. After parity the
    declaration is what a run returns (symbolic inference where it agrees), and the note says what changed."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "wrong",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, declared)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "wrong.onnx")
    result = convert(tmp_path / "wrong.onnx", tmp_path / "out" / "wrong.onnx")
    assert list(result.card.outputs[0].shape or ()) == now
    assert any(f"'y' declared {declared}".replace("'", "'") in note for note in result.notes), result.notes
    shipped = onnx.load(str(result.output)).graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in shipped] == now


def test_an_output_size_named_after_an_input_axis_must_be_that_size() -> None:
    """speechmos' AECMOS declares its output [batch_size], the input's batch axis, and returns 4 values at batch 1:
    a name shared with an input is a claim about the size, checked like a number (onnx's own shape inference cannot
    see through that model, so the declaration reaches this check as the file wrote it)."""
    from onnx import TensorProto, helper

    from mlpk.packager.convert import specs

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "claims",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch_size", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch_size"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    feed = {"x": np.zeros((1, 4), np.float32)}
    assert specs.bound_sizes(model, feed) == {"batch_size": 1}
    assert specs.true_output_shapes(model, {"y": (1,)}, {"batch_size": 1}) is None  # the claim holds at batch 1
    note = specs.true_output_shapes(model, {"y": (4,)}, specs.bound_sizes(model, feed))
    assert note is not None and "'y' declared [batch_size], returned [4]" in note
    assert [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == ["y_0"]


def _onnx_test_model(name: str) -> Path:
    """A model of onnx's own backend test data (it ships in the onnx wheel)."""
    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "simple" / name / "model.onnx"


def test_refusals_of_third_party_files_name_the_real_way_out(tmp_path: Path) -> None:
    """A StringNormalizer that asks for a locale the machine lacks (onnx's own test model asks for en_US.UTF-8,
    which slim machines and mlpack's images lack; this one for a locale no machine has) is named as such, not as a
    missing op; a model that does not run on the inputs mlpack made names --sample-data."""
    from onnx import TensorProto, helper

    from mlpk.packager.errors import InputError

    node = helper.make_node("StringNormalizer", ["text"], ["normal"], case_change_action="LOWER", locale="xx_XX.UTF-8")
    graph = helper.make_graph([node], "words", [helper.make_tensor_value_info("text", TensorProto.STRING, [None])],
                              [helper.make_tensor_value_info("normal", TensorProto.STRING, [None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "words.onnx")
    with pytest.raises(ConversionError, match="Failed to construct locale") as locale:
        convert(tmp_path / "words.onnx", tmp_path / "out" / "words.onnx")
    assert "asks for the locale xx_XX.UTF-8" in locale.value.hint and "C.UTF-8" in locale.value.hint
    with pytest.raises(InputError, match="invalid expand shape") as made:
        convert(_onnx_test_model("test_expand_shape_model1"), tmp_path / "out" / "expand.onnx")
    assert "--sample-data" in made.value.hint
