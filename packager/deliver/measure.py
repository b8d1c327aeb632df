"""A measured run of an image on the local Docker engine: peak memory and CPU while it serves inference requests,
the figures Kubernetes requests and limits are sized from (manifests.resources).

The image is loaded (mlpk.packager.oci.daemon), run with its port on loopback, fed requests built from its model
card (zeros of each input's dtype, symbolic dimensions as 1) from a few threads for a few seconds, while
`docker stats` samples the container's memory and CPU (sampled peaks: a spike between samples can be missed, which
is why the limits keep headroom). The result is kept as measured.json in an export directory so later manifests
reuse it.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlpk.packager.deliver.images import Resolved
from mlpk.packager.errors import DeployError
from mlpk.packager.atomic import atomic_file
from mlpk.packager.oci.build import write_outputs

MODEL_CARD = "/opt/mlpack/model/model-card.json"
# The card of the model a measurement loads: the image's one model, or in a model repository image the newest
# version of its first model (by name): (name, card) as JSON.
_CARD_SCRIPT = f"""
import glob, json, os
one = {MODEL_CARD!r}
found = sorted(glob.glob('/opt/mlpack/models/*/*/model-card.json'),
               key=lambda p: (p.split('/')[-3], -int(p.split('/')[-2]) if p.split('/')[-2].isdigit() else 0))
path = one if os.path.isfile(one) else (found[0] if found else None)
card = json.load(open(path)) if path else {{}}
name = card.get('name', 'model') if path == one else (path.split('/')[-3] if path else 'model')
print(json.dumps({{'name': name, 'card': card}}))
"""
_V2 = {"float32": "FP32", "float64": "FP64", "float16": "FP16", "int64": "INT64", "int32": "INT32",
       "int16": "INT16", "int8": "INT8", "uint8": "UINT8", "bool": "BOOL", "str": "BYTES", "object": "BYTES"}
_UNITS = {"b": 1, "kib": 1024, "kb": 1000, "mib": 1024**2, "mb": 1000**2, "gib": 1024**3, "gb": 1000**3}


@dataclass(frozen=True, slots=True)
class Measurement:
    peak_memory_mb: float
    cpu_cores: float  # peak CPU use, in cores
    requests: int
    seconds: float
    image: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _docker(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise DeployError(f"docker {args[0]} failed while measuring: {' '.join(done.stderr.split())[:300]}",
                          hint="measuring needs the local Docker engine (mlpack doctor)")
    return done.stdout.strip()


def _bytes(text: str) -> float:
    match = re.match(r"([\d.]+)\s*([A-Za-z]+)", text.strip())
    if not match:
        return 0.0
    return float(match.group(1)) * _UNITS.get(match.group(2).lower(), 1)


def body(card: dict[str, Any]) -> dict[str, Any]:
    """A v2 inference request of zeros shaped like the card's inputs (symbolic dimensions as 1)."""
    inputs = []
    for tensor in card.get("inputs", []):
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in tensor.get("shape") or []]
        count = 1
        for d in shape:
            count *= d
        datatype = _V2.get(tensor.get("dtype", "float32"), "FP32")
        value: Any = "" if datatype == "BYTES" else False if datatype == "BOOL" else 0
        inputs.append({"name": tensor["name"], "shape": shape, "datatype": datatype, "data": [value] * count})
    return {"inputs": inputs}


def _wait_ready(url: str, cid: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=3) as answer:  # noqa: S310 - loopback
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if _docker("inspect", "--format", "{{.State.Running}}", cid) != "true":
            break
        time.sleep(0.5)
    raise DeployError(f"the image did not answer /v2/health/ready within {timeout:g} s while measuring",
                      hint=f"run it by hand to see why: docker logs {cid[:12]}")


def _stats(cid: str) -> tuple[float, float]:
    """(memory bytes, CPU cores) from one `docker stats --no-stream` sample (the engine takes two readings ~1 s
    apart for the CPU figure)."""
    row = json.loads(_docker("stats", "--no-stream", "--format", "{{json .}}", cid))
    return (_bytes(row.get("MemUsage", "0B").split("/")[0]),
            float(row.get("CPUPerc", "0%").rstrip("%") or 0) / 100)


def measure(resolved: Resolved, *, duration_s: float = 8, threads: int = 4,
            ready_timeout: float = 120) -> Measurement:
    """Run the image, serve inference requests from `threads` threads for `duration_s`, and return the peaks of
    the `docker stats` samples taken meanwhile."""
    tag = f"mlpack-measure/{resolved.image.digest.hex[:16]}:latest"
    write_outputs(resolved.image, load=tag)
    cid = _docker("run", "-d", "-p", "127.0.0.1::8080", tag)
    peaks = {"memory": 0.0, "cpu": 0.0}
    served: list[int] = []
    try:
        port = _docker("port", cid, "8080/tcp").splitlines()[0].rsplit(":", 1)[-1]
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, cid, ready_timeout)
        found = json.loads(_docker("exec", cid, "/usr/bin/python3", "-c", _CARD_SCRIPT))
        card, name = found["card"], found["name"]
        payload = json.dumps(body(card)).encode()
        stop = threading.Event()

        def infer() -> None:
            request = urllib.request.Request(f"{url}/v2/models/{name}/infer", data=payload,  # noqa: S310 - loopback
                                             headers={"Content-Type": "application/json"})
            while not stop.is_set():
                with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 - loopback
                    served.append(answer.status)

        started = time.monotonic()
        with ThreadPoolExecutor(threads) as pool:
            workers = [pool.submit(infer) for _ in range(threads)]
            while time.monotonic() - started < duration_s and not any(w.done() for w in workers):
                memory, cpu = _stats(cid)
                peaks["memory"], peaks["cpu"] = max(peaks["memory"], memory), max(peaks["cpu"], cpu)
            stop.set()
            for worker in workers:
                worker.result()
        seconds = time.monotonic() - started
    except urllib.error.HTTPError as err:
        raise DeployError(f"an inference request failed while measuring: HTTP {err.code} "
                          f"{err.read()[:200]!r}", hint="check the model card's inputs") from err
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)
        subprocess.run(["docker", "rmi", tag], capture_output=True, check=False)
    if peaks["memory"] <= 0:
        raise DeployError("docker stats reported no memory use for the measured container",
                          hint="check that the engine's cgroup accounting works (docker stats)")
    return Measurement(round(peaks["memory"] / 2**20, 1), round(peaks["cpu"], 3), len(served), round(seconds, 2),
                       str(resolved.image.digest))


def save(measurement: Measurement, export_dir: Path) -> Path:
    """Keep a measurement beside an export's report (read back by manifests.spec)."""
    path = export_dir / "measured.json"
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(measurement.to_dict(), indent=2, sort_keys=True))
    return path
