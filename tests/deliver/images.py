"""Images for delivery tests: real `mlpack export` outputs of the generated MLP, and model-only updates of them.

A model-only update swaps the image's last (model) layer for one built from another model by the same library call
export uses (assemble.model_layer), so exactly one layer differs, whatever else a re-export might change.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from mlpk.packager import assemble
from mlpk.packager.oci import Image, append_layers, with_config
from mlpk.packager.oci.image import canonical_json
from tests.export import models

CPU_AMD64 = 'extends = "cpu"\nname = "cpu-amd64"\nplatforms = ["linux/amd64"]\n'


def export(mlpack, model: Path, target: str, out: Path) -> dict:
    done = mlpack("--json", "export", str(model), "--target", target, "--quantize", "none", "-o", str(out),
                  timeout=900)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def cpu_amd64_profile(directory: Path) -> Path:
    """The cpu target for amd64 only (the built-in one is an amd64 + arm64 index)."""
    path = directory / "cpu-amd64.toml"
    path.write_text(CPU_AMD64)
    return path


def model_update(img: Image, directory: Path, seed: int, name: str = "scorer") -> Image:
    """`img` with its model layer replaced by one holding another generated model (same names, other weights),
    served as `name` (default: the name of exported_cpu's model, whose file is scorer.onnx)."""
    model = models.mlp(directory, seed=seed, name="model")
    config = img.config
    config["rootfs"]["diff_ids"] = config["rootfs"]["diff_ids"][:-1]
    config["history"] = config["history"][:-1]
    base = Image(canonical_json(config), img.layers[:-1], img.media_type)
    card = directory / "model-card.json"
    card.write_text(json.dumps({"schema": "mlpack.model-card/v1", "name": name, "seed": seed}))
    layer = assemble.model_layer({"model.onnx": model, "model-card.json": card})
    updated = append_layers(base, layer, created_by="mlpack: model")
    return with_config(updated, labels={"dev.mlpack.model.sha256": layer.diff_id.hex})


def docker(*args: str, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def unique_stack(img: Image, token: str) -> Image:
    """`img` on top of a tiny layer of its own (one file naming `token`).

    A Docker engine keys layers by chain ID, which depends on every layer below; so every layer of the result is new
    to the engine, however many tests before loaded the same base, and the shared engine never has to be emptied.
    """
    from mlpk.packager.oci import Entry, empty_image, layer_from_entries

    marker = layer_from_entries([Entry("etc", "dir", mode=0o755),
                                 Entry(f"etc/mlpack-test-{token}", "file", data=token.encode(), mode=0o644)])
    config = img.config
    stacked = append_layers(empty_image(img.platform), marker, created_by="test: marker")
    out = stacked.config
    out["rootfs"]["diff_ids"] += config["rootfs"]["diff_ids"]
    out["history"] += config["history"]
    for key in ("config", "created"):
        if key in config:
            out[key] = config[key]
    return Image(canonical_json(out), (*stacked.layers, *img.layers), img.media_type)
