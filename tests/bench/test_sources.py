"""What `mlpack bench` is given, resolved without running anything: models, export directories, OCI layouts (an
index picks this machine's platform), docker-archives; the model read out of an image's model layer; the inputs and
the request built from them; layer sizes; the concurrency flag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlpk.packager.bench import report, sources
from mlpk.packager.errors import ConfigError, InputError
from mlpk.packager.oci import index, layout, tarball
from tests.bench import images
from tests.runtime import models as runtime_models


@pytest.mark.parametrize(("text", "want"), [("1,4,16", (1, 4, 16)), ("16, 4,4,1", (1, 4, 16)), ("2", (2,))])
def test_concurrency_values(text: str, want: tuple[int, ...]) -> None:
    assert report.parse_concurrency(text) == want


@pytest.mark.parametrize(("text", "bad"), [("0", "'0'"), ("a", "'a'"), ("1,a", "'a'"), ("", "''"), ("1,,2", "''"),
                                           ("-1", "'-1'"), ("1.5", "'1.5'"), ("5000", "5000 is more than 1024")])
def test_bad_concurrency_values_name_the_value(text: str, bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        report.parse_concurrency(text)
    assert bad in caught.value.message and f"--concurrency {text!r}" in caught.value.message
    assert caught.value.exit_code == 2 and "1,4,16" in (caught.value.hint or "")


def test_a_model_file_and_model_directories(tmp_path: Path) -> None:
    model = images.model_dir(tmp_path / "model", name="scorer")
    for given in (model / "model.onnx", model):
        source = sources.open_source(str(given))
        assert (source.kind, source.image, source.is_lambda) == ("model", None, False)
    info = sources.model_info(model)
    assert (info.name, info.file.name, info.bytes) == ("scorer", "model.onnx", (model / "model.onnx").stat().st_size)
    assert [spec.to_dict() for spec in info.inputs] == [{"name": "x", "dtype": "float32", "shape": ["batch", 16]}]
    only = tmp_path / "only"
    only.mkdir()
    (model / "model.onnx").rename(only / "mine.onnx")
    assert sources.open_source(str(only)).kind == "model"
    assert sources.model_info(only).name == "mine"  # no card beside it: the file's stem, as the runtime names it


def test_inputs_come_from_the_graph_when_the_card_lists_none(tmp_path: Path) -> None:
    """tests/runtime's `mixed` model has a card without inputs: the graph's five inputs of five datatypes are used,
    and the request holds one sample of each with the v2 datatype."""
    model = runtime_models.mixed(tmp_path / "mixed")
    info = sources.model_info(model)
    assert [spec.name for spec in info.inputs] == ["x", "h", "ids", "mask", "text"]
    body = json.loads(sources.infer_body(info.inputs))
    assert [(i["name"], i["datatype"], i["shape"]) for i in body["inputs"]] == [
        ("x", "FP32", [1, 4]), ("h", "FP16", [1, 3]), ("ids", "INT64", [1]), ("mask", "BOOL", [1]),
        ("text", "BYTES", [1])]
    assert len(body["inputs"][0]["data"]) == 4 and isinstance(body["inputs"][4]["data"][0], str)
    assert sources.infer_body(info.inputs) == sources.infer_body(info.inputs)  # deterministic


@pytest.mark.parametrize(("name", "content", "words"), [
    ("missing.onnx", None, "does not exist"),
    ("./not/here", None, "does not exist"),
    ("notes.txt", b"hello", "neither an ONNX model"),
    ("empty-dir", "dir", "holds neither model.onnx"),
    ("broken.onnx", b"\x00not a model", "is not a readable ONNX model"),
])
def test_what_is_neither_a_model_nor_an_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str,
                                               content: bytes | str | None, words: str) -> None:
    monkeypatch.chdir(tmp_path)
    if content == "dir":
        (tmp_path / name).mkdir()
    elif isinstance(content, bytes):
        (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError) as caught:
        sources.model_info(sources.model_dir(sources.open_source(name), tmp_path))
    assert words in caught.value.message and caught.value.exit_code == 3


def test_an_index_gives_this_machines_image_and_its_model(tmp_path: Path) -> None:
    model = images.model_dir(tmp_path / "model")
    amd64, arm64 = images.image(model, platform="linux/amd64"), images.image(model, platform="linux/arm64")
    oci = layout.write(index(amd64, arm64), tmp_path / "oci")
    source = sources.open_source(str(oci))
    assert source.kind == "layout" and source.platform == sources.host_platform()
    assert sources.open_source(str(oci), "linux/arm64").platform == "linux/arm64"
    extracted = sources.model_dir(source, tmp_path / "work")
    assert sorted(p.name for p in extracted.iterdir()) == ["model-card.json", "model.onnx"]
    assert (extracted / "model.onnx").read_bytes() == (model / "model.onnx").read_bytes()
    assert sources.model_info(extracted).name == "scorer"
    with pytest.raises(InputError, match="riscv64"):
        sources.open_source(str(oci), "linux/riscv64")


def test_layer_sizes_are_named_from_the_history(tmp_path: Path) -> None:
    img = images.image(images.model_dir(tmp_path / "model"), lambda_=True)
    archive = tarball.write(img, tmp_path / "image.tar", "test/lambda:1")
    source = sources.open_source(str(archive))
    assert source.kind == "archive" and source.is_lambda and source.tag == "test/lambda:1"
    assert source.command() == [*images.LAMBDA, "mlpk.runtimes.lambda_handler.handler"]
    sizes = sources.layer_sizes(source)
    assert [s.name for s in sizes] == ["base", "model"]
    assert [s.digest for s in sizes] == [str(layer.digest) for layer in img.layers]
    for size, layer in zip(sizes, img.layers, strict=True):
        assert size.compressed == layer.size and size.uncompressed > 0
    assert sizes[1].uncompressed > (tmp_path / "model" / "model.onnx").stat().st_size


def test_an_image_without_a_model_layer(tmp_path: Path) -> None:
    from mlpk.packager.oci import empty_image

    oci = layout.write(empty_image("linux/amd64"), tmp_path / "oci")
    with pytest.raises(InputError, match=r"has no /opt/mlpack/model/model\.onnx"):
        sources.model_dir(sources.open_source(str(oci)), tmp_path / "work")
