"""The deps layer's contents: a target's runtime requirements installed from wheels for ITS platform and Python,
without running the target (shared DESIGN.md, Verified: pip matches platform tags exactly, so every accepted tag
is listed).

    deps = wheels.install(["onnxruntime==1.31.1", "numpy"], dest, platform="linux/arm64", python="3.11",
                          glibc="2.36")
    deps.distributions      # name, version, licence and purl of every installed distribution, for the SBOM
    deps.lock               # the wheels it was installed from, pinned by the index's sha256 (mlpk.packager.locks)

    resolve (the index, pip's --dry-run --report) -> Lock -> fetch (wheel cache; verify, evict, download once)
      -> pip install --require-hashes --no-deps --no-index from the cache -> prune -> compile

Wheels are cached per (ABI, platform, glibc) and every use checks each against the lock (issue 18): the same lock
gives the same bytes, and a re-export with a lock works offline. Each wheelhouse keeps a record (RECORD) of the
sha256 each wheel had when last verified, for `bad_wheels`. What a runtime never needs is pruned (PRUNED says what
and why) and counted.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpk.packager import atomic, locations, locks, processes
from mlpk.packager.atomic import atomic_dir
from mlpk.packager.card import sha256_of
from mlpk.packager.errors import BuildError, ConfigError

ARCH = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}

# Paths (relative to the install root, fnmatch patterns) that no runtime imports, with the reason.
PRUNED: dict[str, str] = {
    "bin": "console scripts written for the build machine's interpreter, unusable in the image",
    "*/tests": "test suites of the packages",
    "*/*/tests": "test suites of the packages",
    "numpy/f2py": "numpy's Fortran wrapper generator, a build tool",
    "numpy/_core/include": "C headers for building extensions",
    "numpy/_core/lib": "static libraries for building extensions",
    "numpy/distutils": "numpy's build system",
    "onnxruntime/transformers": "onnxruntime's offline model optimizer for transformers",
    "onnxruntime/tools": "onnxruntime's offline conversion and profiling tools",
    "onnxruntime/quantization": "onnxruntime's offline quantizer (mlpack quantizes at build time)",
    "*.pyi": "type stubs",
    "*.h": "C headers",
    "*.pxd": "Cython declarations",
}


@dataclass(frozen=True, slots=True)
class Distribution:
    """One installed Python distribution, as the SBOM records it."""

    name: str
    version: str
    license: str
    summary: str

    @property
    def purl(self) -> str:
        """Its package URL (purl spec, type pypi: name lower-cased, '_' as '-')."""
        return f"pkg:pypi/{self.name.lower().replace('_', '-')}@{self.version}"


@dataclass(frozen=True, slots=True)
class Deps:
    """An installed deps tree: its root, what is in it, what pruning saved, and the lock it was installed from
    (`relock` says why that lock was resolved now, '' when a given one was re-used; `refetched` names the cached
    wheels that failed their hash and were downloaded again)."""

    root: Path
    platform: str
    python: str
    distributions: tuple[Distribution, ...]
    pruned_bytes: int
    compiled: bool
    lock: locks.Lock
    relock: str = ""
    refetched: tuple[str, ...] = ()


def platform_tags(platform: str, glibc: str) -> list[str]:
    """Every wheel platform tag a linux `platform` with `glibc` accepts, newest first (PEP 600 and its aliases)."""
    try:
        arch = ARCH[platform]
    except KeyError:
        raise ConfigError(f"no wheel platform for '{platform}'; supported: {', '.join(ARCH)}") from None
    major, minor = (int(part) for part in glibc.split("."))
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 16, -1)]
    tags.append(f"manylinux2014_{arch}")  # = manylinux_2_17
    if arch == "x86_64":
        tags += [f"manylinux2010_{arch}", f"manylinux1_{arch}"]  # = 2_12 and 2_5
    return tags


def _pip(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    return processes.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env,
                         check=False)


def _last_error(done: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (errors or lines or ["pip failed without a message"])[-1]


def _target_flags(platform: str, python: str, glibc: str) -> list[str]:
    abi = "cp" + python.replace(".", "")
    return [f"--python-version={python}", "--implementation=cp", f"--abi={abi}", "--only-binary=:all:",
            *(f"--platform={t}" for t in platform_tags(platform, glibc))]


def _sources(index: str, extra_index: str) -> list[str]:
    return ([f"--index-url={index}"] if index else []) + ([f"--extra-index-url={extra_index}"] if extra_index else [])


def _no_wheels_hint(platform: str) -> str:
    if ARCH.get(platform) == "aarch64":
        return "check the versions; GPU wheels for Jetson come from NVIDIA's index (--wheel-index)"
    return "check the versions, or give an index with --wheel-index"


def resolve(requirements: Sequence[str], *, platform: str, python: str, glibc: str, index: str = "",
            extra_index: str = "") -> locks.Lock:
    """Resolve `requirements` for (`platform`, CPython `python`, `glibc`) against the index into a lock: every
    distribution pinned to its version and to the sha256 the index published for its wheel.

    pip's installation report (pip >= 22.2, `install --dry-run --report`) names each chosen wheel and its
    `download_info.archive_info.hashes`; with PEP 658 metadata pip downloads nothing to resolve.
    """
    reqs = list(requirements)
    with tempfile.TemporaryDirectory(prefix="mlpack-resolve-") as tmp:
        report = Path(tmp) / "report.json"
        done = _pip(["install", "-q", "--dry-run", "--ignore-installed", "--report", str(report), "--target",
                     str(Path(tmp) / "site"), *_sources(index, extra_index), *_target_flags(platform, python, glibc),
                     *reqs])
        if done.returncode != 0:
            raise BuildError(f"no wheels for {platform} / CPython {python} (glibc {glibc}) satisfy {', '.join(reqs)}: "
                             f"{_last_error(done)}", hint=_no_wheels_hint(platform))
        chosen = json.loads(report.read_text())["install"]
    pins = []
    for item in chosen:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        info = item["download_info"]
        filename = urllib.parse.unquote(info["url"].split("#", 1)[0].rsplit("/", 1)[-1])
        if item.get("is_direct"):
            raise BuildError(f"{name} is required by a direct URL ({info['url']}); mlpack locks only wheels chosen "
                             "from an index", hint="require it by name and version, from an index (--wheel-index)")
        archive = info.get("archive_info", {})
        sha256 = archive.get("hashes", {}).get("sha256") or archive.get("hash", "").removeprefix("sha256=")
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise BuildError(f"the index published no sha256 for {filename} ({name} {version}), so it cannot be "
                             "locked", hint="use an index that publishes wheel hashes (--wheel-index URL)")
        pins.append(locks.Pin(name, version, filename, sha256))
    pins.sort(key=lambda pin: locks.canonical(pin.name))
    return locks.Lock(platform, python, glibc, tuple(reqs), tuple(pins))


def lock_for(requirements: Sequence[str], *, platform: str, python: str, glibc: str, index: str = "",
             extra_index: str = "", previous: locks.Lock | None = None) -> tuple[locks.Lock, str]:
    """`previous` while it still answers the requirements, else a fresh resolution; with why a resolution ran
    ('' when `previous` was re-used)."""
    if previous is not None:
        why = previous.stale(requirements, platform=platform, python=python, glibc=glibc)
        if not why:
            return previous, ""
        why = f"resolved again: {why}"
    else:
        why = "resolved: no lock yet"
    return resolve(requirements, platform=platform, python=python, glibc=glibc, index=index,
                   extra_index=extra_index), why


def install(requirements: list[str] | tuple[str, ...], dest: Path, *, platform: str, python: str, glibc: str,
            index: str = "", extra_index: str = "", cache: Path | None = None, compile_bytecode: bool = True,
            image_path: str = "/", lock: locks.Lock | None = None) -> Deps:
    """Install `requirements` as wheels for (`platform`, CPython `python`, `glibc`) into `dest`, then prune.

    The wheels are the ones `lock` pins (while it answers the requirements; else a fresh resolution), each checked
    against its sha256 before use; a cached wheel that fails the check is evicted and downloaded once more (`fetch`).
    `dest` must not exist; it is written through a temporary sibling and renamed, so an interrupted install leaves
    nothing behind. `image_path` is where `dest` will sit in the image: byte-code records source paths from there.
    """
    if dest.exists():
        raise BuildError(f"{dest} already exists", hint="remove it or choose another destination")
    platform_tags(platform, glibc)  # a platform without wheels is a ConfigError before any work
    abi = "cp" + python.replace(".", "")
    house = (cache / f"{abi}-{ARCH[platform]}-glibc{glibc}") if cache else wheelhouse(platform, python, glibc)
    lock, relock = lock_for(requirements, platform=platform, python=python, glibc=glibc, index=index,
                            extra_index=extra_index, previous=lock)
    refetched = fetch(lock, house, index=index, extra_index=extra_index)
    with atomic_dir(dest) as tmp, tempfile.TemporaryDirectory(prefix="mlpack-lock-") as folder:
        # Offline, from the wheelhouse, and pip checks each file against the lock's hash once more as it reads it.
        lock_file = Path(folder) / "lock.txt"
        lock_file.write_text(lock.text())
        done = _pip(["install", "-q", "--no-compile", "--no-index", f"--find-links={house}", "--require-hashes",
                     "--no-deps", "--target", str(tmp), *_target_flags(platform, python, glibc), "-r",
                     str(lock_file)])
        if done.returncode != 0:
            raise BuildError(f"installing {', '.join(requirements)} for {platform} from its lock failed: "
                             f"{_last_error(done)}",
                             hint="run the export again (a cached wheel may have changed while it ran)")
        pruned = prune(tmp)
        compiled = compile_bytecode and python == f"{sys.version_info[0]}.{sys.version_info[1]}"
        if compiled:
            compile_tree(tmp, image_path)
        found = distributions(tmp)
    return Deps(dest, platform, python, found, pruned, compiled, lock, relock, refetched)


def fetch(lock: locks.Lock, house: Path, *, index: str = "", extra_index: str = "") -> tuple[str, ...]:
    """Make `house` hold every wheel of `lock` with the lock's bytes; return the wheels it evicted and fetched again.

    Each wheel is checked against the lock's sha256 on every use. One that fails is evicted and downloaded once
    more, like a missing one; a download is checked by pip (--require-hashes) and again here before it enters the
    house (by rename, so a concurrent install never sees half a file). Still wrong: BuildError with both digests.
    """
    house.mkdir(parents=True, exist_ok=True)
    missing: list[locks.Pin] = []
    evicted: list[str] = []
    good: dict[str, str] = {}
    for pin in lock.pins:
        path = house / pin.filename
        if path.is_file():
            if sha256_of(path) == pin.sha256:
                good[pin.filename] = pin.sha256
                continue
            path.unlink()
            evicted.append(pin.filename)
        missing.append(pin)
    try:
        if missing:
            good.update(_download(lock, missing, house, index, extra_index))
    finally:
        _record(house, good, forget=evicted)
    return tuple(evicted)


def _download(lock: locks.Lock, pins: list[locks.Pin], house: Path, index: str, extra_index: str) -> dict[str, str]:
    subset = locks.Lock(lock.platform, lock.python, lock.glibc, lock.requirements, tuple(pins))
    with tempfile.TemporaryDirectory(prefix=".download-", dir=house) as tmp:
        lock_file = Path(tmp) / "lock.txt"
        lock_file.write_text(subset.text())
        into = Path(tmp) / "wheels"
        done = _pip(["download", "-q", "--no-deps", "--require-hashes", "-d", str(into),
                     *_sources(index, extra_index), *_target_flags(lock.platform, lock.python, lock.glibc),
                     "-r", str(lock_file)])
        mismatch = _HASH_MISMATCH.search(done.stderr)
        if mismatch:
            pin = next((p for p in pins if p.sha256 == mismatch[2]), None)
            name = pin.filename if pin else mismatch[1]
            raise _bad_wheel(name, mismatch[2], mismatch[3])
        if done.returncode != 0:
            raise BuildError(f"downloading {', '.join(p.filename for p in pins)} for {lock.platform} failed: "
                             f"{_last_error(done)}", hint=_no_wheels_hint(lock.platform))
        fetched = {}
        for pin in pins:
            got = into / pin.filename
            if not got.is_file():
                raise BuildError(f"the index did not give {pin.filename} ({pin.name} {pin.version}) that the lock "
                                 f"pins for {lock.platform}", hint=_no_wheels_hint(lock.platform))
            actual = sha256_of(got)
            if actual != pin.sha256:
                raise _bad_wheel(pin.filename, pin.sha256, actual)
            os.replace(got, house / pin.filename)
            fetched[pin.filename] = pin.sha256
    return fetched


# pip's report of a file that fails --require-hashes (pip/_internal/exceptions.py, HashMismatch.body)
_HASH_MISMATCH = re.compile(r"^\s*(\S+)==\S+ from .*?\n\s*Expected sha256 ([0-9a-f]{64})\n\s*Got\s+([0-9a-f]{64})",
                            re.MULTILINE)


def _bad_wheel(name: str, expected: str, actual: str) -> BuildError:
    return BuildError(f"{name} fetched again from the index still does not match its lock: sha256 {actual}, the lock "
                      f"pins {expected}", hint="check --wheel-index (the index may have changed the file), or "
                      "remove the export's locks/ folder to resolve the requirements again")


RECORD = "verified.sha256"  # in each wheelhouse, `sha256sum` format: the bytes each wheel had when last verified


def _record(house: Path, good: dict[str, str], *, forget: list[str]) -> None:
    """Add `good` (file -> sha256) to the house's record and drop `forget`; atomic, so readers see a whole file."""
    known = _recorded(house)
    if all(known.get(name) == sha for name, sha in good.items()) and not set(forget) & set(known):
        return
    known = {name: sha for name, sha in known.items() if name not in forget} | good
    atomic.write_text(house / RECORD, "".join(f"{sha}  {name}\n" for name, sha in sorted(known.items())))


def _recorded(house: Path) -> dict[str, str]:
    try:
        text = (house / RECORD).read_text()
    except FileNotFoundError:
        return {}
    found = {}
    for line in text.splitlines():
        sha, _, name = line.partition("  ")
        if re.fullmatch(r"[0-9a-f]{64}", sha) and name:
            found[name] = sha
    return found


def bad_wheels(house: Path) -> list[Path]:
    """The wheels in `house` whose bytes no longer match the sha256 recorded when they were last verified against a
    lock (for `mlpack cache verify`); wheels never verified are not listed."""
    return [house / name for name, sha in sorted(_recorded(house).items())
            if (house / name).is_file() and sha256_of(house / name) != sha]


def wheelhouse(platform: str, python: str, glibc: str) -> Path:
    """The wheel cache for one (platform, Python, glibc): what an offline install can use."""
    if platform not in ARCH:
        raise ConfigError(f"no wheel platform for '{platform}'; supported: {', '.join(ARCH)}")
    return locations.cache_dir() / "wheels" / f"cp{python.replace('.', '')}-{ARCH[platform]}-glibc{glibc}"


def prune(root: Path) -> int:
    """Remove what no runtime imports (PRUNED) under `root`; return the bytes saved."""
    saved = 0
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts)):
        if not path.exists() and not path.is_symlink():
            continue  # inside something already removed
        rel = path.relative_to(root).as_posix()
        if any(fnmatch.fnmatchcase(rel, pattern) for pattern in PRUNED):
            saved += _size(path)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    return saved


def _size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def compile_tree(root: Path, image_path: str) -> None:
    """Byte-compile with hash-based pycs (PEP 552, unchecked): no mtimes inside, and source paths as they will be in
    the image (`image_path`), not where the build staged them, so layers stay reproducible; and the read-only image
    never needs to write a cache at cold start."""
    for source in sorted(root.rglob("*.py")):
        shown = f"{image_path.rstrip('/')}/{source.relative_to(root).as_posix()}"
        try:
            py_compile.compile(str(source), dfile=shown, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        except py_compile.PyCompileError:
            continue  # a file the interpreter cannot compile is never imported either (e.g. py2 leftovers)


def distributions(root: Path) -> tuple[Distribution, ...]:
    """The distributions installed under `root`, sorted by name."""
    found = {}
    for dist in importlib.metadata.distributions(path=[str(root)]):
        meta: Any = dist.metadata  # an email.message.Message (importlib.metadata's PackageMetadata protocol lacks get)
        name = meta["Name"] or ""
        licence = meta.get("License-Expression") or meta.get("License") or ""
        if not licence or len(licence) > 100:  # some projects put the whole licence text here
            classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License")]
            licence = " OR ".join(classifiers) if classifiers else licence[:100]
        found[name.lower()] = Distribution(name, meta["Version"] or "", licence, meta.get("Summary") or "")
    return tuple(found[k] for k in sorted(found))
