"""Child processes that die with mlpack: a killed export must not leave a `pip install` (or any tool it started)
writing on.

    done = processes.run([sys.executable, "-m", "pip", "download", ...], capture_output=True, text=True)

On Linux the child asks the kernel for SIGKILL when its parent dies (prctl(2), PR_SET_PDEATHSIG), so even a
`kill -9` of mlpack, which runs no Python cleanup, takes the child with it. The request is made by a short Python
guard that then execs the real command (the setting survives execve), not in a `preexec_fn`, which the subprocess
docs call unsafe while other threads run (the CLI's progress display is one). The guard checks that its parent is
still the process that started it, which closes the window between fork and prctl. Elsewhere the command runs
as is.

prctl(2) ties the signal to the parent *thread*: start children from a thread that outlives them (`run` blocks its
caller's thread until the child exits, so it always does).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

# argv: GUARD PARENT_PID SIGNAL COMMAND... (PR_SET_PDEATHSIG = 1, linux/prctl.h; SIGKILL = 9)
GUARD = (
    "import ctypes, os, sys\n"
    "if ctypes.CDLL(None, use_errno=True).prctl(1, int(sys.argv[2]), 0, 0, 0) != 0:\n"
    "    sys.exit(f'mlpack: prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}')\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(137)  # the parent died before the guard was in place\n"
    "os.execvp(sys.argv[3], sys.argv[3:])\n"
)


def guarded(args: Sequence[str], path: str | None = None, death_signal: int = signal.SIGKILL) -> list[str]:
    """`args` behind the guard, for a child of this process that gets `death_signal` when this process dies
    (SIGKILL by default; SIGTERM lets a daemon shut down cleanly). A command not found on `path` (default $PATH)
    raises FileNotFoundError here, as subprocess would, rather than in the child."""
    if not sys.platform.startswith("linux"):
        return list(args)
    if shutil.which(args[0], path=path) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), args[0])
    return [sys.executable, "-c", GUARD, str(os.getpid()), str(int(death_signal)), *args]


def run(args: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """subprocess.run of `args` as a guarded child (same keyword arguments)."""
    return subprocess.run(guarded(args, _path(kwargs)), **kwargs)  # noqa: PLW1510 - callers pass check=


def popen(args: Sequence[str], *, death_signal: int = signal.SIGKILL, **kwargs: Any) -> subprocess.Popen[Any]:
    """subprocess.Popen of `args` as a guarded child; keep the starting thread alive while it runs."""
    return subprocess.Popen(guarded(args, _path(kwargs), death_signal), **kwargs)


def _path(kwargs: dict[str, Any]) -> str | None:
    env = kwargs.get("env")
    return env.get("PATH") if env is not None else None
