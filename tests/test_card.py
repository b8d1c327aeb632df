"""The model card contract: round trips, tolerant reading, embedding in ONNX metadata."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from mlpk.packager import card as cards
from mlpk.packager.errors import InputError

CARD = cards.ModelCard(
    name="digits", source=cards.Source("keras", "digits.h5", "ab" * 32),
    inputs=(cards.TensorSpec("image", "float32", ("batch", 8, 8, 1)),),
    outputs=(cards.TensorSpec("probabilities", "float32", ("batch", 10)),),
    parity={"passed": True})


def test_round_trip_and_contract_keys() -> None:
    data = json.loads(CARD.to_json())
    assert set(data) == {"schema", "name", "mlpack_version", "source", "inputs", "outputs", "parity", "quantization",
                         "signature"}
    assert data["inputs"] == [{"name": "image", "dtype": "float32", "shape": ["batch", 8, 8, 1]}]
    assert cards.ModelCard.from_dict(data) == CARD


def test_unknown_keys_are_kept_not_rejected() -> None:
    data = {**CARD.to_dict(), "future_field": {"x": 1}}
    read = cards.ModelCard.from_dict(data)
    assert read.extra == {"future_field": {"x": 1}} and read.to_dict()["future_field"] == {"x": 1}
    with_q = read.with_(quantization={"mode": "int8"})
    assert with_q.to_dict()["quantization"] == {"mode": "int8"} and read.quantization is None


def test_bad_cards_are_input_errors() -> None:
    with pytest.raises(InputError, match="schema"):
        cards.ModelCard.from_dict({"schema": "other/v9"})
    with pytest.raises(InputError, match="lacks the field 'source'"):
        cards.ModelCard.from_dict({"schema": cards.SCHEMA, "name": "x"})


def test_embed_replaces_and_read_prefers_embedded(tmp_path: Path) -> None:
    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    cards.embed(model, CARD.with_(name="old"))
    cards.embed(model, CARD)
    assert [p.key for p in model.metadata_props] == [cards.METADATA_KEY]
    onnx.save_model(model, str(tmp_path / "m.onnx"))
    (tmp_path / cards.FILE_NAME).write_text(CARD.with_(name="beside").to_json())
    assert cards.read(tmp_path / "m.onnx") == CARD
    bare = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    onnx.save_model(bare, str(tmp_path / "m.onnx"))
    assert cards.read(tmp_path / "m.onnx").name == "beside"


def test_a_folder_card_never_describes_another_model(tmp_path: Path) -> None:
    """Two models converted into one folder each keep their own NAME.card.json; a folder's model-card.json is
    read only for the folder's one model."""
    bare = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    for name in ("a", "b"):
        onnx.save_model(bare, str(tmp_path / f"{name}.onnx"))
    cards.card_path(tmp_path / "a.onnx").write_text(CARD.with_(name="a").to_json())
    (tmp_path / cards.FILE_NAME).write_text(CARD.with_(name="shared").to_json())
    assert cards.read(tmp_path / "a.onnx").name == "a"
    assert cards.read(tmp_path / "b.onnx") is None, "model-card.json is not b's: the folder holds two models"
    (tmp_path / "a.onnx").unlink()
    assert cards.read(tmp_path / "b.onnx").name == "shared"


def test_sha256_of_directory_is_stable(tmp_path: Path) -> None:
    (tmp_path / "d" / "variables").mkdir(parents=True)
    (tmp_path / "d" / "saved_model.pb").write_bytes(b"pb")
    (tmp_path / "d" / "variables" / "v").write_bytes(b"v")
    first = cards.sha256_of(tmp_path / "d")
    (tmp_path / "d" / "variables" / "v").write_bytes(b"w")
    assert cards.sha256_of(tmp_path / "d") != first
