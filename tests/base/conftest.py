"""Fixtures for base builds: the Debian archive named by this machine's apt sources, and caches.

Downloads go to a store shared across sessions (mlpack's cache dir: content-addressed, only verified files), so
CI downloads once and local runs are fast; plans and images go to a per-session cache, so every session builds.
"""

from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
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


@pytest.fixture(scope="module")
def mirror_copy(tmp_path_factory: pytest.TempPathFactory, debian_archive: str, downloads: Path) -> Path:
    """A file: copy of the archive with what a bookworm/amd64 base needs (from the verified download store)."""
    from mlpk.packager.base import BaseSpec, Cache, pipeline
    from mlpk.packager.base.archive import fetch, verified_release

    spec = BaseSpec(mirror=debian_archive)
    cache = Cache(tmp_path_factory.mktemp("plan-cache"), downloads=downloads)
    plan = pipeline.plan(spec, cache)
    pipeline.download(plan, cache)
    root = tmp_path_factory.mktemp("mirror")
    (repo,) = spec.repos()
    dists = root / "dists" / "bookworm"
    dists.mkdir(parents=True)
    (dists / "InRelease").write_bytes(fetch(repo.dists("InRelease")))
    ref = verified_release(repo).packages("amd64")
    (dists / ref.path).parent.mkdir(parents=True)
    shutil.copy(cache.downloads.path(ref.sha256, ".xz"), dists / ref.path)
    for package in plan.packages:
        target = root / package.url[len(debian_archive) + 1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(cache.downloads.path(package.sha256, ".deb"), target)
    return root


@dataclass
class Served:
    """The mirror copy over HTTP on loopback, with the path of every GET it answered (a real server that lets a
    test count what the builder fetched)."""

    url: str
    root: Path
    gets: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def served_mirror(mirror_copy: Path) -> Iterator[Served]:
    served = Served("", mirror_copy)

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(mirror_copy), **kwargs)  # type: ignore[arg-type]

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            served.gets.append(self.path)
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served
    server.shutdown()
    server.server_close()
