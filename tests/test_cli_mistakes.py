"""User mistakes in `mlpack serve`, `export` and `convert` flags: each is one line `error: … Hint: …` naming the
value, with its class's exit code (2 for flags, 3 for inputs), never exit 70 with a traceback. Export refuses an
--out it cannot write before any conversion or build work starts, and leaves nothing behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mlpk.packager import exportdir
from mlpk.packager.errors import ConfigError
from mlpk.runtimes import config
from tests.conftest import free_port
from tests.runtime import models


def _one_line_error(done: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and " Hint: " in lines[0], done.stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return models.mixed(tmp_path / "m") / "model.onnx"


# --- export --out -------------------------------------------------------------------------------------------------

def test_export_to_an_unwritable_place_is_a_config_error(mlpack, model: Path) -> None:
    done = mlpack("export", str(model), "--target", "cpu", "-o", "/proc/x")
    _one_line_error(done, 2, "--out /proc/x", "cannot be written", "(in /proc)")


def test_export_under_a_regular_file_is_refused_before_the_model_is_read(mlpack, tmp_path: Path) -> None:
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "empty.onnx").write_bytes(b"")  # an input error, if the model were read first
    before = sorted(tmp_path.iterdir())
    done = mlpack("export", "empty.onnx", "--target", "cpu", "-o", "FILE/sub/out")
    _one_line_error(done, 2, "--out FILE/sub/out", f"{tmp_path / 'FILE'}, which is a file")
    assert sorted(tmp_path.iterdir()) == before


def test_out_check_creates_nothing_it_leaves(tmp_path: Path) -> None:
    exportdir.check_out(tmp_path / "new" / "deeper" / "out")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="exists and is not an earlier mlpack export"):
        exportdir.check_out(tmp_path / "taken")


@pytest.mark.parametrize(("flags", "words"), [
    (("--tag", "Mlpack/Model:cpu"), "--tag 'Mlpack/Model:cpu' is not an image reference"),
    (("--push", "localhost:5000/a b"), "--push 'localhost:5000/a b' is not an image reference"),
    (("--wheel-index", "notaurl"), "--wheel-index 'notaurl' is not an http(s) or file URL"),
    (("--wheel-index", "https://"), "--wheel-index 'https://' is not an http(s) or file URL"),
    (("--budget-mb", "nan"), "'nan' is not a finite number"),  # a budget of nan passes every comparison
    (("--budget-mb", "-3"), "--budget-mb"),
])
def test_export_names_and_urls_are_checked_before_any_work(mlpack, model: Path, tmp_path: Path,
                                                           flags: tuple[str, str], words: str) -> None:
    for argv in (("-o", str(tmp_path / "out")), ("--plan",)):
        done = mlpack("export", str(model), "--target", "cpu", *argv, *flags)
        _one_line_error(done, 2, words)
    assert not (tmp_path / "out").exists()


def test_export_model_args_must_be_a_json_object(mlpack, model: Path) -> None:
    done = mlpack("export", str(model), "--target", "cpu", "--model-args", "[1]")
    _one_line_error(done, 2, "--model-args '[1]'")


# --- serve flags: the MLPACK_* variables' rules ---------------------------------------------------------------------

@pytest.mark.parametrize(("flag", "value", "words"), [
    ("--port", "99999", "--port=99999 must be between 1 and 65535"),
    ("--port", "0", "--port=0 must be between 1 and 65535"),
    ("--port", "-5", "--port=-5 must be between 1 and 65535"),
    ("--max-body-bytes", "-1", "--max-body-bytes=-1 must be at least 1"),
    ("--threads", "-1", "--threads=-1 must be at least 0"),
    ("--warmup-runs", "-3", "--warmup-runs=-3 must be at least 0"),
    ("--providers", "gpu9", "--providers='gpu9' names unknown execution provider(s) gpu9"),
    ("--max-buffered-bytes", "0", "--max-buffered-bytes=0 must be at least 1"),
    ("--body-timeout", "0", "--body-timeout=0.0 must be a positive number of seconds"),
    ("--body-timeout", "-2", "--body-timeout=-2.0 must be at least 0"),
])
def test_serve_flag_out_of_range_is_a_config_error(mlpack, model: Path, flag: str, value: str, words: str) -> None:
    _one_line_error(mlpack("serve", str(model), flag, value), 2, words, "mlpack serve --help")


@pytest.mark.parametrize(("variable", "value", "words"), [
    ("MLPACK_PORT", "99999", "MLPACK_PORT=99999 must be between 1 and 65535"),
    ("MLPACK_PROVIDERS", "gpu9", "MLPACK_PROVIDERS='gpu9' names unknown execution provider(s) gpu9"),
    ("MLPACK_BODY_TIMEOUT", "soon", "MLPACK_BODY_TIMEOUT='soon' is not a number"),
    ("MLPACK_MAX_BUFFERED_BYTES", "1.5", "MLPACK_MAX_BUFFERED_BYTES='1.5' is not an integer"),
])
def test_serve_environment_gets_the_same_rules(mlpack, model: Path, variable: str, value: str, words: str) -> None:
    _one_line_error(mlpack("serve", str(model), env={variable: value}), 2, words, "environment variable")


def test_serve_threads_not_a_number_is_a_usage_error(mlpack, model: Path) -> None:
    _one_line_error(mlpack("serve", str(model), "--threads", "abc"), 2, "'abc' is not a valid integer")


def test_serve_unknown_host_is_a_config_error(mlpack, model: Path) -> None:
    done = mlpack("serve", str(model), "--host", "nosuchhost.invalid", "--port", str(free_port()))
    _one_line_error(done, 2, "'nosuchhost.invalid' is not an address of this host", "--host")


def test_serve_directory_without_a_model_is_an_input_error(mlpack, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = mlpack("serve", str(tmp_path / "empty"), "--port", str(free_port()))
    _one_line_error(done, 3, str(tmp_path / "empty"), "no model.onnx",
                    "a model repository (DIR/NAME/VERSION/model.onnx)")


def test_flags_and_variables_share_one_rule_each() -> None:
    base = config.Settings()
    for field, (variable, _) in config.RULES.items():
        if field in ("port", "threads", "warmup_runs", "max_body_bytes", "max_tensor_elements", "trt_max_batch"):
            with pytest.raises(ValueError) as from_env:
                config.from_env({variable: "-7"})
            with pytest.raises(ValueError) as from_flag:
                config.with_values(base, {field: -7}, lambda name: f"--{name}")
            assert str(from_env.value).replace(variable, "--" + field) == str(from_flag.value)
    settings = config.with_values(base, {"threads": 0, "providers": "cuda", "port": None}, str)
    assert (settings.threads, settings.providers[-1], settings.port) == (None, "CPUExecutionProvider", 8080)


# --- convert: inputs that are not models ----------------------------------------------------------------------------

def test_convert_empty_onnx_and_plain_directory_are_input_errors(mlpack, tmp_path: Path) -> None:
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "dir").mkdir()
    _one_line_error(mlpack("convert", "empty.onnx"), 3, "empty.onnx is empty")
    _one_line_error(mlpack("convert", "dir"), 3, "dir/ is a directory")


def test_a_bad_tolerance_is_one_line_with_a_hint() -> None:
    """Every --tolerance mistake names the value and shows the form (NaN, which compares false, included)."""
    import pytest

    from mlpk.packager.errors import ConfigError
    from mlpk.packager.parity import Tolerance

    for text in ("atol=-1", "atol=nan", "x=1", "atol=abc", "agreement=2"):
        with pytest.raises(ConfigError) as err:
            Tolerance().updated(text)
        assert repr(text) in err.value.message and err.value.hint and "--tolerance atol=" in err.value.hint


def test_convert_names_an_onnxruntime_older_than_it_knows(mlpack, model: Path, tmp_path: Path) -> None:
    """An --ort-version below the compatibility table is refused, not waved through as "newer than the table"."""
    done = mlpack("convert", str(model), "--ort-version", "0.1", "-o", str(tmp_path / "m.onnx"))
    _one_line_error(done, 2, "onnxruntime 0.1 is older than any mlpack knows", "--ort-version")
    assert not (tmp_path / "m.onnx").exists()


def test_inspect_refuses_well_formed_json_of_the_wrong_shape(mlpack, tmp_path: Path) -> None:
    """A docker-archive whose manifest.json is an object, an OCI layout whose index.json is a list: one line each
    naming the file, not a KeyError or AttributeError (exit 70)."""
    import io
    import tarfile

    archive = tmp_path / "odd.tar"
    with tarfile.open(archive, "w") as tar:
        data = b'{"a": 1}'
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    _one_line_error(mlpack("inspect", str(archive)), 3, "docker-archive", "odd.tar", "is malformed")
    layout = tmp_path / "layout"
    layout.mkdir()
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text("[1, 2]")
    _one_line_error(mlpack("inspect", str(layout)), 3, "OCI layout", "is malformed")


def test_base_mirror_and_manifest_ports_are_checked_as_flags(mlpack, tmp_path: Path) -> None:
    """A --mirror that no URL parser reads (exit 70 before), and host ports outside 1-65535 (0 became the image's
    port, 70000 was published as given)."""
    _one_line_error(mlpack("base", "build", "--mirror", "http://[::1", "--plan"), 2, "--mirror 'http://[::1' is not a URL")
    for flag in ("--port", "--grpc-port"):
        for value in ("0", "70000"):
            done = mlpack("manifest", "compose", str(tmp_path / "img"), flag, value, "-o", str(tmp_path / "c.yml"))
            _one_line_error(done, 2, flag, value)
    assert not (tmp_path / "c.yml").exists()


@pytest.mark.parametrize("argv", [
    ("deploy", "lambda", "IMG", "--function", "fn", "--alias", "bad alias!", "--plan"),
    ("deploy", "lambda", "IMG", "--function", "fn", "--alias", "123", "--plan"),
    ("deploy", "lambda", "IMG", "--function", "fn", "--role", "notanarn", "--plan"),
    ("deploy", "lambda", "IMG", "--function", "fn", "--env", "A B=1", "--plan"),
    ("manifest", "k8s", "IMG", "--namespace", "Bad NS!"),
    ("manifest", "k8s", "IMG", "--priority-class", "x=99999999999"),
    ("manifest", "k8s", "IMG", "--priority-class", "=5"),
    ("manifest", "compose", "IMG", "--port", "8080", "--grpc-port", "8080"),
    ("manifest", "compose", "IMG", "--image", "BAD REF"),
    ("build", "--base", "oci:BASE", "--user", "a:b:c", "--layout", "OUT"),
    ("build", "--base", "oci:BASE", "--env", "A B=1", "--layout", "OUT"),
    ("build", "--base", "oci:BASE", "--owner", "1:99999999999", "--layout", "OUT"),
    ("deliver", "delta", "--from", "BASE", "--to", "BASE", "-o", "OUT"),
    # deploy swarm checked these only after asking the engine and pushing the image
    ("deploy", "swarm", "IMG", "--stack", "s", "--registry", "127.0.0.1:5999", "--replicas", "0"),
    ("deploy", "swarm", "IMG", "--stack", "s", "--registry", "127.0.0.1:5999", "--canary", "IMG", "--canary-weight",
     "100"),
    ("deploy", "swarm", "IMG", "--stack", "s", "--registry", "127.0.0.1:5999", "--placement", "bad"),
    ("deploy", "swarm", "IMG", "--stack", "Bad!Stack", "--registry", "127.0.0.1:5999"),
    ("deploy", "swarm", "IMG", "--stack", "s", "--registry", "bad@host!"),
    ("build", "--base", "oci:BASE"),  # no output: it wrote nothing, exit 0
    ("bench", "IMG", "-o", "AFILE/sub"),  # a traceback after the source was read
])
def test_values_the_target_would_refuse_are_refused_here_first(mlpack, tmp_path: Path, argv: tuple[str, ...]) -> None:
    """Each was accepted with exit 0 (and written into an image, a manifest or a plan that the engine, Kubernetes
    or AWS refuses later, or a delta that holds nothing); now a config error, before anything is written."""
    from mlpk.packager.oci import empty_image, layout

    base = layout.write(empty_image("linux/amd64"), tmp_path / "base")
    words = [str(base) if word == "BASE" else word.replace("BASE", str(base)) for word in argv]
    (tmp_path / "afile").write_text("x")
    words = [str(tmp_path / "out") if word == "OUT" else str(tmp_path / "missing") if word == "IMG" else
             word.replace("AFILE", str(tmp_path / "afile")) for word in words]
    done = mlpack(*words)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()
