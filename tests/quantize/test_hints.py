"""Every hint of a refused quantization names only flags of the command that quantized: `mlpack quantize`'s own,
or `mlpack export`'s when an export quantizes (it has no --mode, --max-drop or --eval), checked against the commands'
real click options; a flag after a named command (`mlpack export --quantize none`) must be that command's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlpk.packager import cli
from mlpk.packager.errors import MlpackError
from mlpk.packager.quantize import pipeline
from mlpk.packager.quantize.methods import Attempt
from mlpk.packager.quantize.options import EXPORT_FLAGS, Backend, Flags, Mode, QuantizeOptions
from mlpk.packager.quantize.report import Outcome, Trial

NAMED = re.compile(r"mlpack (\w+) (--[a-z][a-z0-9-]*)")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _options(command: str) -> set[str]:
    import click  # the CLI's own library, as tests/test_cli.py reads it

    found = cli.cli.get_command(click.Context(cli.cli), command)
    assert found is not None, command
    return {opt for param in found.params for opt in (*param.opts, *param.secondary_opts)}


def _check_flags(hint: str, command: str) -> None:
    assert "{" not in hint and "}" not in hint, hint
    for named, flag in NAMED.findall(hint):
        assert flag in _options(named), f"{flag} is no flag of mlpack {named}: {hint}"
    for flag in FLAG.findall(NAMED.sub("", hint)):
        assert flag in _options(command), f"{flag} is no flag of mlpack {command}: {hint}"


def _trial(evaluated_on: str) -> Trial:
    return Trial(Attempt("first choice", per_channel=False), None, False, evaluated_on=evaluated_on)


@pytest.mark.parametrize(("flags", "command"), [(Flags(), "quantize"), (EXPORT_FLAGS, "export")])
def test_every_refusal_hint_names_the_flags_of_the_command_that_quantized(flags: Flags, command: str) -> None:
    for (kind, mode) in pipeline._HINTS:
        for backend in Backend:
            if backend is Backend.TENSORRT and mode is Mode.INT8_DYNAMIC:
                continue  # refused before any try (next test)
            options = QuantizeOptions(mode, backend, flags=flags)
            for data in ("synthetic inputs", "data.npz"):
                hint = pipeline._hint(kind, options, [_trial(data)])
                _check_flags(hint, command)
                assert backend is not Backend.TENSORRT or "int8-dynamic" not in hint, hint
    if command == "export":
        gated = pipeline._hint(Outcome.GATED, QuantizeOptions(Mode.INT8_DYNAMIC, flags=flags), [_trial("synthetic")])
        assert "--sample-data DATA.npz" in gated and "max_drop under [optimize]" in gated and "--quantize fp16" in gated


@pytest.mark.parametrize(("flags", "command"), [(Flags(), "quantize"), (EXPORT_FLAGS, "export")])
def test_refused_options_name_the_flags_of_the_command(tmp_path: Path, flags: Flags, command: str) -> None:
    """The checks made before any try: a mode TensorRT cannot run, a max drop out of range, no calibration data."""
    source = tmp_path / "model.onnx"
    source.write_bytes(b"")
    refusals = [QuantizeOptions(Mode.INT8_DYNAMIC, Backend.TENSORRT, flags=flags),
                QuantizeOptions(Mode.FP16, max_drop=1.0, flags=flags)]
    for options in refusals:
        with pytest.raises(MlpackError) as caught:
            pipeline._check(source, options, tmp_path / "out.onnx")
        _check_flags(caught.value.hint or "", command)
    for text in (flags.calibration, flags.evaluation, flags.mode):
        _check_flags(text, command)
