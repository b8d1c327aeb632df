"""`mlpack deploy swarm` on the real single-node swarm that tests/services/provision.sh starts on the shared engine,
pulling from a real registry on loopback (Debian's docker-registry). Ingress (the routing mesh) never answers on
this machine's kernel (no IPVS), so the stack's one address is the front proxy in host mode. Load comes from a
bounded loop on 127.0.0.1 (tests/deliver/load.py). Each test removes its stack and any node label it set."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlpk.packager.oci import image_from_layout, layout, with_config
from tests.conftest import free_port
from tests.deliver import images, load
from tests.deliver.test_compose_ha import wait_proxy
from tests.deliver.test_manifests import canary_layout
from tests.deliver.transcript import record

pytestmark = [pytest.mark.docker, pytest.mark.swarm, pytest.mark.registry]
# A version whose readiness never succeeds: it listens on 8080 and answers 503 to everything (a request routed to
# it fails, so a proxy that sent traffic there would show in the failure count); it stops on SIGTERM, as the real
# server does (else Swarm waits out the 30 s stop grace period before it rolls back).
NEVER_READY = ("import http.server as h, signal, sys\n"
               "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 has no default SIGTERM action\n"
               "class H(h.BaseHTTPRequestHandler):\n"
               "    def do_GET(self):\n"
               "        self.send_response(503); self.end_headers()\n"
               "    do_POST = do_GET\n"
               "h.ThreadingHTTPServer(('', 8080), H).serve_forever()\n")
# Quick checks, and a start period that a replica of this server meets with room to spare on a busy 2-core host
FAST = ("--health-interval", "1", "--start-period", "20", "--update-delay", "0", "--update-monitor", "5")


@pytest.fixture
def stack(swarm_ready: None, registry) -> Iterator[str]:
    """A stack name of the test's own; afterwards the stack is removed, its containers and network waited out, and
    the images the swarm pulled from the test registry removed from the engine."""
    from tests.deliver.transcript import ALIASES

    name = f"mlpk{uuid.uuid4().hex[:8]}"
    ALIASES[name] = "scorer"
    yield name
    subprocess.run(["docker", "stack", "rm", name], capture_output=True, timeout=120, check=False)
    label = f"label=com.docker.stack.namespace={name}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # services, then their tasks' containers, then the overlay network go
        left = "".join(images.docker(kind, "ls", *(["-a"] if kind == "container" else []), "-q", "--filter", label)
                       for kind in ("service", "container", "network"))
        if not left.strip():
            break
        time.sleep(1)
    # by reference, not by image ID: the same image may also go by other names (deterministic builds)
    pulled = [line for line in images.docker("image", "ls", "--digests", "--format",
                                             "{{.Repository}}@{{.Digest}}").splitlines()
              if line.startswith(f"{registry.host}/")]
    if pulled:
        images.docker("rmi", *sorted(set(pulled)), check=False)


@pytest.fixture(scope="module")
def swarm_ready(docker_engine: str) -> None:
    from tests.conftest import require

    require("swarm")


@pytest.fixture(scope="module")
def versions(exported_cpu: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """v1 (the export's image in an index beside an arm64 twin: a mixed fleet's one index, of which this amd64 node
    must pull its own), v2 (a model-only update: another model under the same name) and a never-ready version, as
    OCI layouts: an export directory may hold a measured run of another test (measured.json), whose reservations
    would not fit 3 replicas on this 2-core node. The arm64 twin is the same layers under an arm64 config: never
    run here, only offered."""
    from mlpk.packager.oci import Image, index
    from mlpk.packager.oci.image import canonical_json

    tmp = tmp_path_factory.mktemp("swarm")
    amd64 = image_from_layout(exported_cpu / "oci")
    config = amd64.config
    config["architecture"] = "arm64"
    mixed = layout.write(index(amd64, Image(canonical_json(config), amd64.layers)), tmp / "v1", "v1")
    v2 = canary_layout(exported_cpu, tmp / "v2")
    bad = with_config(image_from_layout(exported_cpu / "oci"), entrypoint=["/usr/bin/python3", "-c", NEVER_READY],
                      cmd=[])
    return {"v1": mixed, "v2": v2, "bad": layout.write(bad, tmp / "bad", "bad")}


def deploy(mlpack, *args: str, section: str | None = None, as_json: bool = False) -> subprocess.CompletedProcess[str]:
    done = mlpack(*(["--json"] if as_json else []), "deploy", "swarm", *args, timeout=900)
    if section:
        stack = args[args.index("--stack") + 1]
        record(section, ["mlpack", "deploy", "swarm", *args], done)
    return done


def service(stack: str, role: str) -> dict[str, Any]:
    ids = images.docker("service", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={stack}").split()
    found = [s for s in json.loads(images.docker("service", "inspect", *ids))
             if s["Spec"]["Labels"].get("dev.mlpack.role") == role]
    assert len(found) == 1, found
    return found[0]


def image_of(stack: str, role: str = "model") -> str:
    return service(stack, role)["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]


def node_label(key: str, value: str | None) -> None:
    node = images.docker("info", "--format", "{{.Swarm.NodeID}}")
    if value is None:
        images.docker("node", "update", "--label-rm", key, node, check=False)
    else:
        images.docker("node", "update", "--label-add", f"{key}={value}", node)


def test_replicas_rolling_updates_and_rollback(mlpack, registry, stack: str, versions: dict[str, Path]) -> None:
    from tests.deliver.transcript import ALIASES

    ALIASES[registry.host] = "127.0.0.1:5000"
    port, grpc_port = free_port(), free_port()
    ALIASES.update({str(port): "8080", str(grpc_port): "8081"})
    common = ("--stack", stack, "--registry", registry.host, "--port", str(port), "--grpc-port", str(grpc_port),
              "--name", "scorer", *FAST)
    site = f"lab-{stack}"
    try:
        # Placement: no node has the label, so no replica can start, and the deployment says so quickly.
        refused = deploy(mlpack, str(versions["v1"]), *common, "--placement", f"mlpack.site={site}")
        assert refused.returncode == 10 and "no node can take its tasks" in refused.stderr, refused.stderr
        assert f"node.labels.mlpack.site == {site}" in refused.stderr and "--label-add" in refused.stderr
        record("swarm", ["mlpack", "deploy", "swarm", "v1/", "--stack", "scorer", "--registry", "127.0.0.1:5000",
                         "--placement", "mlpack.site=lab"], refused, replace={site: "lab"})
        node_label("mlpack.site", site)
        done = deploy(mlpack, str(versions["v1"]), *common, "--placement", f"mlpack.site={site}", as_json=True)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        model = next(s for s in result["services"] if s["role"] == "model")
        assert (model["running"], model["desired"]) == (3, 3), result
        record("swarm", ["mlpack", "deploy", "swarm", "v1/", "--stack", "scorer", "--registry", "127.0.0.1:5000",
                         "--placement", "mlpack.site=lab"], deploy(mlpack, "--status", "--stack", stack))
        wait_proxy(port, 3)
        with load.running(port, workers=1, max_requests=300) as counts:
            counts.wait_for(300)
        assert counts.failed == 0 and len([r for r in counts.replicas if r != "-"]) == 3, counts.replicas
        v1_image = image_of(stack)
        assert registry.host in v1_image and "@sha256:" in v1_image
        platforms = service(stack, "model")["Spec"]["TaskTemplate"]["Placement"].get("Platforms") or []
        assert {p["Architecture"] for p in platforms} >= {"amd64", "arm64"}, platforms  # the whole index went

        # A version whose readiness never succeeds: Swarm rolls the update back by itself; the load never notices.
        with load.running(port, workers=1, max_seconds=400) as counts:
            counts.wait_for(100)
            bad = deploy(mlpack, str(versions["bad"]), *common, "--placement", f"mlpack.site={site}")
            counts.wait_for(100)
        print(f"swarm, update to a never-ready version: {counts.summary()}")
        assert bad.returncode == 10 and "the update was rolled back" in bad.stderr, bad.stderr
        record("swarm", ["mlpack", "deploy", "swarm", "never-ready/", "--stack", "scorer", "--registry",
                         "127.0.0.1:5000"], bad)
        record("swarm", ["# requests through the stack's port during that update (tests/deliver/load.py)"],
               counts.summary())
        assert image_of(stack) == v1_image and service(stack, "model")["UpdateStatus"]["State"] == \
            "rollback_completed"
        assert counts.total >= 200 and counts.failed <= 0.005 * counts.total, counts.summary()

        # A good update converges, replica by replica, start-first.
        with load.running(port, workers=1, max_seconds=400) as counts:
            counts.wait_for(100)
            good = deploy(mlpack, str(versions["v2"]), *common, "--placement", f"mlpack.site={site}", as_json=True)
            counts.wait_for(100)
        print(f"swarm, good update: {counts.summary()}")
        assert good.returncode == 0, good.stderr
        assert service(stack, "model")["UpdateStatus"]["State"] == "completed" and image_of(stack) != v1_image
        assert counts.failed <= 0.005 * counts.total, counts.summary()
        record("swarm", ["mlpack", "deploy", "swarm", "v2/", "--stack", "scorer", "--registry", "127.0.0.1:5000"],
               deploy(mlpack, "--status", "--stack", stack))
        record("swarm", ["# requests through the stack's port during that update"], counts.summary())

        back = deploy(mlpack, "--rollback", "--stack", stack, section="swarm")
        assert back.returncode == 0, back.stderr
        assert image_of(stack) == v1_image
    finally:
        node_label("mlpack.site", None)


def test_canary_promote_and_abort(mlpack, registry, stack: str, versions: dict[str, Path]) -> None:
    from tests.deliver.transcript import ALIASES

    ALIASES[registry.host] = "127.0.0.1:5000"
    port = free_port()
    ALIASES[str(port)] = "8080"
    grpc_port = free_port()
    ALIASES[str(grpc_port)] = "8081"
    common = ("--stack", stack, "--registry", registry.host, "--port", str(port), "--grpc-port", str(grpc_port),
              "--name", "scorer", "--replicas", "3", *FAST)
    done = deploy(mlpack, str(versions["v1"]), "--canary", str(versions["v2"]), "--canary-weight", "34", *common)
    assert done.returncode == 0, done.stderr
    record("canary", ["mlpack", "deploy", "swarm", "v1/", "--canary", "v2/", "--canary-weight", "34", "--stack",
                      "scorer", "--registry", "127.0.0.1:5000"], done)
    wait_proxy(port, 3)
    with load.running(port, workers=1, max_requests=300) as counts:
        counts.wait_for(300)
    share = sum(n for r, n in counts.replicas.items() if r.startswith("canary")) / counts.total
    print(f"swarm canary: share {share:.3f} of {counts.total}; {dict(counts.replicas)}")
    record("canary", ["# 300 requests through the stack's port, by the replica that answered (X-Mlpack-Replica)"],
           f"{dict(sorted(counts.replicas.items()))}: the canary answered {share:.1%}")
    assert counts.failed == 0 and abs(share - 1 / 3) < 0.1, counts.replicas  # round robin: 1/3 unless one flaps
    canary_image = image_of(stack, "canary")

    aborted = deploy(mlpack, "--abort", "--stack", stack, section="canary")
    assert aborted.returncode == 0, aborted.stderr
    assert service(stack, "model")["Spec"]["Mode"]["Replicated"]["Replicas"] == 3
    assert "canary" not in {s["Spec"]["Labels"].get("dev.mlpack.role") for s in json.loads(images.docker(
        "service", "inspect", *images.docker("service", "ls", "-q", "--filter",
                                             f"label=com.docker.stack.namespace={stack}").split()))}

    again = deploy(mlpack, str(versions["v1"]), "--canary", str(versions["v2"]), "--canary-weight", "34", *common)
    assert again.returncode == 0, again.stderr
    promoted = deploy(mlpack, "--promote", "--stack", stack, section="canary")
    assert promoted.returncode == 0, promoted.stderr
    assert image_of(stack) == canary_image
    wait_proxy(port, 3)
    with load.running(port, workers=1, max_requests=60) as counts:
        counts.wait_for(60)
    assert counts.failed == 0 and all(r.startswith("stable") for r in counts.replicas), counts.replicas


def test_user_errors_are_one_line(mlpack, stack: str, versions: dict[str, Path]) -> None:
    closed = free_port()
    done = deploy(mlpack, str(versions["v1"]), "--stack", stack, "--registry", f"127.0.0.1:{closed}")
    assert done.returncode == 10 and "is unreachable (ConnectError" in done.stderr, done.stderr
    assert "not done: push, stack, converge" in done.stderr and done.stderr.count("\n") == 1
    record("errors", ["mlpack", "deploy", "swarm", "v1/", "--stack", "scorer", "--registry", "127.0.0.1:9"], done,
           replace={f"127.0.0.1:{closed}": "127.0.0.1:9"})
    for args, needle in ((("--rollback",), "has no mlpack model service"), (("--promote",), "has no canary to promote"),
                         (("--rollback", "--abort"), "cannot be combined"),
                         ((str(versions["v1"]),), "needs --registry")):
        done = deploy(mlpack, *args, "--stack", stack)
        assert done.returncode in (2, 10) and needle in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1
