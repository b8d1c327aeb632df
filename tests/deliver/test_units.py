"""The pure parts of delivery, with nothing but Python: chain IDs, the journal's report, AWS error codes, SSH URLs,
partial archives, request bodies for measured runs and the resources they give."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from mlpk.packager.deliver import archive, aws, manifests, measure
from mlpk.packager.deliver.engine import SshTarget
from mlpk.packager.deliver.images import chain_ids, missing_layers
from mlpk.packager.deliver.journal import Journal, Step
from mlpk.packager.errors import ConfigError, DeployError, InputError, RegistryError
from mlpk.packager.oci import Entry, append_layers, empty_image, layer_from_entries
from mlpk.packager.oci.digest import Digest


def _digest(text: str) -> Digest:
    return Digest(hashlib.sha256(text.encode()).hexdigest())


def test_chain_ids_follow_the_image_spec() -> None:
    a, b, c = _digest("a"), _digest("b"), _digest("c")
    chains = chain_ids([a, b, c])
    assert chains[0] == a
    assert chains[1] == Digest(hashlib.sha256(f"{a} {b}".encode()).hexdigest())
    assert chains[2] == Digest(hashlib.sha256(f"{chains[1]} {c}".encode()).hexdigest())
    assert chain_ids([b, c])[1] != chains[2], "a layer's chain depends on every layer below it"


def _image(*names: str):
    img = empty_image()
    for name in names:
        img = append_layers(img, layer_from_entries([Entry(f"f/{name}", data=name.encode(), mode=0o644)]))
    return img


def test_missing_layers_are_those_above_the_shared_chain() -> None:
    old, new = _image("base", "deps", "model1"), _image("base", "deps", "model2")
    have = set(chain_ids([Digest.parse(d) for d in old.config["rootfs"]["diff_ids"]]))
    assert missing_layers(new, have) == [2]
    assert missing_layers(_image("other", "deps", "model1"), have) == [0, 1, 2]


def test_partial_archive_lists_every_layer_and_holds_only_some(tmp_path: Path) -> None:
    img = _image("base", "deps", "model")
    info = archive.write(img, tmp_path / "d.tar", "t/x", {2})
    with tarfile.open(info.path) as tar:
        names = set(tar.getnames())
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert len(manifest[0]["Layers"]) == 3 and manifest[0]["RepoTags"] == ["t/x:latest"]
    assert {n for n in names if n.endswith(".tar.gz")} == {f"{img.layers[2].digest.hex}.tar.gz"}
    assert info.requires_chain == str(chain_ids([Digest.parse(d) for d in img.config["rootfs"]["diff_ids"]])[1])
    assert archive.verify(info.path) == info.sha256
    assert archive.read_info(info.path)["included"] == [2]
    with pytest.raises(InputError, match="cannot be left out"):
        archive.write(img, tmp_path / "bad.tar", None, {0, 2})
    (tmp_path / "d.tar.sha256").write_text("0" * 64 + "  d.tar\n")
    with pytest.raises(InputError, match="hashes to sha256:"):
        archive.verify(info.path)


def test_journal_reports_done_and_not_done() -> None:
    journal = Journal([Step("one", "first"), Step("two", "second"), Step("three", "third")])
    with journal.step("one") as out:
        out["did"] = "made X"
    with pytest.raises(DeployError) as err, journal.step("two"):
        raise RegistryError("the registry said 401", hint="docker login")
    assert str(err.value) == "two failed: the registry said 401 (done: one: made X; not done: two, three)"
    assert err.value.hint == "docker login"
    assert journal.plan() == ["one: first", "two: second", "three: third"]


def test_aws_error_codes_come_from_json_or_wrapped_xml() -> None:
    import botocore.exceptions

    plain = botocore.exceptions.ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"},
                                             "ResponseMetadata": {"HTTPStatusCode": 403}}, "GetFunction")
    assert aws.error_code(plain) == ("AccessDeniedException", "no")
    xml = ('<?xml version="1.0"?><ErrorResponse><Errors><Error><Code>InvalidClientTokenId</Code>'
           '<Message>The security token included in the request is invalid.</Message></Error></Errors></ErrorResponse>')
    wrapped = botocore.exceptions.ClientError({"Error": {"Code": "403", "Message": xml}}, "DescribeRepositories")
    assert aws.error_code(wrapped) == ("InvalidClientTokenId", "The security token included in the request is invalid.")
    with pytest.raises(DeployError, match=r"lambda.GetFunction was refused: AccessDeniedException \(HTTP 403\): no"):
        aws.call("lambda.GetFunction", lambda: (_ for _ in ()).throw(plain))
    assert aws.lambda_architecture("arm64") == "arm64" and aws.lambda_architecture("amd64") == "x86_64"
    with pytest.raises(ConfigError):
        aws.lambda_architecture("riscv64")


def test_ssh_urls() -> None:
    assert SshTarget.parse("ssh://nvidia@orin.local:2222") == SshTarget("nvidia", "orin.local", 2222)
    assert SshTarget.parse("ssh://root@10.0.0.5").port == 22
    for bad in ("orin.local", "http://x", "ssh://h:99999"):
        with pytest.raises(ConfigError):
            SshTarget.parse(bad)


def test_measure_request_body_and_resources() -> None:
    card = {"inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 16]},
                       {"name": "ids", "dtype": "int64", "shape": [None, 2]},
                       {"name": "text", "dtype": "str", "shape": [1]}]}
    body = measure.body(card)["inputs"]
    assert [(t["datatype"], t["shape"], len(t["data"])) for t in body] == [("FP32", [1, 16], 16), ("INT64", [1, 2], 2),
                                                                           ("BYTES", [1], 1)]
    sized, source = manifests.resources({"peak_memory_mb": 100.4, "cpu_cores": 0.3})
    assert source == "measured run"
    assert sized == {"cpu_request": "300m", "memory_request_mb": 101, "cpu_limit": "600m", "memory_limit_mb": 229}
    assert manifests.resources(None) == (manifests.DEFAULT_RESOURCES, "defaults")


def _fleet_file(tmp_path: Path, devices: int, fleet: str = "") -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(f"[fleet]\n{fleet}\n" + "".join(f'[[device]]\nname = "d{n}"\nurl = "ssh://root@127.0.0.1:{2200 + n}"\n'
                                                    for n in range(devices)))
    return path


@pytest.mark.parametrize(("devices", "stages", "sizes"), [
    (3, '[1, "50%", "100%"]', [1, 1, 1]), (8, '[1, "25%", "100%"]', [1, 1, 6]), (10, '[2, "50%"]', [2, 3, 5]),
    (1, '[1, "25%", "100%"]', [1]), (4, '["100%"]', [4])])
def test_fleet_stages_are_cumulative_and_cover_every_device(tmp_path: Path, devices: int, stages: str,
                                                            sizes: list[int]) -> None:
    from mlpk.packager.deliver import fleet

    loaded = fleet.load(_fleet_file(tmp_path, devices, f"stages = {stages}"))
    assert [len(s) for s in loaded.stages] == sizes
    assert [d.name for s in loaded.stages for d in s] == [f"d{n}" for n in range(devices)]


def test_fleet_budget_and_device_settings(tmp_path: Path) -> None:
    from mlpk.packager.deliver import fleet

    path = _fleet_file(tmp_path, 2, 'max_failures = "50%"\nport = 9000\nenv = { A = "1", B = "2" }')
    path.write_text(path.read_text() + 'env = { B = "3" }\nnetwork = "host"\n')
    loaded = fleet.load(path)
    assert loaded.budget(loaded.devices) == 1 and loaded.budget(loaded.devices[:1]) == 0
    last = loaded.devices[-1]
    assert (last.port, last.network, dict(last.env)) == (9000, "host", {"A": "1", "B": "3"})


def test_fleet_file_problems_are_listed_together(tmp_path: Path) -> None:
    from mlpk.packager.deliver import fleet

    path = _fleet_file(tmp_path, 2, 'paralel = 2\nstages = ["half"]\nidentity = "missing-key"')
    with pytest.raises(ConfigError) as caught:
        fleet.load(path)
    text = str(caught.value)
    assert "fleet.paralel: unknown field (did you mean 'parallel'?)" in text and "fleet.stages.0:" in text
    path.write_text(path.read_text().replace('paralel = 2\nstages = ["half"]\n', ""))
    with pytest.raises(ConfigError, match="missing-key .* is not a file"):
        fleet.load(path)
    path.write_text('[[device]]\nname = "a"\nurl = "ssh://x"\n[[device]]\nname = "a"\nurl = "ssh://y"\n')
    with pytest.raises(ConfigError, match="the name 'a' is used twice"):
        fleet.load(path)


def test_compose_fronts_and_placement() -> None:
    from mlpk.packager.deliver import compose

    spec = manifests.ServiceSpec("scorer", "reg/s:1", 8080, "65532:65532", "cpu", None, None,
                                 dict(manifests.DEFAULT_RESOURCES), "defaults", 8081, ("scorer",))
    one = compose.compose(spec)
    assert set(one["services"]) == {"scorer"} and one["services"]["scorer"]["ports"][0]["mode"] == "host"
    assert one["services"]["scorer"]["deploy"]["update_config"]["order"] == "stop-first"
    three = compose.compose(spec, replicas=3, placement=manifests.placement(spec, ("mlpack.arch=arm64",)))
    model, front = three["services"]["scorer"], three["services"]["scorer-proxy"]
    assert "ports" not in model and model["deploy"]["endpoint_mode"] == "dnsrr"
    assert model["deploy"]["update_config"]["order"] == "start-first"
    assert model["deploy"]["update_config"]["failure_action"] == "rollback"
    assert model["deploy"]["placement"]["constraints"] == ["node.labels.mlpack.arch == arm64"]
    assert model["deploy"]["resources"]["reservations"] == {"cpus": "0.25", "memory": "256M"}
    assert [p["published"] for p in front["ports"]] == [8080, 8081]
    assert front["environment"]["MLPACK_UPSTREAM"] == "scorer" and front["deploy"]["mode"] == "global"
    mesh = compose.compose(spec, replicas=3, front=compose.Front("mesh"))
    assert set(mesh["services"]) == {"scorer"} and mesh["services"]["scorer"]["ports"][0]["mode"] == "ingress"
    with pytest.raises(ConfigError, match="--front direct publishes the replicas' own ports"):
        compose.compose(spec, replicas=3, front=compose.Front("direct"))
    with pytest.raises(ConfigError, match="is not LABEL=VALUE"):
        manifests.placement(spec, ("mlpack.arch",))
    with pytest.raises(ConfigError, match="--health-interval 0 must be at least 1"):
        compose.compose(spec, rollout=manifests.Rollout(health_interval_s=0))
    gpu = manifests.placement(manifests.ServiceSpec("s", "r/s:1", 8080, "1:1", "jetson", "jetson", None, {}, ""))
    assert gpu == {"mlpack.gpu": "jetson"}
