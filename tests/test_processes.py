"""Children that die with mlpack: a `kill -9` of an export takes its pip child with it (issue 18)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlpk.packager import processes

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # field 4, after the command name in parentheses
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its exit status waits for a reaper


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_a_pip_child_dies_with_its_kill_9ed_parent(tmp_path: Path) -> None:
    """A parent runs pip the way wheels.install does, against an index on loopback that accepts and never answers,
    so pip is certainly running when the parent is killed."""
    with socket.socket() as index:
        index.bind(("127.0.0.1", 0))
        index.listen()
        index.settimeout(60)
        url = f"http://127.0.0.1:{index.getsockname()[1]}/simple"
        code = ("import sys; from pathlib import Path; from mlpk.packager import wheels\n"
                f"wheels._pip(['download', '--no-deps', '--no-cache-dir', '--index-url', {url!r}, '-d', "
                f"{str(tmp_path / 'wheels')!r}, 'idna'])\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull  # only the silent index: no configured index or find-links answers
        parent = subprocess.Popen([sys.executable, "-c", code], env=env)
        try:
            connection, _ = index.accept()
            children = _children(parent.pid)
            assert len(children) == 1, children
            pip = children[0]
            assert b"pip\0download" in Path(f"/proc/{pip}/cmdline").read_bytes()
            os.kill(parent.pid, signal.SIGKILL)
            parent.wait(timeout=10)
            assert _gone_within(pip, 10), f"pip ({pip}) outlived its killed parent"
            connection.close()
        finally:
            parent.kill()
            parent.wait()


def test_an_unguarded_child_outlives_its_parent_which_the_check_above_would_see() -> None:
    code = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", code])
    child = 0
    try:
        deadline = time.monotonic() + 10
        while not child and time.monotonic() < deadline:
            child = next(iter(_children(parent.pid)), 0)
            time.sleep(0.05)
        assert child
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        assert not _gone_within(child, 1), "without the guard the child keeps running"
    finally:
        parent.kill()
        parent.wait()
        if child:
            os.kill(child, signal.SIGKILL)


def test_a_guarded_run_keeps_subprocess_semantics(tmp_path: Path) -> None:
    done = processes.run([sys.executable, "-c", "import os, sys; print(os.getppid()); sys.exit(3)"],
                         capture_output=True, text=True, check=False)
    assert done.returncode == 3 and int(done.stdout) == os.getpid(), "the guard execs: the child is our own"
    with pytest.raises(FileNotFoundError):
        processes.run(["mlpack-no-such-tool"], check=False)
