"""Acceptance: a base from the local test registry plus three layers, written to each sink and read back by
external tools (skopeo, umoci, docker load/run), for amd64 and (under qemu) arm64."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from mlpk.packager.oci import Image, Platform, image_from_registry, index, layout, remote, tarball
from mlpk.packager.oci import daemon
from mlpk.packager.oci.describe import describe
from tests.oci.images import app_image, check, docker, docker_tag

pytestmark = pytest.mark.registry


@pytest.fixture(scope="module")
def base_ref(registry, busybox_base: Callable[[str], Image]) -> str:
    """The busybox base pushed to the test registry as a two-platform index."""
    ref = f"{registry.host}/base/busybox:1"
    remote.push(index(busybox_base("amd64"), busybox_base("arm64")), ref)
    return ref


def _app(base_ref: str, arch: str) -> Image:
    return app_image(image_from_registry(base_ref, Platform("linux", arch)))


def test_layout_passes_skopeo_and_umoci(base_ref: str, tmp_path: Path) -> None:
    img = _app(base_ref, "amd64")
    out = layout.write(img, tmp_path / "app-layout", tag="v1")
    back = layout.image_from_layout(out)
    assert back.digest == img.digest
    seen = check(back, f"oci:{out}:v1")
    assert seen["Labels"] == {"org.opencontainers.image.title": "app"}
    bundle = tmp_path / "bundle"
    done = subprocess.run(["umoci", "unpack", "--image", f"{out}:v1", str(bundle)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rootfs = bundle / "rootfs"
    assert (rootfs / "app" / "one.txt").read_text() == "layer-one"
    assert (rootfs / "bin" / "busybox").stat().st_mode & 0o111
    assert (rootfs / "bin" / "sh").readlink() == Path("busybox")
    assert (rootfs / "opt/mlpack/model/model.onnx").stat().st_uid == 1000
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"] == ["/app/bin/hello"]
    card = describe(str(out))["images"][0]["model_card"]
    assert card["name"] == "toy"


@pytest.mark.docker
def test_docker_archive_loads_and_runs(base_ref: str, tmp_path: Path, docker_engine: str) -> None:
    img = _app(base_ref, "amd64")
    tag = docker_tag()
    archive = tarball.write(img, tmp_path / "app.tar", tag)
    check(tarball.image_from_tarball(archive), f"docker-archive:{archive}")
    try:
        loaded = docker("load", "-i", str(archive))
        assert loaded.returncode == 0, loaded.stderr
        ran = docker("run", "--rm", tag)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == "hello from layer-one on x86_64"
    finally:
        docker("rmi", "-f", tag)


@pytest.mark.docker
def test_daemon_load_through_the_sdk(base_ref: str, docker_engine: str) -> None:
    img = _app(base_ref, "amd64")
    tag = docker_tag()
    try:
        image_id = daemon.load(img, tag)
        assert image_id == f"sha256:{img.config_blob.digest.hex}"
        ran = docker("run", "--rm", "--entrypoint", "/bin/sh", tag, "-c", "echo $APP; pwd")
        assert ran.stdout.split() == ["1", "/app"], ran.stderr
    finally:
        docker("rmi", "-f", tag)


def test_push_copies_back_with_skopeo(base_ref: str, registry, tmp_path: Path) -> None:
    img = _app(base_ref, "amd64")
    ref = f"{registry.host}/apps/app:1"
    pushed = remote.push(img, ref)
    assert pushed.digest == img.digest
    statuses = dict(pushed.blobs)
    assert [statuses[str(layer.digest)] for layer in img.layers] == ["mounted", "uploaded", "uploaded", "uploaded"]
    copy = tmp_path / "copied"
    done = subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{copy}:c"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    copied = layout.image_from_layout(copy)
    assert [layer.digest for layer in copied.layers] == [layer.digest for layer in img.layers]
    check(copied, f"oci:{copy}:c")
    check(image_from_registry(ref), f"docker://{ref}", "--tls-verify=false")


@pytest.mark.docker
@pytest.mark.qemu
def test_arm64_variant_runs_under_qemu(base_ref: str, registry, tmp_path: Path, docker_engine: str) -> None:
    amd, arm = _app(base_ref, "amd64"), _app(base_ref, "arm64")
    ref = f"{registry.host}/apps/multi:1"
    remote.push(index(amd, arm), ref)
    raw = json.loads(subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                                    capture_output=True, text=True, check=True, timeout=60).stdout)
    assert sorted(m["platform"]["architecture"] for m in raw["manifests"]) == ["amd64", "arm64"]
    pulled = image_from_registry(ref, "linux/arm64")
    assert pulled.digest == arm.digest
    tag = docker_tag()
    archive = tarball.write(pulled, tmp_path / "arm.tar", tag)
    try:
        assert docker("load", "-i", str(archive)).returncode == 0
        ran = docker("run", "--rm", tag)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == "hello from layer-one on aarch64"
    finally:
        docker("rmi", "-f", tag)
    check(pulled, f"docker://{ref}", "--tls-verify=false", "--override-arch", "arm64")
