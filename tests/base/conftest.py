"""Fixtures for base builds: the Debian archive named by this machine's apt sources, and caches.

Downloads go to a store shared across sessions (mlpack's cache dir: content-addressed, only verified files), so
CI downloads once and local runs are fast; plans and images go to a per-session cache, so every session builds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest

from mlpk.packager import locations
from tests.conftest import IN_CI


@pytest.fixture(scope="session")
def debian_archive() -> str:
    """The URI of the apt sources' Debian archive, once its bookworm InRelease answered."""
    from mlpk.packager.base import archive, sources
    from mlpk.packager.errors import MlpackError

    try:
        repo = sources.discover("bookworm")[0]
        archive.fetch(repo.dists("InRelease"))
    except MlpackError as err:
        message = f"the Debian archive is not reachable: {err.one_line()}"
        if IN_CI:
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)
    return repo.uri


@pytest.fixture(scope="session")
def downloads() -> Path:
    return locations.cache_dir() / "base" / "downloads"


@pytest.fixture(scope="session")
def base_cache(tmp_path_factory: pytest.TempPathFactory, downloads: Path, debian_archive: str) -> object:
    from mlpk.packager.base import Cache

    return Cache(tmp_path_factory.mktemp("base-cache"), downloads=downloads)


@pytest.fixture(scope="session")
def built(base_cache: object) -> Callable[[str, str], object]:
    """built(suite, arch) -> BaseImage, built once per session."""
    from mlpk.packager.base import BaseSpec, build

    @functools.cache
    def make(suite: str, arch: str) -> object:
        return build(BaseSpec(suite=suite, arch=arch), base_cache)  # type: ignore[arg-type]

    return make
