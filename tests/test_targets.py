"""Target profiles: every built-in validates and resolves; bad profiles list every problem with its field."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from mlpk.packager import targets
from mlpk.packager.errors import ConfigError

BUILTINS = ["cpu", "cuda", "jetson", "jetson-jp5", "lambda", "lambda-arm64"]


def test_builtins_are_the_designed_six() -> None:
    assert targets.names() == BUILTINS


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_validates_against_published_schema(name: str) -> None:
    raw = targets.read(name)
    jsonschema.Draft202012Validator.check_schema(targets.schema())
    jsonschema.validate(raw, targets.schema())
    assert targets.problems(raw) == []
    resolved = targets.load(name)
    assert resolved.name == name
    assert resolved.providers[-1] == "CPUExecutionProvider"
    assert resolved.user != "0" and not resolved.user.startswith("0:"), "runtimes run as non-root"


def test_target_facts_follow_the_design() -> None:
    cpu, lam, lam_arm, jetson, jp5, cuda = (targets.load(n) for n in
                                            ("cpu", "lambda", "lambda-arm64", "jetson", "jetson-jp5", "cuda"))
    assert cpu.platforms == ("linux/amd64", "linux/arm64") and not cpu.single_arch
    assert lam.platforms == ("linux/amd64",) and lam.single_arch and lam.runtime == "lambda"
    assert lam_arm.platforms == ("linux/arm64",) and lam_arm.single_arch
    assert jetson.python == "3.10" and jetson.abi == "cp310" and jetson.compat["l4t"] == "36.4"
    assert jetson.compat["tensorrt"] == "10.3" and jetson.platforms == ("linux/arm64",)
    assert jp5.python == "3.8" and jp5.compat["tensorrt"] == "8.5"
    assert jetson.providers == ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    assert jetson.tensorrt is not None and jetson.tensorrt.fp16 and jetson.optimize.consumer == "tensorrt"
    assert jetson.wheels.extra_index_required and cuda.uses_tensorrt and not cpu.uses_tensorrt
    assert cpu.tensorrt is None and cpu.optimize.consumer == "cpu"
    # gRPC beside HTTP in server images, with its wheels; not in Lambda images, nor on JetPack 5's Python 3.8
    for server in (cpu, jetson, cuda):
        assert server.grpc_port == 8081 and server.exposed_ports == (8080, 8081)
        assert {"hpack>=4.1", "protobuf>=6.31"} <= set(server.wheels.requirements)
        assert not any(r.startswith("grpcio") for r in server.wheels.requirements)  # the server's own HTTP/2
    for without in (lam, lam_arm, jp5):
        assert without.grpc_port == 0 and not any(r.startswith(("hpack", "protobuf")) for r in
                                                  without.wheels.requirements)
    assert jp5.exposed_ports == (8080,) and lam.exposed_ports == ()
    off = targets.load("cpu", {"grpc_port": 0})
    assert off.exposed_ports == (8080,) and not any(r.startswith(("hpack", "protobuf")) for r in
                                                     off.wheels.requirements)
    own = targets.load("cpu", {"grpc_port": 9000, "wheels": {"requirements": ["onnxruntime==1.31.1",
                                                                             "protobuf==6.33.0"]}})
    assert own.wheels.requirements == ("onnxruntime==1.31.1", "protobuf==6.33.0", "hpack>=4.1")


def test_unknown_target_suggests_the_closest() -> None:
    with pytest.raises(ConfigError) as err:
        targets.load("jetsn")
    assert "unknown target 'jetsn'" in str(err.value) and err.value.hint == "did you mean 'jetson'?"


def test_user_profile_extends_and_overrides(tmp_path: Path) -> None:
    user = tmp_path / "edge.toml"
    user.write_text('extends = "lambda-arm64"\nname = "edge"\nbudget_mb = 180\n[env]\nLOG_LEVEL = "debug"\n')
    resolved = targets.load(user)
    assert resolved.name == "edge" and resolved.budget_mb == 180
    assert resolved.platforms == ("linux/arm64",) and resolved.env == {"HOME": "/tmp", "LOG_LEVEL": "debug"}


def test_a_profile_sets_the_gates_max_drop_below_one(tmp_path: Path) -> None:
    """What an export's refused quantization points to (quantize.options.EXPORT_FLAGS): max_drop under [optimize] in
    a profile TOML; a drop of 1 or more would accept any model, and is refused with the field named."""
    user = tmp_path / "tolerant.toml"
    user.write_text('extends = "cpu"\n[optimize]\nmax_drop = 0.05\n')
    assert targets.load(user).optimize.max_drop == 0.05
    user.write_text('extends = "cpu"\n[optimize]\nmax_drop = 1\n')
    with pytest.raises(ConfigError) as err:
        targets.load(user)
    assert "optimize.max_drop:" in str(err.value) and str(user) in str(err.value)


def test_profiles_of_any_bytes_or_numbers_are_refused_in_one_line(tmp_path: Path) -> None:
    """Not UTF-8; a Python that is no version (the cross-field rules read it as numbers); nan and inf, which TOML
    has and which pass any minimum or maximum of the schema (a budget of nan would turn the size gate off)."""
    user = tmp_path / "odd.toml"
    user.write_bytes(b"\xff\xfeextends = 'cpu'\n")
    with pytest.raises(ConfigError, match=r"odd.toml is not UTF-8 text, as TOML must be \(byte 0 is 0xff\)"):
        targets.load(user)
    for body, field in (('python = "banana"', "python:"), ('python = "3.x"', "python:"),
                        ("budget_mb = nan", "budget_mb: nan is not a finite number"),
                        ("[optimize]\nmax_drop = inf", "optimize.max_drop: inf is not a finite number")):
        user.write_text(f'extends = "cpu"\n{body}\n')
        with pytest.raises(ConfigError) as err:
            targets.load(user)
        assert field in str(err.value) and str(user) in str(err.value), body
    with pytest.raises(ConfigError, match="python: 'banana' does not match"):
        targets.load("cpu", {"python": "banana"})  # export --python banana


def test_flag_overrides_merge_into_tables() -> None:
    resolved = targets.load("jetson", {"base": {"ref": "registry.local/l4t@sha256:" + "a" * 64}})
    assert resolved.base.pinned and resolved.base.jetpack == "6.1"
    assert not targets.load("jetson").base.pinned


def test_every_problem_is_reported_with_its_field(tmp_path: Path) -> None:
    user = tmp_path / "bad.toml"
    user.write_text('extends = "cpu"\nplatfrms = ["linux/amd64"]\nbudget_mb = -3\n'
                    'providers = ["CPUExecutionProvider", "CUDAExecutionProvider"]\n[base]\nsuite = "sid"\n')
    with pytest.raises(ConfigError) as err:
        targets.load(user)
    text = str(err.value)
    assert str(user) in text
    assert "platfrms: unknown field (did you mean 'platforms'?)" in text
    assert "budget_mb:" in text and "base.suite:" in text
    assert "providers: must end with CPUExecutionProvider" in text


def test_cross_field_rules() -> None:
    lam = targets.read("lambda")
    assert "single_arch" in " ".join(targets.problems({**lam, "single_arch": False}))
    assert "platforms: a single_arch target takes exactly one platform" in " ".join(
        targets.problems({**lam, "platforms": ["linux/amd64", "linux/arm64"]}))
    jet = targets.read("jetson")
    assert "does not match JetPack 6.1" in " ".join(targets.problems({**jet, "python": "3.11"}))
    assert "unknown JetPack release '9.9'" in " ".join(
        targets.problems(targets.merge(jet, {"base": {"jetpack": "9.9"}})))
    cpu = targets.read("cpu")
    assert "not the Python of Debian bookworm" in " ".join(targets.problems({**cpu, "python": "3.13"}))
    assert "grpc_port: 8080 is one of the HTTP ports" in " ".join(targets.problems({**cpu, "grpc_port": 8080}))
    assert "grpc_port: 8081 is for runtime = 'server'" in " ".join(targets.problems({**lam, "grpc_port": 8081}))
    jp5 = targets.read("jetson-jp5")
    assert "grpc_port: gRPC needs Python 3.9 or newer" in " ".join(targets.problems({**jp5, "grpc_port": 8081}))
    assert "grpc_port:" in " ".join(targets.problems({**cpu, "grpc_port": 70000}))


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    user = tmp_path / "broken.toml"
    user.write_text("extends = \n")
    with pytest.raises(ConfigError, match="broken.toml is not valid TOML"):
        targets.load(user)


def test_cli_lists_and_shows(mlpack) -> None:
    listing = json.loads(mlpack("--json", "targets", check=True).stdout)
    assert [t["name"] for t in listing["targets"]] == BUILTINS
    shown = json.loads(mlpack("targets", "show", "lambda", check=True).stdout)
    assert shown["runtime"] == "lambda" and shown["platforms"] == ["linux/amd64"]
    schema = json.loads(mlpack("targets", "schema", check=True).stdout)
    assert schema["title"] == "mlpack target profile"
    bad = mlpack("targets", "show", "jetsn")
    assert bad.returncode == ConfigError.exit_code
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_the_schema_lists_the_one_list_of_quantize_modes() -> None:
    """targets.QuantizeMode is the one list (issue 16); the published schema for editors says the same."""
    schema = targets.schema()
    listed = schema["properties"]["optimize"]["properties"]["quantize"]["enum"]
    assert sorted(listed) == sorted(str(mode) for mode in targets.QuantizeMode)


def test_serve_settings_become_the_images_variables_and_are_checked_together() -> None:
    """A profile's [serve] sets the server's scheduling (docs/serving.md) in the image's config, in the runtime's own
    variable names and forms (its config accepts every value back); refusals name the field."""
    from mlpk.packager import assemble
    from mlpk.packager.oci import empty_image
    from mlpk.runtimes import config

    target = targets.load("cpu", {"serve": {"max_batch_size": 8, "preferred_batch_sizes": [8, 4], "max_queue": 16,
                                            "request_timeout_s": 0.5, "max_concurrent_runs": 1}})
    env = dict(item.split("=", 1) for item in assemble.configure(empty_image(), target, labels={}).config["config"]["Env"])
    assert {key: env[key] for key in env if key.startswith("MLPACK_") and key not in (
        "MLPACK_MODEL_DIR", "MLPACK_PROVIDERS", "MLPACK_GRPC_PORT")} == {
        "MLPACK_MAX_BATCH_SIZE": "8", "MLPACK_PREFERRED_BATCH_SIZES": "4,8", "MLPACK_MAX_QUEUE": "16",
        "MLPACK_REQUEST_TIMEOUT": "0.5", "MLPACK_MAX_CONCURRENT_RUNS": "1"}
    settings = config.from_env(env)
    assert (settings.max_batch_size, settings.preferred_batch_sizes, settings.max_queue, settings.request_timeout_s,
            settings.max_concurrent_runs) == (8, (4, 8), 16, 0.5, 1)
    assert not any(key.startswith("MLPACK_MAX_BATCH") for key in dict(
        item.split("=", 1) for item in assemble.configure(empty_image(), targets.load("cpu"), labels={})
        .config["config"]["Env"]))
    cpu, lam = targets.read("cpu"), targets.read("lambda")
    assert "serve.max_batch_size: required" in " ".join(targets.problems({**cpu, "serve": {"batch_delay_us": 100}}))
    assert "serve.preferred_batch_sizes: [16] has a size over serve.max_batch_size 8" in " ".join(
        targets.problems({**cpu, "serve": {"max_batch_size": 8, "preferred_batch_sizes": [16]}}))
    assert "serve: is for runtime = 'server'" in " ".join(targets.problems({**lam, "serve": {"max_queue": 4}}))
    assert "serve.max_bach_size: unknown field (did you mean 'max_batch_size'?)" in " ".join(
        targets.problems({**cpu, "serve": {"max_bach_size": 4}}))
