"""The deps layer's contents: wheels for another platform installed without running it."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from mlpk.packager import wheels
from mlpk.packager.errors import BuildError, ConfigError

EM_AARCH64, EM_X86_64 = 183, 62


def _elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", path
    return struct.unpack_from("<H", header, 18)[0]


def test_platform_tags_cover_every_manylinux_alias() -> None:
    arm = wheels.platform_tags("linux/arm64", "2.36")
    assert arm[0] == "manylinux_2_36_aarch64" and arm[-2:] == ["manylinux_2_17_aarch64", "manylinux2014_aarch64"]
    x86 = wheels.platform_tags("linux/amd64", "2.31")
    assert "manylinux_2_28_x86_64" in x86 and "manylinux_2_34_x86_64" not in x86
    assert x86[-2:] == ["manylinux2010_x86_64", "manylinux1_x86_64"]
    with pytest.raises(ConfigError, match="linux/s390x"):
        wheels.platform_tags("linux/s390x", "2.36")


@pytest.fixture(scope="module")
def arm64_deps(tmp_path_factory: pytest.TempPathFactory) -> wheels.Deps:
    dest = tmp_path_factory.mktemp("deps") / "site"
    return wheels.install(["onnxruntime==1.31.1", "numpy>=1.26"], dest, platform="linux/arm64", python="3.11",
                          glibc="2.36")


def test_arm64_wheels_install_on_x86(arm64_deps: wheels.Deps) -> None:
    root = arm64_deps.root
    capi = next((root / "onnxruntime" / "capi").glob("onnxruntime_pybind11_state*.so"))
    assert "aarch64" in capi.name and _elf_machine(capi) == EM_AARCH64
    names = {d.name.lower(): d for d in arm64_deps.distributions}
    assert {"onnxruntime", "numpy", "protobuf", "flatbuffers"} <= set(names)
    assert names["onnxruntime"].version == "1.31.1" and names["onnxruntime"].purl == "pkg:pypi/onnxruntime@1.31.1"
    assert all(d.license for d in arm64_deps.distributions), [d for d in arm64_deps.distributions if not d.license]


def test_pruned_what_no_runtime_imports(arm64_deps: wheels.Deps) -> None:
    root = arm64_deps.root
    assert not (root / "bin").exists() and not list(root.rglob("tests"))
    assert not (root / "onnxruntime" / "transformers").exists() and not (root / "numpy" / "f2py").exists()
    assert (root / "numpy" / "testing").is_dir(), "numpy.testing is part of numpy's import surface"
    assert arm64_deps.pruned_bytes > 10_000_000
    # Hash-based pycs (the host Python matches 3.11): no timestamp inside, so the layer stays reproducible.
    pyc = next(root.glob("numpy/__pycache__/__init__.cpython-311.pyc"))
    flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
    assert flags & 0b01, "expected a hash-based pyc (PEP 552)"


def test_unsatisfiable_requirement_is_a_build_error(tmp_path: Path) -> None:
    dest = tmp_path / "site"
    with pytest.raises(BuildError) as err:
        wheels.install(["onnxruntime==0.0.1"], dest, platform="linux/arm64", python="3.11", glibc="2.36")
    assert "linux/arm64" in str(err.value) and "onnxruntime==0.0.1" in str(err.value)
    assert not dest.exists() and list(tmp_path.iterdir()) == []


def test_existing_destination_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="already exists"):
        wheels.install(["numpy"], tmp_path, platform="linux/amd64", python="3.11", glibc="2.36")
