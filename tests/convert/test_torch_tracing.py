"""PyTorch models that a trace gets wrong without a word: a branch on the input's values (the dynamo exporter cannot
take it, and the TorchScript-based fallback keeps the branch its example took), and a model traced in training mode
(its Dropout stays random). Both are refused, nothing is written; the user's own code style, real torch. Also how the
model is named: a builder function for --model-class, and a pickled module whose class does not import here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlpk.packager.convert import ConvertOptions, convert
from mlpk.packager.convert.specs import parse_input
from mlpk.packager.errors import ConversionError, InputError, ValidationError

pytestmark = pytest.mark.torch

_CLASS = '''
import torch
from torch import nn


class AutoScale(nn.Module):
    """Takes images in 0-255 or in 0-1, as many preprocessing helpers do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.max() > 1.0:
            x = x / 255.0
        return self.head(self.conv(x).mean(dim=(2, 3)))


class ItemScale(nn.Module):
    """The same branch on a number read with .item(): tracing warns of a Python number, not a bool."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.max().item() > 1.0:
            x = x / 255.0
        return self.head(x)


class Guarded(nn.Module):
    """A guard no real input reaches: the trace keeps the usual branch, which is the one every input takes."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.abs().max() > 1e12:
            raise ValueError("input out of range")
        return self.body(x)


def guarded(width: int = 8) -> Guarded:
    """A builder function, as torchvision.models.resnet18 is one."""
    assert width == 8
    return Guarded()


class SizeBranch(nn.Module):
    """Halves long sequences: a branch on a size, which the dynamo exporter keeps at the traced length."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(1, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > 32:
            x = x[:, ::2]
        return self.fc(x.mean(-1, keepdim=True)) * x.shape[-1]


class LogOdds(nn.Module):
    """A log-probability head on raw tabular features (incomes, counts): F.logsigmoid of a linear score."""

    def __init__(self) -> None:
        super().__init__()
        self.score = nn.Linear(6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.logsigmoid(self.score(x))


class Padded(nn.Module):
    """A transformer encoder over padded sequences: `pad` is True at padding, PyTorch's key_padding_mask."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        return self.encoder(x, src_key_padding_mask=pad)


class WideKernel(nn.Module):
    """A 9x9 convolution without padding: images of any size from 9x9 up."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


class TimeMajor(nn.Module):
    """A GRU over [seq, batch, features] (batch_first=False, PyTorch's default) giving every step's output."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(8, 6)
        self.head = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps, _ = self.rnn(x)
        return self.head(steps)


class Dropping(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
'''


@pytest.fixture
def classes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201 - the module holding both classes
    (tmp_path / "user_models.py").write_text(_CLASS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import user_models

    return user_models


def _saved(classes, tmp_path: Path, name: str, spec: str) -> tuple[Path, ConvertOptions]:  # noqa: ANN001
    """A state dict of the user's class `name` (seeded), and the options that name the class and its input."""
    import torch

    torch.manual_seed(0)
    torch.save(getattr(classes, name)().eval().state_dict(), tmp_path / f"{name}.pt")
    return tmp_path / f"{name}.pt", ConvertOptions(inputs=(parse_input(spec),),
                                                   model_class=f"{tmp_path / 'user_models.py'}:{name}")


def test_a_branch_on_input_values_is_refused_not_frozen(classes, tmp_path: Path) -> None:
    """Parity on data like the trace's example takes the same branch and passed (max_abs 3e-8) while images in 0-1
    were divided by 255 anyway; now the TracerWarning that says so is read, and the error names the line."""
    model, options = _saved(classes, tmp_path, "AutoScale", "x:batch,3,16,16:float32")
    with pytest.raises(ConversionError, match=r"branches on its input values \(user_models\.py:\d+.*rescaled to 0-1") \
            as refused:
        convert(model, tmp_path / "out" / "autoscale.onnx", options=options)
    assert "torch.where" in refused.value.hint
    assert not (tmp_path / "out" / "autoscale.onnx").exists()


def test_a_branch_on_a_number_read_with_item_is_refused_too(classes, tmp_path: Path) -> None:
    """`if x.max().item() > 1.0` (or int(...)): the warning speaks of a Python number; before, no variation ran and
    the model shipped with the branch frozen (0.60 off on inputs in 0-1)."""
    model, options = _saved(classes, tmp_path, "ItemScale", "x:batch,16:float32")
    with pytest.raises(ConversionError, match=r"branches on its input values \(user_models\.py:\d+"):
        convert(model, tmp_path / "out" / "item.onnx", options=options)


def test_a_guard_that_no_input_reaches_converts_and_says_what_parity_checked(classes, tmp_path: Path) -> None:
    """The same warning for a branch that changes nothing: parity on the varied inputs agrees, the model is written,
    and the note in its card says which variations ran."""
    model, options = _saved(classes, tmp_path, "Guarded", "x:batch,8:float32")
    result = convert(model, tmp_path / "out" / "guarded.onnx", options=options)
    assert result.parity is not None and result.parity.passed
    note = next(n for n in result.notes if n.startswith("tracing read tensors as Python values"))
    assert "rescaled to 0-1, rescaled to 0-255" in note and "answers agreed" in note


def test_a_model_traced_in_training_mode_is_named_as_random(classes, tmp_path: Path) -> None:
    """torch.jit.trace before model.eval(): Dropout stays on in the file, so the source answers the same inputs
    differently each time; the refusal says that, not "raise --tolerance"."""
    import torch

    torch.manual_seed(0)
    traced = torch.jit.trace(classes.Dropping().train(), torch.randn(4, 8), check_trace=False)
    traced.save(str(tmp_path / "dropping.pt"))
    with pytest.raises(ValidationError, match="random at inference") as refused:
        convert(tmp_path / "dropping.pt", tmp_path / "out" / "dropping.onnx",
                options=ConvertOptions(inputs=(parse_input("x:batch,8:float32"),)))
    assert "model.eval()" in refused.value.hint and "--tolerance" not in refused.value.hint


def test_a_builder_function_is_a_model_class(classes, tmp_path: Path) -> None:
    """--model-class torchvision.models:resnet18 style: a function that returns the module, with --model-args."""
    import torch

    torch.manual_seed(0)
    torch.save(classes.Guarded().eval().state_dict(), tmp_path / "guarded.pt")
    options = ConvertOptions(inputs=(parse_input("x:batch,8:float32"),), model_args={"width": 8},
                             model_class=f"{tmp_path / 'user_models.py'}:guarded")
    result = convert(tmp_path / "guarded.pt", tmp_path / "out" / "guarded.onnx", options=options)
    assert result.parity is not None and result.parity.passed


def test_a_pickled_module_whose_class_does_not_import_says_so(classes, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save(model) pickles the class by module name: where that module does not import, the error says so and
    how to go on (before: "the file may be truncated: save it again")."""
    import sys

    import torch

    torch.save(classes.Guarded().eval(), tmp_path / "whole.pt")
    monkeypatch.delitem(sys.modules, "user_models")
    monkeypatch.syspath_prepend(str(tmp_path / "elsewhere"))
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    with pytest.raises(InputError, match=r"class cannot be imported here \(user_models\)") as refused:
        convert(tmp_path / "whole.pt", tmp_path / "out" / "whole.onnx",
                options=ConvertOptions(inputs=(parse_input("x:batch,8:float32"),), trust_pickle=True))
    assert "PYTHONPATH" in refused.value.hint and "--model-class FILE.py:Class" in refused.value.hint


_TAGGER = '''
import torch
from torch import nn


class Tagger(nn.Module):
    """Per-token tags from a bidirectional GRU: [batch, seq, 4], and a sentence state [batch, 12]."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(30, 8)
        self.gru = nn.GRU(8, 6, batch_first=True, bidirectional=True)
        self.head = nn.Linear(12, 4)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states, _ = self.gru(self.embed(tokens))
        return self.head(states), states.mean(dim=1)
'''


def test_output_shapes_declared_are_the_ones_returned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The exporter declared the per-token output as [batch, 4, 4] (the traced sequence length); the card and the
    ONNX model now say [batch, seq, 4], as a run at another length returns, and the fixed sizes stay."""
    import onnx
    import onnxruntime as ort
    import torch

    (tmp_path / "tagger.py").write_text(_TAGGER)
    monkeypatch.syspath_prepend(str(tmp_path))
    import tagger

    torch.manual_seed(0)
    torch.save(tagger.Tagger().eval().state_dict(), tmp_path / "tagger.pt")
    options = ConvertOptions(inputs=(parse_input("tokens:batch,seq:int64"),),
                             model_class=f"{tmp_path / 'tagger.py'}:Tagger")
    result = convert(tmp_path / "tagger.pt", tmp_path / "out" / "tagger.onnx", options=options)
    shapes = {spec.name: list(spec.shape or ()) for spec in result.card.outputs}
    assert shapes == {"output_0": ["batch", "seq", 4], "output_1": ["batch", 12]}
    signature = {entry["name"]: entry["shape"] for entry in result.card.signature["outputs"]}
    assert signature == shapes  # the card's signature too (it kept [batch, 4, 4])
    assert any(note.startswith("output shapes made true to a run") for note in result.notes)
    declared = [[d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
                for o in onnx.load(str(result.output)).graph.output]
    assert declared == [["batch", "seq", 4], ["batch", 12]]
    tags, _ = ort.InferenceSession(str(result.output)).run(None, {"tokens": np.ones((3, 9), dtype=np.int64)})
    assert tags.shape == (3, 9, 4)


_TOKENS = '''
import torch
from torch import nn


class Segments(nn.Module):
    """A BERT-style signature: input_ids, attention_mask, token_type_ids (an embedding of 2 rows), a dict out."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens, self.types = nn.Embedding(50, 8), nn.Embedding(2, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001, ANN201
        hidden = self.tokens(input_ids) + self.types(token_type_ids)
        weights = attention_mask.unsqueeze(-1).float()
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return {"last_hidden_state": hidden, "logits": self.head(pooled)}
'''


def test_a_bert_style_signature_traces_on_values_it_takes_and_keeps_its_output_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """token_type_ids index an embedding of two rows: generated integers (0-9) overran it when tracing ("rejects
    inputs: index out of range"), and --sample-data did not help, as only its shapes were used. Segment ids are now
    made as zeros, the trace takes the sample data's first rows, and a dict's keys name the outputs."""
    import torch

    (tmp_path / "segments.py").write_text(_TOKENS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import segments

    torch.manual_seed(0)
    torch.save(segments.Segments().eval().state_dict(), tmp_path / "segments.pt")
    inputs = tuple(parse_input(f"{name}:batch,seq:int64") for name in ("input_ids", "attention_mask",
                                                                      "token_type_ids"))
    options = ConvertOptions(inputs=inputs, model_class=f"{tmp_path / 'segments.py'}:Segments")
    result = convert(tmp_path / "segments.pt", tmp_path / "out" / "segments.onnx", options=options)
    assert [spec.name for spec in result.card.outputs] == ["last_hidden_state", "logits"]
    assert result.parity is not None and result.parity.passed
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tokens.npz", input_ids=rng.integers(1, 50, (6, 9)), attention_mask=np.ones((6, 9), np.int64),
             token_type_ids=np.tile((np.arange(9) > 4).astype(np.int64), (6, 1)))
    again = convert(tmp_path / "segments.pt", tmp_path / "again" / "segments.onnx", options=options,
                    sample_data=tmp_path / "tokens.npz")
    assert again.parity is not None and again.parity.passed and again.parity.samples == 6


def test_a_branch_on_a_size_is_refused_at_twice_the_size(classes, tmp_path: Path) -> None:
    """x:batch,L with L free: the export ran the L <= 32 branch at every length while declaring L free (18.3 off at
    L=40). Parity now also runs with each free axis at twice the size it checked, and the difference is refused."""
    model, options = _saved(classes, tmp_path, "SizeBranch", "x:batch,L:float32")
    with pytest.raises(ConversionError, match=r"at x\[1, 64\] \(twice the size parity checked\) it answers otherwise"):
        convert(model, tmp_path / "out" / "sizes.onnx", options=options)
    assert not (tmp_path / "out" / "sizes.onnx").exists()


def test_log_sigmoid_stays_finite_where_the_source_does(classes, tmp_path: Path) -> None:
    """F.logsigmoid exports as Log(Sigmoid(x)): -inf once sigmoid underflows (x < -88), where PyTorch answers about
    x; standard-normal parity data never gets there, real features in the thousands do. mlpack computes it as
    -softplus(-x)."""
    import onnxruntime as ort
    import torch

    source, options = _saved(classes, tmp_path, "LogOdds", "x:batch,6:float32")
    result = convert(source, tmp_path / "out" / "m.onnx", options=options)
    assert any(note.startswith("log(sigmoid(x)) computed as -softplus(-x)") for note in result.notes)
    assert any("floats times 1000: answers agree" in note for note in result.notes)
    features = (np.random.default_rng(1).standard_normal((16, 6)) * 3e3).astype(np.float32)
    model = classes.LogOdds()
    model.load_state_dict(torch.load(source))
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(features)).numpy()
    got = ort.InferenceSession(str(result.output), providers=["CPUExecutionProvider"]).run(None, {"x": features})[0]
    assert np.isfinite(expected).all() and expected.min() < -100
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_made_inputs_of_thousands_refuse_a_model_that_overflows(classes, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Without that rewrite, parity on the inputs it made, times 1000, finds the -inf the source does not give."""
    from mlpk.packager.convert import rewrite

    monkeypatch.setattr(rewrite, "stable_log_sigmoid", lambda model: None)
    source, options = _saved(classes, tmp_path, "LogOdds", "x:batch,6:float32")
    with pytest.raises(ValidationError, match=r"with floats times 1000 .* NaN/inf where the other is not") as refused:
        convert(source, tmp_path / "out" / "m.onnx", options=options)
    assert "--sample-data" in refused.value.hint
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_masks_padded_at_the_end_refuse_a_transformer_that_answers_otherwise_there(classes, tmp_path: Path) -> None:
    """In inference, PyTorch's TransformerEncoder takes its nested-tensor path for masks padded at the end, as real
    ones are, and answers 0 at the padded positions; the ONNX model answers there as on any position. Random masks
    (what parity made before) took the other path and agreed; parity now also makes masks padded at the end."""
    import torch

    torch.manual_seed(0)
    torch.save(classes.Padded().eval().state_dict(), tmp_path / "padded.pt")
    options = ConvertOptions(inputs=(parse_input("x:batch,seq,32:float32"), parse_input("pad:batch,seq:bool")),
                             model_class=f"{tmp_path / 'user_models.py'}:Padded")
    with pytest.raises(ValidationError, match=r"with masks padded at the end \(as real inputs may be\), the ONNX model "
                                              r"answers otherwise"):
        convert(tmp_path / "padded.pt", tmp_path / "out" / "padded.onnx", options=options)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_free_sizes_too_small_for_the_model_name_the_sample_data_way(classes, tmp_path: Path) -> None:
    """Sizes left free are traced at small made sizes, which a model may not take (timm's convnext on a 4x4 image);
    the hint names --sample-data, whose sizes the trace then takes, and with it the model converts."""
    from mlpk.packager.errors import ConfigError

    source, options = _saved(classes, tmp_path, "WideKernel", "x:batch,3,h,w:float32")
    with pytest.raises(ConfigError, match="rejects inputs") as refused:
        convert(source, tmp_path / "out" / "m.onnx", options=options)
    assert "pass --sample-data with real inputs to trace at theirs" in refused.value.hint
    np.savez(tmp_path / "images.npz", x=np.random.default_rng(0).random((4, 3, 24, 24)).astype(np.float32))
    result = convert(source, tmp_path / "out" / "m.onnx", options=options, sample_data=tmp_path / "images.npz")
    assert result.parity is not None and result.parity.passed


def test_a_dynamo_model_that_is_refused_gives_way_to_the_torchscript_one(classes, tmp_path: Path) -> None:
    """The dynamo exporter keeps the traced length of a time-major GRU in a Reshape: [12, 4, 5] came back as
    [2, 24, 5] (refused: laid out otherwise). The TorchScript-based exporter's model passes every check and is
    written, with a note that says why; it answers as PyTorch at other lengths and batch sizes."""
    import onnxruntime as ort
    import torch

    source, options = _saved(classes, tmp_path, "TimeMajor", "x:seq,batch,8:float32")
    result = convert(source, tmp_path / "out" / "m.onnx", options=options)
    assert "TorchScript" in result.exporter
    assert result.notes[0].startswith("torch.onnx dynamo exporter") and "laid out otherwise" in result.notes[0]
    model = classes.TimeMajor()
    model.load_state_dict(torch.load(source))
    session = ort.InferenceSession(str(result.output), providers=["CPUExecutionProvider"])
    for seq, batch in ((12, 4), (7, 1), (30, 16)):
        x = np.random.default_rng(seq).standard_normal((seq, batch, 8)).astype(np.float32)
        with torch.no_grad():
            expected = model.eval()(torch.from_numpy(x)).numpy()
        got = session.run(None, {"x": x})[0]
        assert got.shape == expected.shape == (seq, batch, 5)
        np.testing.assert_allclose(got, expected, atol=1e-5)
