"""The CLI's contract: fast help that loads no framework, one-line user errors, exit codes, --json."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time

import click
import pytest
from click.testing import CliRunner

from mlpk.packager import __version__, cli
from mlpk.packager.errors import ConfigError, InternalError

HEAVY = ("onnxruntime", "torch", "tensorflow", "tf_keras", "sklearn", "skl2onnx", "tf2onnx", "onnx")


def test_help_imports_no_framework_and_is_fast() -> None:
    code = (
        "import sys, time; t = time.perf_counter()\n"
        "from mlpk.packager.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "took = time.perf_counter() - t\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print(repr((heavy, took)), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    heavy, took = eval(done.stderr.strip().splitlines()[-1])  # noqa: S307 - our own repr
    assert heavy == []
    assert took < 1.0, f"mlpack --help took {took:.2f} s"
    assert "Commands:" in done.stdout


def test_every_command_help_imports_no_framework() -> None:
    """`mlpack CMD --help` for every command stays light too: frameworks load only when a command runs."""
    for name in cli.COMMANDS:
        code = (
            "import sys\nfrom mlpk.packager.cli import main\n"
            f"try:\n    main([{name!r}, '--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}), file=sys.stderr)\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert done.stderr.strip().splitlines()[-1] == "[]", name


def test_version(mlpack) -> None:
    done = mlpack("--version", check=True)
    assert done.stdout.strip() == f"mlpack, version {__version__}"


def test_unknown_command_is_a_usage_error(mlpack) -> None:
    done = mlpack("frobnicate")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: No such command 'frobnicate'. Hint: mlpack --help"


def test_bad_flag_value_is_one_line_naming_the_value_and_the_command(mlpack) -> None:
    done = mlpack("quantize", "model.onnx", "--mode", "int4")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "'int4'" in done.stderr and "Hint: mlpack quantize --help" in done.stderr


@pytest.fixture
def with_command(monkeypatch: pytest.MonkeyPatch):
    """Register a throwaway command module-level so main() runs it like a real one."""

    def add(name: str, command: click.Command) -> None:
        monkeypatch.setitem(cli.COMMANDS, name, f"doctor:{name}")
        monkeypatch.setattr(importlib.import_module("mlpk.packager.cli.doctor"), name, command, raising=False)

    return add


def test_user_error_is_one_line_with_hint(with_command, capsys: pytest.CaptureFixture[str]) -> None:
    @click.command()
    def failing() -> None:
        raise ConfigError("target 'jetsn' is unknown; known: cpu, jetson", hint="mlpack targets")

    with_command("failing", failing)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["failing"])
    err = capsys.readouterr().err
    assert exit_info.value.code == ConfigError.exit_code
    assert err == "error: target 'jetsn' is unknown; known: cpu, jetson. Hint: mlpack targets\n"


def test_debug_shows_traceback_for_user_errors(with_command, capsys: pytest.CaptureFixture[str]) -> None:
    @click.command()
    def failing() -> None:
        raise ConfigError("bad")

    with_command("failing", failing)
    with pytest.raises(SystemExit):
        cli.main(["--debug", "failing"])
    assert "Traceback" in capsys.readouterr().err


def test_internal_error_keeps_traceback(with_command, capsys: pytest.CaptureFixture[str]) -> None:
    @click.command()
    def broken() -> None:
        raise InternalError("layer digest computed twice differently")

    with_command("broken", broken)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["broken"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 70
    assert "Traceback" in err and "layer digest computed twice differently" in err


def test_json_flag_reaches_commands() -> None:
    result = CliRunner().invoke(cli.cli, ["--json", "doctor"])
    data = json.loads(result.output)
    assert {c["name"] for c in data["checks"]} >= {"python", "docker engine", "onnxruntime"}


def test_the_command_list_says_what_each_command_says() -> None:
    """`mlpack --help` lists the commands from cli.SUMMARIES without importing them; each entry is the first
    paragraph of that command's own help."""
    import inspect as source

    import click

    ctx = click.Context(cli.cli)
    assert sorted(cli.SUMMARIES) == sorted(cli.COMMANDS)
    for name, listed in cli.SUMMARIES.items():
        command = cli.cli.get_command(ctx, name)
        assert command is not None and command.help is not None, name
        first = " ".join(source.cleandoc(command.help).split("\n\n")[0].split())
        assert listed == first, name
