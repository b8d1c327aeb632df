"""The deps layer's contents: a target's runtime requirements installed from wheels for ITS platform and Python,
without running the target (shared DESIGN.md, Verified: pip matches platform tags exactly, so every accepted tag
is listed).

    deps = wheels.install(["onnxruntime==1.31.1", "numpy"], dest, platform="linux/arm64", python="3.11",
                          glibc="2.36")
    deps.distributions      # name, version, licence and purl of every installed distribution, for the SBOM

Wheels are downloaded into a cache per (ABI, platform) and installed from it, so an unchanged re-export works
offline. What a runtime never needs is pruned (PRUNED says what and why) and counted.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import os
import py_compile
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mlpk.packager import locations
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
    """An installed deps tree: its root, what is in it, and what pruning saved."""

    root: Path
    platform: str
    python: str
    distributions: tuple[Distribution, ...]
    pruned_bytes: int
    compiled: bool


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
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env,
                          check=False)


def _last_error(done: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (errors or lines or ["pip failed without a message"])[-1]


def install(requirements: list[str] | tuple[str, ...], dest: Path, *, platform: str, python: str, glibc: str,
            index: str = "", extra_index: str = "", cache: Path | None = None, compile_bytecode: bool = True,
            image_path: str = "/") -> Deps:
    """Install `requirements` as wheels for (`platform`, CPython `python`, `glibc`) into `dest`, then prune.

    `dest` must not exist; it is written through a temporary sibling and renamed, so an interrupted install leaves
    nothing behind. `image_path` is where `dest` will sit in the image: byte-code records source paths from there.
    """
    if dest.exists():
        raise BuildError(f"{dest} already exists", hint="remove it or choose another destination")
    abi = "cp" + python.replace(".", "")
    tags = platform_tags(platform, glibc)
    house = (cache / f"{abi}-{ARCH[platform]}-glibc{glibc}") if cache else wheelhouse(platform, python, glibc)
    house.mkdir(parents=True, exist_ok=True)
    target = [f"--python-version={python}", "--implementation=cp", f"--abi={abi}", "--only-binary=:all:",
              *(f"--platform={t}" for t in tags)]
    reqs = list(requirements)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    # First from the wheel cache alone (offline); when it lacks something, download into it from the index.
    done = _pip(["install", "-q", "--no-compile", "--no-index", f"--find-links={house}", "--target", str(tmp),
                 *target, *reqs])
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        sources = ([f"--index-url={index}"] if index else []) + ([f"--extra-index-url={extra_index}"]
                                                                 if extra_index else [])
        fetched = _pip(["download", "-q", "-d", str(house), *sources, *target, *reqs])
        if fetched.returncode != 0:
            raise BuildError(
                f"no wheels for {platform} / CPython {python} (glibc {glibc}) satisfy {', '.join(reqs)}: "
                f"{_last_error(fetched)}",
                hint="check the versions; GPU wheels for Jetson come from NVIDIA's index (--wheel-index)"
                if "aarch64" in ARCH[platform] else "check the versions, or give an index with --wheel-index")
        done = _pip(["install", "-q", "--no-compile", "--no-index", f"--find-links={house}", "--target",
                     str(tmp), *target, *reqs])
        if done.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise BuildError(f"installing {', '.join(reqs)} for {platform} failed: {_last_error(done)}")
    try:
        pruned = prune(tmp)
        compiled = compile_bytecode and python == f"{sys.version_info[0]}.{sys.version_info[1]}"
        if compiled:
            compile_tree(tmp, image_path)
        found = distributions(tmp)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Deps(dest, platform, python, found, pruned, compiled)


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
        meta = dist.metadata
        name = meta["Name"] or ""
        licence = meta.get("License-Expression") or meta.get("License") or ""
        if not licence or len(licence) > 100:  # some projects put the whole licence text here
            classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License")]
            licence = " OR ".join(classifiers) if classifiers else licence[:100]
        found[name.lower()] = Distribution(name, meta["Version"] or "", licence, meta.get("Summary") or "")
    return tuple(found[k] for k in sorted(found))
