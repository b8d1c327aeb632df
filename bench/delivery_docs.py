"""Rewrite the command transcripts of docs/delivery.md from a real run of the delivery tests that produce them.

    .venv/bin/python bench/delivery_docs.py            # runs the tests (about 5 minutes), then rewrites the page

The tests (tests/deliver/test_compose_ha.py, test_swarm.py, test_fleet.py) record each command they run and what
it printed when MLPACK_TRANSCRIPT names a directory (tests/deliver/transcript.py); this script sets it, runs them
with CI=true (a missing service fails the run rather than leaving a section out), and replaces each block between
`<!-- transcript:SECTION -->` and `<!-- /transcript:SECTION -->` with the section's commands and outputs. Nothing
is written when a test fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "delivery.md"
TESTS = ["tests/deliver/test_compose_ha.py", "tests/deliver/test_swarm.py", "tests/deliver/test_fleet.py"]


def render(entries: list[dict]) -> str:
    lines = ["```console"]
    for entry in entries:
        lines.append(f"$ {entry['command']}" if not entry["command"].startswith("#") else entry["command"])
        if entry["output"]:
            lines.append(entry["output"])
        if entry["exit"]:
            lines.append(f"(exit {entry['exit']})")
    lines.append("```")
    return "\n".join(lines)


def rewrite(page: str, sections: dict[str, list[dict]]) -> str:
    for name, entries in sections.items():
        start, end = f"<!-- transcript:{name} -->", f"<!-- /transcript:{name} -->"
        if start not in page or end not in page:
            raise SystemExit(f"{PAGE} has no {start} ... {end} block")
        head, rest = page.split(start, 1)
        _, tail = rest.split(end, 1)
        page = f"{head}{start}\n{render(entries)}\n{end}{tail}"
    return page


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mlpack-transcript-") as tmp:
        env = {**os.environ, "CI": "true", "MLPACK_TRANSCRIPT": tmp}
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", *TESTS], cwd=ROOT, env=env, check=False)
        if done.returncode != 0:
            print("the tests failed: docs/delivery.md is left as it was", file=sys.stderr)
            return done.returncode
        sections = {path.stem: [json.loads(line) for line in path.read_text().splitlines()]
                    for path in sorted(Path(tmp).glob("*.jsonl"))}
    PAGE.write_text(rewrite(PAGE.read_text(), sections))
    print(f"rewrote {', '.join(sections)} in {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
