"""The deps layer's contents: wheels for another platform installed without running it, from a lock that pins each
wheel by the index's sha256, every cached wheel checked on every use (issue 18).

These tests use the real pip and the real index that pip is configured with; the small-wheel tests keep their wheel
cache in a temporary directory, so tampering with it touches nothing shared."""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from pathlib import Path

import pytest

from mlpk.packager import locks, wheels
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
    pins = {p.name.lower(): p for p in arm64_deps.lock.pins}
    assert set(pins) == set(names) and pins["onnxruntime"].version == "1.31.1"
    assert all(pins[n].version == names[n].version for n in names), "the lock pins what was installed"
    assert arm64_deps.relock == "resolved: no lock yet"
    house = wheels.wheelhouse("linux/arm64", "3.11", "2.36")
    onnxruntime = house / pins["onnxruntime"].filename
    assert hashlib.sha256(onnxruntime.read_bytes()).hexdigest() == pins["onnxruntime"].sha256


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


SMALL = ["anyio>=4"]  # pure-Python wheels with a dependency (idna), small enough to fetch in every run
SMALL_TARGET = {"platform": "linux/amd64", "python": "3.11", "glibc": "2.36"}


@pytest.fixture(scope="module")
def small_lock() -> locks.Lock:
    return wheels.resolve(SMALL, **SMALL_TARGET)


def _tree(root: Path) -> dict[str, tuple[int, bytes]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_mode, p.read_bytes() if p.is_file() else b"")
            for p in sorted(root.rglob("*"))}


def _house(cache: Path) -> Path:
    return cache / "cp311-x86_64-glibc2.36"


def test_lock_pins_versions_and_the_index_hashes(small_lock: locks.Lock, tmp_path: Path) -> None:
    names = {locks.canonical(p.name) for p in small_lock.pins}
    assert {"anyio", "idna"} <= names, "dependencies are pinned too"
    text = small_lock.text()
    assert text.startswith(locks.HEADER) and "# platform: linux/amd64\n" in text and "# requirement: anyio>=4\n" in text
    for pin in small_lock.pins:
        assert f"{pin.name}=={pin.version} --hash=sha256:{pin.sha256}  # {pin.filename}" in text
    assert locks.parse(text, "lock") == small_lock
    # The hashes are the ones of the files the index serves: fetch them and hash them here.
    house = tmp_path / "house"
    assert wheels.fetch(small_lock, house) == ()
    for pin in small_lock.pins:
        assert hashlib.sha256((house / pin.filename).read_bytes()).hexdigest() == pin.sha256
    assert small_lock.stale(SMALL, **SMALL_TARGET) == ""
    assert "requirements changed" in small_lock.stale(["anyio>=4", "idna<4"], **SMALL_TARGET)
    assert "platform linux/amd64, not linux/arm64" in small_lock.stale(SMALL, **{**SMALL_TARGET,
                                                                                "platform": "linux/arm64"})


def test_one_lock_installs_identical_trees(small_lock: locks.Lock, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = wheels.install(SMALL, tmp_path / "a", **SMALL_TARGET, cache=cache, lock=small_lock)
    second = wheels.install(SMALL, tmp_path / "b", **SMALL_TARGET, cache=cache, lock=small_lock)
    assert first.relock == second.relock == "", "a lock that answers the requirements is re-used"
    assert first.lock == second.lock == small_lock
    assert _tree(first.root) == _tree(second.root) and (first.root / "anyio").is_dir()
    assert wheels.bad_wheels(_house(cache)) == []


def test_a_tampered_cached_wheel_is_evicted_and_fetched_again(small_lock: locks.Lock, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    clean = wheels.install(SMALL, tmp_path / "clean", **SMALL_TARGET, cache=cache, lock=small_lock)
    idna = next(p for p in small_lock.pins if locks.canonical(p.name) == "idna")
    wheel = _house(cache) / idna.filename
    tampered = bytearray(wheel.read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF  # same size, same name: only the bytes tell
    wheel.write_bytes(bytes(tampered))
    assert wheels.bad_wheels(_house(cache)) == [wheel]

    again = wheels.install(SMALL, tmp_path / "again", **SMALL_TARGET, cache=cache, lock=small_lock)
    assert again.refetched == (idna.filename,)
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == idna.sha256, "the clean bytes are back in the cache"
    assert _tree(again.root) == _tree(clean.root)
    assert wheels.bad_wheels(_house(cache)) == []
    third = wheels.install(SMALL, tmp_path / "third", **SMALL_TARGET, cache=cache, lock=small_lock)
    assert third.refetched == (), "fetched once: the repaired entry is used as it is"


def test_a_lock_hash_no_download_satisfies_is_a_one_line_build_error(small_lock: locks.Lock, tmp_path: Path) -> None:
    idna = next(p for p in small_lock.pins if locks.canonical(p.name) == "idna")
    wrong = dataclasses.replace(small_lock, pins=tuple(dataclasses.replace(p, sha256="0" * 64) if p == idna else p
                                                       for p in small_lock.pins))
    dest = tmp_path / "out" / "site"
    dest.parent.mkdir()
    with pytest.raises(BuildError) as err:
        wheels.install(SMALL, dest, **SMALL_TARGET, cache=tmp_path / "cache", lock=wrong)
    line = err.value.one_line()
    assert "\n" not in line and idna.filename in line and "0" * 64 in line and idna.sha256 in line, line
    assert "--wheel-index" in (err.value.hint or "")
    assert list(dest.parent.iterdir()) == [], "nothing half-installed is left"
    assert not (_house(tmp_path / "cache") / idna.filename).exists(), "no wheel with unlocked bytes is kept"


def test_a_lock_for_other_requirements_is_resolved_again(small_lock: locks.Lock, tmp_path: Path) -> None:
    deps = wheels.install(["idna>=3"], tmp_path / "site", **SMALL_TARGET, cache=tmp_path / "cache", lock=small_lock)
    assert deps.relock.startswith("resolved again: the requirements changed (locked: anyio>=4; now: idna>=3)")
    assert [locks.canonical(p.name) for p in deps.lock.pins] == ["idna"] and deps.lock.requirements == ("idna>=3",)


def test_a_lock_file_mlpack_did_not_write_is_a_config_error(small_lock: locks.Lock, tmp_path: Path) -> None:
    path = tmp_path / "linux-amd64.txt"
    path.write_text(small_lock.text().replace("--hash=sha256:", "--hash=md5:", 1))
    with pytest.raises(ConfigError, match=rf"{path}:6 is not a pin") as err:
        locks.read(path)
    assert str(path) in (err.value.hint or "")
    path.write_text("numpy==2.4.6\n")
    with pytest.raises(ConfigError, match="is not an mlpack wheel lock"):
        locks.read(path)
