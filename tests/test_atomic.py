"""The one write-then-rename helper (issue 16: six hand-rolled variants with five temporary-name schemes, and a
sweep that cleaned only its own destination's leftovers): temporaries are named by their writer (owners.Owner), and
a write sweeps every temporary in its folder whose writer is gone, whatever destination it was for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlpk.packager import atomic
from mlpk.packager.owners import Owner


def _gone() -> Owner:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return Owner(int(done.stdout), 1)


def test_a_write_sweeps_what_killed_writers_left_for_any_destination(tmp_path: Path) -> None:
    dead, me = _gone(), Owner.current()
    left = [tmp_path / f".report.json.tmp-{dead.token}-a1", tmp_path / f".other.tar.tmp-{dead.token}-b2"]
    folder = tmp_path / f".oci.tmp-{dead.token}-c3"
    folder.mkdir()
    (folder / "index.json").write_text("{}")
    live = tmp_path / f".other.tar.tmp-{me.token}-d4"  # a writer that still runs (this process)
    legacy_dead = tmp_path / f".old.tmp-{dead.pid}-xyz"  # named before owners (pid only): gone with its pid
    for path in (*left, live, legacy_dead):
        path.write_bytes(b"half")
    atomic.write_text(tmp_path / "report.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["report.json", live.name])
    assert (tmp_path / "report.json").read_text() == "{}"


def test_a_failed_write_leaves_the_destination_as_it_was(tmp_path: Path) -> None:
    dest = tmp_path / "out.txt"
    dest.write_text("before")
    with pytest.raises(RuntimeError), atomic.atomic_file(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    folder = tmp_path / "layout"
    with pytest.raises(RuntimeError), atomic.atomic_dir(folder) as tmp:
        (tmp / "blob").write_text("half")
        raise RuntimeError("killed")
    assert dest.read_text() == "before" and not folder.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic.atomic_dir(folder) as tmp:
        (tmp / "index.json").write_text("{}")
    with atomic.atomic_dir(folder) as tmp:  # replaces the earlier one as a whole
        (tmp / "oci-layout").write_text("{}")
    assert sorted(p.name for p in folder.iterdir()) == ["oci-layout"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layout", "out.txt"]
