"""Test helpers (real code, after go-containerregistry's `random` package): the three-layer app image built on a
busybox base, and the external checks every image-producing test ends with."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

from mlpk.packager.oci import Entry, Image, append_layers, layer_from_entries, with_config
from mlpk.packager.oci.validate import validate

HELLO = "#!/bin/sh\necho hello from $(cat /app/one.txt) on $(uname -m)\n"


def app_image(base: Image, top: bytes = b"model v1\n") -> Image:
    """`base` plus three layers (a data file, a script, a top 'model' layer) and a config."""
    layers = [
        layer_from_entries([Entry("/app/one.txt", data=b"layer-one")]),
        layer_from_entries([Entry("/app/bin/hello", data=HELLO.encode(), mode=0o755)]),
        layer_from_entries([Entry("/opt/mlpack/model/model.onnx", data=top, uid=1000, gid=1000),
                            Entry("/opt/mlpack/model/model-card.json", data=json.dumps(
                                {"schema": "mlpack.model-card/v1", "name": "toy", "source": {"kind": "onnx"}}
                            ).encode())]),
    ]
    img = append_layers(base, *layers, created_by="test app layers")
    return with_config(img, entrypoint=["/app/bin/hello"], env={"APP": "1"}, user="0",
                       labels={"org.opencontainers.image.title": "app"}, workdir="/app")


def skopeo_inspect(transport_ref: str, *extra: str) -> dict:
    """`skopeo inspect` of an image (oci:DIR, docker://REF, docker-archive:TAR), parsed."""
    done = subprocess.run(["skopeo", "inspect", *extra, transport_ref], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def check(img: Image, transport_ref: str, *extra: str) -> dict:
    """The end of every image-producing test: mlpack's validator, then skopeo's view of what was written."""
    validate(img)
    seen = skopeo_inspect(transport_ref, *extra)
    assert seen["Architecture"] == img.platform.architecture
    assert len(seen["Layers"]) == len(img.layers)
    return seen


def docker_tag() -> str:
    return f"mlpack-test/oci-{uuid.uuid4().hex[:10]}:1"


def docker(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
