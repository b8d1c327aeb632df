"""`mlpack deliver fleet FLEET.toml IMAGE` over three simulated devices (tests/deliver/devices.py: each a real sshd on
its own loopback port in front of a Docker engine of its own). The images are a real `mlpack export` stacked on a
marker layer of the test's own (images.unique_stack) and model-only updates of it (images.model_update).

The device that fails is the one whose FLEET.toml entry sets SITE=b: the "site bug" version wraps the server's
entrypoint so that, on such a device, the server stops 3 s after it started (the shape of a release that breaks on
one site's configuration). Depending on how fast the device is, it fails its readiness check or its health window;
either way it must be rolled back on its own."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlpk.packager.oci import image_from_layout, layout, with_config
from tests.deliver import devices, images
from tests.deliver.transcript import record

pytestmark = [pytest.mark.docker, pytest.mark.sshd]
SITE_BUG = ("import os, runpy, sys, threading\n"
            "if os.environ.get('SITE') == 'b':\n"
            "    threading.Timer(3, os._exit, (3,)).start()\n"
            "sys.argv = ['mlpk.runtimes.server']\n"
            "runpy.run_module('mlpk.runtimes.server', run_name='__main__')\n")


@pytest.fixture(scope="module")
def sims(docker_engine: str) -> Iterator[list[devices.SimDevice]]:
    from tests.conftest import require

    require("sshd")
    with devices.fleet(3) as started:
        yield started


@pytest.fixture(scope="module")
def versions(exported_cpu: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("fleet")
    v1 = images.unique_stack(image_from_layout(exported_cpu / "oci"), uuid.uuid4().hex[:10])
    site_bug = with_config(images.model_update(v1, tmp / "m2", 21), entrypoint=["/usr/bin/python3", "-c", SITE_BUG],
                           cmd=[])
    v3 = images.model_update(v1, tmp / "m3", 22)
    out: dict[str, Any] = {"images": {"v1": v1, "site-bug": site_bug, "v3": v3}}
    for name, img in out["images"].items():
        out[name] = layout.write(img, tmp / name, f"test/fleet:{name}")
    return out


def write_fleet(path: Path, sims: list[devices.SimDevice], **fleet: Any) -> Path:
    settings = {"service": "scorer", "network": "host", "identity": str(sims[0].ssh.identity),
                "known_hosts": "known_hosts",
                "health_interval": 1, "ready_timeout": 60, **fleet}
    lines = ["[fleet]"] + [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    for number, sim in enumerate(sims):
        lines += ["", "[[device]]", f'name = "{sim.name}"', f'url = "{sim.ssh.url}"',
                  f'env = {{ SITE = "{"abc"[number]}" }}']
    path.write_text("\n".join(lines) + "\n")
    known = path.with_name("known_hosts")
    known.write_text("".join(sim.ssh.known_hosts.read_text() for sim in sims))
    return path


def rollout(mlpack, fleet: Path, image: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    report = fleet.with_name(f"report-{uuid.uuid4().hex[:6]}.json")
    done = mlpack("deliver", "fleet", str(fleet), str(image), "--report", str(report), *extra, timeout=900)
    return done, json.loads(report.read_text()) if report.exists() else {}


def image_id(sim: devices.SimDevice) -> str:
    return sim.docker("inspect", "--format", "{{.Image}}", "scorer")


def config_digest(img: Any) -> str:
    return str(img.config_blob.digest)


def test_rollout_stops_at_its_budget_resumes_and_updates_all(mlpack, sims: list[devices.SimDevice],
                                                              versions: dict[str, Any], tmp_path: Path) -> None:
    imgs = versions["images"]
    # A clean rollout: every device updated (each sends every layer: they start empty).
    fleet = write_fleet(tmp_path / "fleet.toml", sims, stages=["100%"], health_window=2)
    done, report = rollout(mlpack, fleet, versions["v1"])
    assert done.returncode == 0, done.stderr
    record("fleet", ["mlpack", "deliver", "fleet", "fleet.toml", "v1/", "--report", "report.json"], done)
    assert [d["result"] for d in report["devices"]] == ["updated"] * 3, report
    assert all(d["layers_sent"] == len(imgs["v1"].layers) for d in report["devices"])
    assert {image_id(sim) for sim in sims} == {config_digest(imgs["v1"])}

    # Stage 2 holds the device the new version breaks on: rolled back, the rollout stops at its budget (0), the
    # third device is not touched.
    fleet = write_fleet(tmp_path / "fleet.toml", sims, stages=[1, "50%", "100%"], max_failures=0, health_window=4,
                        ready_timeout=30)
    argv = ["mlpack", "deliver", "fleet", "fleet.toml", "site-bug/"]
    done, report = rollout(mlpack, fleet, versions["site-bug"])
    record("fleet", argv, done)
    assert done.returncode == 10 and "the rollout stopped at stage 2 of 3" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "--rollback" in done.stderr
    by_name = {d["name"]: d for d in report["devices"]}
    assert report["state"] == "stopped" and report["stopped_at"] == 2, report
    assert by_name["edge-1"]["result"] == "updated" and by_name["edge-1"]["layers_sent"] == 1
    assert by_name["edge-1"]["layer_bytes"] == imgs["site-bug"].layers[-1].size
    assert by_name["edge-2"]["result"] == "rolled back", by_name["edge-2"]
    assert by_name["edge-2"]["image_after"] == by_name["edge-2"]["image_before"] == config_digest(imgs["v1"])
    assert by_name["edge-3"]["result"] == "not started" and by_name["edge-3"]["bytes_sent"] == 0
    assert [image_id(sim) for sim in sims] == [config_digest(imgs["site-bug"])] + [config_digest(imgs["v1"])] * 2
    sims[1].docker("exec", "scorer", "python3", "-c", "import urllib.request; urllib.request.urlopen("
                   "'http://127.0.0.1:8080/v2/health/ready', timeout=5)")  # the rolled-back device serves
    print(f"fleet, stopped rollout: {json.dumps(report['devices'])}")
    again = mlpack("deliver", "fleet", str(fleet), str(versions["site-bug"]))
    assert again.returncode == 2 and "stopped at stage 2" in again.stderr and "--fresh" in again.stderr

    # Interrupted (kill -9 while stage 2 runs), then resumed from the journal: all three end on v3, each having
    # been sent only the layer it lacked.
    fleet = write_fleet(tmp_path / "fleet.toml", sims, stages=[1, "50%", "100%"], health_window=3)
    journal = tmp_path / ".fleet.rollout.json"
    cli = [str(Path(sys.executable).with_name("mlpack")), "deliver", "fleet", str(fleet), str(versions["v3"])]
    proc = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            with_states = json.loads(journal.read_text()).get("devices", {}) if journal.exists() else {}
            if with_states.get("edge-1", {}).get("result") == "updated" and \
                    with_states.get("edge-2", {}).get("result") in ("updating", "health window"):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the rollout was not caught in stage 2"
    assert json.loads(journal.read_text())["state"] == "running"
    refused = mlpack("deliver", "fleet", str(fleet), str(versions["v1"]))
    assert refused.returncode == 2 and "has an unfinished rollout of" in refused.stderr, refused.stderr
    assert "interrupted at stage 2 of 3" in refused.stderr and "--fresh" in refused.stderr
    record("errors", ["mlpack", "deliver", "fleet", "fleet.toml", "v1/"], refused,
           replace={str(versions["v3"]): "v3/"})
    done, report = rollout(mlpack, fleet, versions["v3"])
    record("fleet", ["mlpack", "deliver", "fleet", "fleet.toml", "v3/", " # again, after a kill -9 in stage 2"],
           done)
    assert done.returncode == 0, done.stderr
    assert report["resumed"] and report["state"] == "done", report
    assert [d["result"] for d in report["devices"]] == ["updated"] * 3, report
    assert [d["from_journal"] for d in report["devices"]] == [True, False, False]  # edge-1 finished before the kill
    assert {image_id(sim) for sim in sims} == {config_digest(imgs["v3"])}
    new_layer = imgs["v3"].layers[-1].size
    for dev in report["devices"]:  # bytes sent <= the new layers' size: only the model layer, at most once
        assert dev["layer_bytes"] <= new_layer and dev["bytes_sent"] <= new_layer + 16 * 1024, dev
    print(f"fleet, resumed rollout: new layer {new_layer} bytes; sent "
          f"{[(d['name'], d['layer_bytes'], d['bytes_sent']) for d in report['devices']]}")

    back = mlpack("--json", "deliver", "fleet", str(fleet), "--rollback")
    assert back.returncode == 0, back.stderr
    assert [d["result"] for d in json.loads(back.stdout)["devices"]] == ["rolled back"] * 3
    assert image_id(sims[2]) == config_digest(imgs["v1"]) and image_id(sims[0]) == config_digest(imgs["site-bug"])


def test_fleet_file_and_device_errors(mlpack, sims: list[devices.SimDevice], versions: dict[str, Any],
                                      tmp_path: Path) -> None:
    bad = tmp_path / "fleet.toml"
    bad.write_text('[fleet]\nhelth_window = 3\nstages = [1, "25 percent"]\n\n[[device]]\nname = "a"\n'
                   'url = "ssh://root@127.0.0.1:9"\nport = 80\ntag = "x"\n')
    done = mlpack("deliver", "fleet", str(bad), str(versions["v1"]))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    for needle in ("fleet.helth_window: unknown field (did you mean 'health_window'?)", "device.0.tag: unknown field",
                   "fleet.stages.1:"):
        assert needle in done.stderr, done.stderr
    record("errors", ["mlpack", "deliver", "fleet", "fleet.toml", "v1/"], done)

    fleet = write_fleet(tmp_path / "unreachable.toml", sims[:1], stages=["100%"])
    text = fleet.read_text().replace(sims[0].ssh.url, "ssh://root@127.0.0.1:9")
    fleet.write_text(text)
    done, report = rollout(mlpack, fleet, versions["v1"])
    assert done.returncode == 10 and report["devices"][0]["result"] == "unreachable", done.stderr
    assert "ECONNREFUSED" in report["devices"][0]["error"]

    # A Docker engine that is not in a swarm (a device's) refuses mlpack deploy swarm with the command to fix it.
    done = mlpack("deploy", "swarm", str(versions["v1"]), "--stack", "x", "--registry", "127.0.0.1:9",
                  env={"DOCKER_HOST": f"unix://{sims[0].socket}"})
    assert done.returncode == 10 and "is not in a swarm (state: inactive)" in done.stderr, done.stderr
    assert "docker swarm init" in done.stderr and done.stderr.count("\n") == 1
    record("errors", ["mlpack", "deploy", "swarm", "v1/", "--stack", "scorer", "--registry", "127.0.0.1:5000"], done)
