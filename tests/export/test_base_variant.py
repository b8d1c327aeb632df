"""An arm64 base whose config records `variant: v8` is the arm64 a target builds (the OCI image index spec names v8
the default variant of arm64), from a docker-archive and from an OCI layout alike (issue 16: export compared the
platforms with `!=` and refused it: "base is for linux/arm64/v8, but ... builds linux/arm64")."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mlpk.packager.oci import Entry, Image, append_layers, layer_from_entries, layout, tarball
from mlpk.packager.oci.image import canonical_json
from mlpk.packager.oci.validate import validate
from tests.export import models

pytestmark = pytest.mark.slow


def _arm64_v8_base() -> Image:
    config = {"architecture": "arm64", "os": "linux", "variant": "v8", "config": {},
              "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
    layer = layer_from_entries([Entry("etc/os-release", data=b"ID=v8-base\n")])
    return append_layers(Image(canonical_json(config)), layer, created_by="a base that records its variant")


@pytest.mark.parametrize("kind", ["docker-archive", "oci"])
def test_an_arm64_v8_base_is_taken_by_export(mlpack, tmp_path: Path, kind: str) -> None:
    base = _arm64_v8_base()
    if kind == "oci":
        source = f"oci:{layout.write(base, tmp_path / 'base')}"
    else:
        source = f"docker-archive:{tarball.write(base, tmp_path / 'base.tar', 'v8/base:1')}"
    model = models.mlp(tmp_path / "m", name="variant")
    out = tmp_path / "out"
    done = mlpack("--json", "export", str(model), "--target", "lambda-arm64", "--quantize", "none", "--no-archive",
                  "--base", source, "-o", str(out), timeout=900)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [build["platform"] for build in report["platforms"]] == ["linux/arm64"]
    img = layout.read(out / "oci")
    assert isinstance(img, Image) and (img.platform.architecture, img.platform.variant) == ("arm64", "v8")
    assert img.layers[0].digest == base.layers[0].digest, "the base's layer is the image's first"
    validate(img)
    subprocess.run(["skopeo", "inspect", "--raw", f"oci:{out / 'oci'}"], check=True, capture_output=True)
