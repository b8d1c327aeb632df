"""Run folders and temporary blobs (issue 18): what a live process holds is never swept, however old; what a killed
one left goes at the next sweep. The processes are real ones, killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlpk.packager import runs
from mlpk.packager.oci.cache import BlobCache
from tests.conftest import REPO

HOLD_BLOB = """
import sys, time
from pathlib import Path
from mlpk.packager.oci.cache import BlobCache
with BlobCache(Path(sys.argv[1])).writer() as pending:
    pending.file.write(b"partial")
    pending.file.flush()
    print(pending.tmp, flush=True)
    time.sleep(120)
"""
HOLD_FOLDER = """
import sys, time
from pathlib import Path
from mlpk.packager import runs
with runs.folder("test", near=Path(sys.argv[1])) as place:
    print(place, flush=True)
    time.sleep(120)
"""


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLPACK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def holder() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes started by a test, killed at its end if it did not."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _hold(code: str, arg: Path, holder: list[subprocess.Popen[str]]) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen([sys.executable, "-c", code, str(arg)], cwd=REPO, env=os.environ.copy(),
                            stdout=subprocess.PIPE, text=True)
    holder.append(proc)
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_a_live_writers_temporary_blob_is_never_pruned(tmp_path: Path, holder) -> None:
    blobs = BlobCache(tmp_path / "cache" / "blobs")
    proc, tmp = _hold(HOLD_BLOB, blobs.root, holder)
    os.utime(tmp, (0, 0))  # untouched since 1970: an age threshold would take it
    assert blobs.prune_tmp() == 0 and tmp.read_bytes() == b"partial"
    _kill(proc)
    assert blobs.prune_tmp() == 1 and list((blobs.root / "tmp").iterdir()) == []


def test_a_live_runs_folder_is_kept_and_a_killed_ones_swept(tmp_path: Path, cache: Path, holder) -> None:
    proc, place = _hold(HOLD_FOLDER, tmp_path, holder)
    assert place.parent == tmp_path and place.name.startswith(".mlpack-test-") and place.is_dir()
    (place / "tmp" / "work").write_bytes(b"x" * 1000)
    assert runs.sweep().folders == 0 and place.is_dir()
    _kill(proc)
    assert place.is_dir()  # nothing ran its cleanup
    assert runs.sweep().folders == 1 and not place.exists() and list((cache / "runs").iterdir()) == []


def test_the_next_run_sweeps_before_it_starts(tmp_path: Path, cache: Path, holder) -> None:
    proc, killed = _hold(HOLD_FOLDER, tmp_path, holder)
    _kill(proc)
    with runs.folder("test", near=tmp_path) as place:
        assert not killed.exists()
        assert [p.name for p in (cache / "runs").iterdir()] == [f"{place.name.removeprefix('.mlpack-test-')}.lock"]
    assert list(tmp_path.glob(".mlpack-*")) == [] and list((cache / "runs").iterdir()) == []


def test_temporary_files_of_a_run_live_in_its_folder(tmp_path: Path) -> None:
    before = (tempfile.gettempdir(), os.environ.get("TMPDIR"))
    with runs.folder("test") as place:
        assert Path(tempfile.mkdtemp()).parent == place / "tmp"
        assert os.environ["TMPDIR"] == str(place / "tmp")
        child = subprocess.run([sys.executable, "-c", "import tempfile; print(tempfile.gettempdir())"],
                               capture_output=True, text=True, check=True)
        assert child.stdout.strip() == str(place / "tmp")
    assert not place.exists() and (tempfile.gettempdir(), os.environ.get("TMPDIR")) == before


def test_who_owns_a_file(tmp_path: Path) -> None:
    me = runs.Owner.current()
    assert me.alive() and runs.Owner.from_name(f"{me.token}-abc") == me
    assert runs.Owner.from_name("12345-killed") is None  # older names carry no start time: not judged here
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    gone = runs.Owner(int(done.stdout), 1)
    assert not gone.alive()
    reused = runs.Owner(me.pid, me.start + 1)  # the same pid, started at another time: another process
    assert not reused.alive()
    unlocked_mine = tmp_path / f"{me.token}-x"
    unlocked_mine.write_bytes(b"")  # a writer between creating its file and locking it
    assert not runs.orphaned(unlocked_mine)
    dead = tmp_path / f"{gone.token}-x"
    dead.write_bytes(b"")
    assert runs.orphaned(dead)
    with dead.open("rb") as held:
        runs.lock(held.fileno())  # held, by a process that runs: never an orphan, whatever the name says
        assert not runs.orphaned(dead)
