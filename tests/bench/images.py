"""Small real images for the bench tests, built daemonlessly in a second: a base layer, and a model layer made by
the call `mlpack export` uses (assemble.model_layer), configured like a server or a Lambda image."""

from __future__ import annotations

import json
from pathlib import Path

from mlpk.packager import assemble
from mlpk.packager.oci import Entry, Image, append_layers, empty_image, layer_from_entries, with_config
from tests.export import models

SERVER = ["/usr/bin/python3", "-m", "mlpk.runtimes.server"]
LAMBDA = ["/usr/bin/python3", "-m", "awslambdaric"]


def model_dir(directory: Path, *, name: str = "scorer", card_inputs: list[dict] | None = None) -> Path:
    """`directory` with model.onnx (the generated MLP: x float32[batch, 16]) and a model-card.json named `name`
    (its inputs: `card_inputs`, else the model's own)."""
    onnx_file = models.mlp(directory, seed=0, name="model")
    inputs = card_inputs if card_inputs is not None else [{"name": "x", "dtype": "float32", "shape": ["batch", 16]}]
    (directory / "model-card.json").write_text(json.dumps({
        "schema": "mlpack.model-card/v1", "name": name, "mlpack_version": "0",
        "source": {"kind": "onnx", "file": "model.onnx", "sha256": "0" * 64}, "inputs": inputs,
        "outputs": [{"name": "probabilities", "dtype": "float32", "shape": ["batch", 4]}]}))
    assert onnx_file == directory / "model.onnx"
    return directory


def image(model: Path, *, platform: str = "linux/amd64", lambda_: bool = False) -> Image:
    """base (one file) + model layer, with a server's (or a Lambda function's) entrypoint."""
    base = layer_from_entries([Entry("etc", "dir", mode=0o755),
                               Entry("etc/os-release", "file", data=b"ID=test\n", mode=0o644)])
    img = append_layers(empty_image(platform), base, created_by="test: base")
    files = {name: model / name for name in ("model.onnx", "model-card.json")}
    img = append_layers(img, assemble.model_layer(files), created_by="mlpack: model")
    if lambda_:
        return with_config(img, entrypoint=LAMBDA, cmd=["mlpk.runtimes.lambda_handler.handler"],
                           labels={"dev.mlpack.target": "lambda"})
    return with_config(img, entrypoint=SERVER, cmd=[], labels={"dev.mlpack.target": "cpu"})
