"""Assembly pieces that need no engine: the deps-layer key (deps.py), the runtime layer, budgets."""

from __future__ import annotations

import marshal
import tarfile

import pytest

from mlpk.packager import assemble, deps, locks, targets
from mlpk.packager.errors import BuildError
from mlpk.packager.oci.layer import read_members


def test_deps_key_follows_what_decides_the_layer() -> None:
    lam = targets.load("lambda")
    numpy = locks.Pin("numpy", "2.4.6", "numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl", "a" * 64)
    lock = locks.Lock("linux/amd64", "3.11", "2.36", lam.wheels.requirements, (numpy,))
    key = deps._deps_key(lam, "linux/amd64", lock, "base-1")
    assert key == deps._deps_key(lam, "linux/amd64", lock, "base-1")
    other_reqs = targets.load("lambda", {"wheels": {"requirements": ["onnxruntime==1.31.1"]}})
    assert key != deps._deps_key(other_reqs, "linux/amd64", lock, "base-1")
    assert key != deps._deps_key(lam, "linux/arm64", lock, "base-1")
    assert key != deps._deps_key(lam, "linux/amd64", lock, "base-2"), "another base SBOM"
    rebuilt = locks.Lock(lock.platform, lock.python, lock.glibc, lock.requirements,
                         (locks.Pin(numpy.name, numpy.version, numpy.filename, "b" * 64),))
    assert key != deps._deps_key(lam, "linux/amd64", rebuilt, "base-1"), "other wheel bytes, another layer"


def test_runtime_layer_ships_the_runtime_with_image_paths() -> None:
    layer = assemble.runtime_layer("3.11")
    names = {m.name.lstrip("./").lstrip("/") for m in read_members(layer)}
    lib = assemble.LIB.lstrip("/")
    assert f"{lib}/mlpk/runtimes/server.py" in names and f"{lib}/mlpk/runtimes/openapi.json" in names
    assert f"{lib}/mlpk/runtimes/proto/grpc_predict_v2.binpb" in names  # the gRPC messages, compiled at build
    assert not any(name.endswith(".proto") for name in names)  # their sources stay out of images
    assert assemble.runtime_layer("3.11").digest == layer.digest, "reproducible"
    # Byte-code names the image path, not the staging directory it was compiled in (PEP 552 pyc: 16-byte header).
    with layer.open() as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
        for member in tar:
            if member.name.endswith("/__pycache__/server.cpython-311.pyc"):
                code = marshal.loads(tar.extractfile(member).read()[16:])  # type: ignore[union-attr]
                break
    assert code.co_filename == f"{assemble.LIB}/mlpk/runtimes/server.py"


def test_budget_table_names_every_layer() -> None:
    lam = targets.load("lambda", {"budget_mb": 1})
    parts = [assemble.Part(name, None, size) for name, size in  # type: ignore[arg-type]
             (("base", 900_000), ("deps", 500_000), ("runtime", 10_000), ("model", 1_000))]
    with pytest.raises(BuildError) as err:
        assemble.check_budget(lam, "linux/amd64", parts)
    text = str(err.value)
    assert "1.4 MB, over its budget of 1 MB" in text
    assert "(layers: base 0.9 MB, deps 0.5 MB, runtime 0.0 MB, model 0.0 MB)" in text
    assert assemble.check_budget(targets.load("lambda"), "linux/amd64", parts) == pytest.approx(1.411)


def test_a_base_recording_arm64_v8_serves_an_arm64_target() -> None:
    """An arm64 base whose config says `variant: v8` is the arm64 the target builds (the OCI spec's default
    variant); an amd64 base for it is still refused."""
    from mlpk.packager.oci.image import Image, canonical_json
    from mlpk.packager.oci.layer import Entry, layer_from_entries

    def base(architecture: str, variant: str | None) -> Image:
        config = {"architecture": architecture, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
                  "config": {}, "history": []}
        if variant:
            config["variant"] = variant
        return Image(canonical_json(config))

    layer = layer_from_entries([Entry("opt/x", "file", data=b"x")])
    target = targets.load("cpu")
    for variant in ("v8", None):
        img = assemble.assemble(base("arm64", variant), target, "linux/arm64", deps=layer, runtime=layer, model=layer,
                                labels={})
        assert img.config["architecture"] == "arm64" and len(img.layers) == 3
    with pytest.raises(BuildError, match="the base image is for linux/amd64"):
        assemble.assemble(base("amd64", None), target, "linux/arm64", deps=layer, runtime=layer, model=layer,
                          labels={})
