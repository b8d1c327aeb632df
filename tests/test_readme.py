"""The README stays true: its CLI reference matches the commands, and its two commands exist and are wired up."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from mlpk.packager import cli

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _reference_rows() -> list[str]:
    section = README.split("<!-- cli-reference", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `mlpack ([a-z-]+)[^`]*` \|", section, flags=re.M)


def test_cli_reference_lists_exactly_the_commands() -> None:
    rows = _reference_rows()
    assert len(rows) == len(set(rows)), "a command is listed twice"
    assert sorted(rows) == sorted(cli.COMMANDS)


def test_every_listed_command_answers_help(mlpack) -> None:
    for name in _reference_rows():
        done = mlpack(name, "--help")
        assert done.returncode == 0, (name, done.stderr)
        assert f"Usage: mlpack {name}" in done.stdout


def test_the_two_commands_are_the_scripts_ci_and_samples_run() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", README, flags=re.S)
    commands = [b.strip() for b in blocks[:2]]
    assert commands == ["bash samples/quickstart.sh", "bash tests/run.sh"]
    assert (REPO / "samples/quickstart.sh").is_file() and (REPO / "tests/run.sh").is_file()
    assert "tests/run.sh" in (REPO / ".ci/run").read_text(), ".ci/run must call the README's test command"


@pytest.mark.slow
@pytest.mark.docker
def test_readme_command_one_runs() -> None:
    """README command 1 as a user runs it: train a sample, export it for cpu, ask the image for a prediction."""
    done = subprocess.run(["bash", "samples/quickstart.sh"], cwd=REPO, capture_output=True, text=True, timeout=1200,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "the image answered: labels" in done.stdout
    report = json.loads((REPO / "samples/out/cpu/report.json").read_text())
    assert [p["platform"] for p in report["platforms"]] == ["linux/amd64", "linux/arm64"]


def test_export_examples_resolve(mlpack) -> None:
    """The export examples in the README resolve (targets, flags) into a plan; the full runs are in tests/export."""
    section = README.split("## What `mlpack export` does", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    examples = [line.split("#", 1)[0].split() for line in section.splitlines() if line.startswith("mlpack export")]
    assert len(examples) >= 4
    placeholders = {"URL": "https://wheels.example.invalid/simple/", "REGISTRY/m:1": "localhost:5000/m:1"}
    for argv in examples:
        args = [placeholders.get(arg, arg) for arg in argv[1:]] + ([] if "--plan" in argv else ["--plan"])
        done = mlpack(*args)
        assert done.returncode == 0, (argv, done.stderr)
        assert "1. check" in done.stdout
