"""Commands the delivery tests run, with their real output, for docs/delivery.md: when MLPACK_TRANSCRIPT names a
directory (bench/delivery_docs.py sets it and runs these tests), each recorded command is appended to
DIR/SECTION.jsonl; otherwise recording does nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

# Text the page shows otherwise: a test's random stack or project name, its registry's address, its free ports
# (set by the tests, e.g. ALIASES[stack] = "scorer"); applied to commands and outputs.
ALIASES: dict[str, str] = {}


def record(section: str, argv: list[str] | tuple[str, ...], done: subprocess.CompletedProcess[str] | str,
           note: str = "", replace: dict[str, str] | None = None) -> None:
    """Append `argv` and what it printed (stdout, then stderr) to the section's transcript; machine paths, random
    test tokens are left out so the page reads as a user's session."""
    where = os.environ.get("MLPACK_TRANSCRIPT")
    if not where:
        return
    if isinstance(done, str):
        output, code = done, 0
    else:
        output, code = (done.stdout or "") + (done.stderr or ""), done.returncode
    for old, new in [*(replace or {}).items(), *ALIASES.items()]:  # the test's own first: they may hold an alias
        pattern = rf"\b{re.escape(old)}\b" if old.isdigit() else re.escape(old)  # a port, not part of a number
        output = re.sub(pattern, new, output)
        argv = [re.sub(pattern, new, str(a)) for a in argv]
    entry = {"command": " ".join(_clean(str(a)) for a in argv), "output": _clean(output.rstrip()), "exit": code,
             "note": note}
    path = Path(where) / f"{section}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(json.dumps(entry) + "\n")


def _clean(text: str) -> str:
    text = re.sub(r"/tmp/pytest-of-[^/\s]+/pytest-\d+/[^/\s]+/", "", text)  # the test's temporary folder
    text = re.sub(r"/tmp/[\w.-]+/", "", text)
    return re.sub(r"(test/[a-z-]+)-[0-9a-f]{10}", r"\1", text)
