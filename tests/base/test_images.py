"""The acceptance of issue 6 with real parts: Debian's archive, gpgv, the Docker engine, qemu, pip wheels."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from mlpk.packager import emulation, oci
from mlpk.packager.base import write
from mlpk.packager.oci.validate import validate

BASES = [pytest.param("bookworm", "amd64", id="bookworm-amd64"),
         pytest.param("bookworm", "arm64", id="bookworm-arm64", marks=[pytest.mark.qemu, pytest.mark.slow]),
         pytest.param("trixie", "amd64", id="trixie-amd64"),
         pytest.param("trixie", "arm64", id="trixie-arm64", marks=[pytest.mark.qemu, pytest.mark.slow])]
MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}
WHEEL_PLATFORMS = {"amd64": ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                             "manylinux2014_x86_64"),
                   "arm64": ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64",
                             "manylinux2014_aarch64")}
IMPORTS = "import ssl, sqlite3, json, ctypes, zlib, os; print(os.uname().machine, os.getuid())"


@pytest.fixture
def docker_image(tmp_path: Path, docker_engine: str) -> Iterator[Callable[[object, str], str]]:
    """load(image, arch) -> tag: the image written as a docker-archive, checked by skopeo, loaded; removed after."""
    tags: list[str] = []

    def load(image: object, arch: str) -> str:
        tag = f"mlpack-test/base:{uuid.uuid4().hex[:12]}"
        archive = oci.tarball.write(image, tmp_path / f"{len(tags)}.tar", tag)  # type: ignore[attr-defined]
        inspected = subprocess.run(["skopeo", "inspect", f"docker-archive:{archive}"], capture_output=True,
                                   text=True, check=True)
        assert f'"Architecture": "{arch}"' in inspected.stdout
        subprocess.run(["docker", "load", "-i", str(archive)], capture_output=True, check=True)
        tags.append(tag)
        return tag

    yield load
    for tag in tags:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


def _run(tag: str, arch: str, *argv: str) -> str:
    # Under qemu, onnxruntime's CPU detection hangs on the x86-64 host's sysfs: emulation.docker_run_args hides it
    # (see mlpk.packager.emulation); emulated Python is still slow to start, so arm64 runs get a longer limit.
    platform = f"linux/{arch}"
    done = subprocess.run(["docker", "run", "--rm", "--platform", platform, *emulation.docker_run_args(platform), tag,
                           *argv], capture_output=True, text=True, timeout=300 if arch == "amd64" else 600, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.docker
@pytest.mark.parametrize(("suite", "arch"), BASES)
def test_base_runs_python_under_docker(suite: str, arch: str, built: Callable[..., object],
                                       docker_image: Callable[[object, str], str]) -> None:
    base = built(suite, arch)
    summary = base.summary()  # type: ignore[attr-defined]
    print(f"{suite}/{arch}: {summary['uncompressed_bytes']} bytes uncompressed, "
          f"{summary['compressed_bytes']} compressed, {len(summary['packages'])} packages")
    if suite == "bookworm":
        assert summary["uncompressed_bytes"] <= 60_000_000
    validate(base.image)  # type: ignore[attr-defined]
    tag = docker_image(base.image, arch)  # type: ignore[attr-defined]
    assert _run(tag, arch, "python3", "-c", IMPORTS).split() == [MACHINE[arch], "65532"]
    certs = _run(tag, arch, "python3", "-c", "import ssl; print(ssl.create_default_context().cert_store_stats()"
                 "['x509_ca'])")
    assert int(certs) > 100
    status = _run(tag, arch, "python3", "-c", "print(open('/var/lib/dpkg/status').read())")
    assert f"Package: libpython{ {'bookworm': '3.11', 'trixie': '3.13'}[suite] }-stdlib\n" in status
    assert "Status: install ok installed" in status and "Package: dpkg\n" not in status


def _onnx_model(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["t"]), helper.make_node("Add", ["t", "one"], ["y"])], "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]), helper.make_tensor("one", TensorProto.FLOAT, [],
                                                                                      [1.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.timeout(1800)
@pytest.mark.parametrize(("suite", "arch"), BASES)
def test_onnx_model_runs_on_base(suite: str, arch: str, tmp_path: Path, built: Callable[..., object],
                                 docker_image: Callable[[object, str], str]) -> None:
    base = built(suite, arch)
    python = {"bookworm": "3.11", "trixie": "3.13"}[suite]
    site = tmp_path / "site"
    platforms = [arg for p in WHEEL_PLATFORMS[arch] for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(site), "--no-deps",
                    "--only-binary=:all:", "--implementation", "cp", "--python-version", python, *platforms,
                    f"onnxruntime=={version('onnxruntime')}", f"numpy=={version('numpy')}"], check=True,
                   capture_output=True, timeout=600)
    model = tmp_path / "model"
    model.mkdir()
    _onnx_model(model / "model.onnx")
    image = oci.append_layers(base.image, oci.layer_from_dir(site, prefix="/opt/mlpack/site-packages"),  # type: ignore[attr-defined]
                              oci.layer_from_dir(model, prefix="/opt/mlpack/model"))
    image = oci.with_config(image, env={"PYTHONPATH": "/opt/mlpack/site-packages"})
    validate(image)
    tag = docker_image(image, arch)
    out = _run(tag, arch, "python3", "-c", "import numpy as np, onnxruntime as ort, os; s = ort.InferenceSession("
               "'/opt/mlpack/model/model.onnx', providers=['CPUExecutionProvider']); print(os.uname().machine, "
               "s.run(None, {'x': np.array([[1, 2, 3]], np.float32)})[0].tolist())")
    assert out.strip() == f"{MACHINE[arch]} [[3.0, 5.0, 7.0]]"


def test_rebuild_is_cached_and_reproducible(built: Callable[..., object], base_cache: object,
                                            downloads: Path, tmp_path: Path) -> None:
    from mlpk.packager.base import BaseSpec, Cache, build

    first = built("bookworm", "amd64")
    again = build(BaseSpec(), base_cache)  # type: ignore[arg-type]
    assert again.cached and again.image.digest == first.image.digest  # type: ignore[attr-defined]
    print(f"cached rebuild: {again.seconds:.2f} s")
    assert again.seconds < 2
    fresh = build(BaseSpec(), Cache(tmp_path / "cache", downloads=downloads))
    assert not fresh.cached and fresh.image.digest == first.image.digest  # type: ignore[attr-defined]
    layout_dir = write(fresh, tmp_path / "layout", tag="mlpack/base:bookworm-amd64", sbom_path=tmp_path / "s.json")
    validate(oci.image_from_layout(layout_dir))
    subprocess.run(["skopeo", "inspect", f"oci:{layout_dir}"], capture_output=True, check=True)
    import json

    bom = json.loads((tmp_path / "s.json").read_text())
    assert bom["bomFormat"] == "CycloneDX"
    libc = next(c for c in bom["components"] if c["name"] == "libc6")
    assert libc["version"] == next(p.version for p in fresh.plan.packages if p.name == "libc6")
    assert libc["purl"].startswith("pkg:deb/debian/libc6@2.") and "arch=amd64" in libc["purl"]
    assert len(bom["components"]) == len(fresh.plan.packages)
