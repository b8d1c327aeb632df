"""Benchmark: mlpack's server under load against the servers users would pick, all serving the same ONNX model.

Every server runs bench/server.py's MLP (64 -> 256 -> 256 -> 10, FP32, batch 1 per request) with onnxruntime on
one intra-op and one inter-op thread, in one worker process pinned to CPU 1 (`taskset -c 1`); wrk (C, one thread)
drives it over loopback from CPU 0, with as many kept-alive connections as the concurrency. The peers are those of
bench/peers.py (KServe, MLServer, BentoML, LitServe, FastAPI + uvicorn, Flask + Waitress), each in its own venv
with its pinned versions and the onnxruntime and numpy of this repository's venv, each app written as that
framework's docs write one. mlpack is asked twice: v2 JSON (what KServe and MLServer are asked) and v2 with the
binary tensor extension. The floor is raw `session.run`, one call at a time, in a process pinned to CPU 1.

Before any load, each server's answer is checked against onnxruntime's own output for the same input (max
absolute difference 1e-5); a server that cannot be installed, started or answers wrongly is reported with the
error and left out of the figures, while the others go on. Rounds interleave the servers (round 1 runs every
server, then round 2 ..., each round starting one server further on), each server alone on its CPU while it is
measured, so a burst of other work on the machine hits all alike; each row keeps its best round.

    .venv/bin/python bench/serving.py [--seconds 5] [--rounds 2] [--concurrency 1 8 32] [--only NAME ...]
                                      [--out FILE.json]

--out writes JSON: the settings (seconds, rounds, concurrency, CPUs, wrk/onnxruntime/numpy/Python versions), the
floor (`raw_session_run`: calls_per_s, p50_ms, p99_ms), `rows` (row, server, version, protocol, mlpack, the
peer's requirements, and per concurrency rps, p50_ms, p90_ms, p99_ms, errors, requests), `ratios` per concurrency
(the peer with the most req/s, and mlpack's rows' rps/p50/p99 over that peer's), `failed` (server -> error text)
and the peers' venv sizes. Exits 1 when any server failed (the JSON and the table still cover the others).

Needs Debian's wrk (`apt-get install -y wrk`), taskset, two CPUs, and this repository's venv with the `serve` extra.
The peers' venvs are cached under mlpack's cache ($MLPACK_CACHE, else ~/.cache/mlpack) in bench/peers.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402 - bench/ is a folder of scripts
import wrk  # noqa: E402
from server import free_port, make_model  # noqa: E402

from mlpk.packager.locations import cache_dir  # noqa: E402

SERVER_CPU, LOAD_CPU = 1, 0
TOLERANCE = 1e-5  # max absolute difference from onnxruntime's own output
MLPACK = "mlpack"
MLPACK_JSON, MLPACK_BINARY = "mlpack v2 JSON", "mlpack v2 binary"


class WrongAnswer(RuntimeError):
    """A server answered, but not with the model's output for the input."""


@dataclass(frozen=True, slots=True)
class Ask:
    """One way to ask a server for an inference: one row of the table."""

    row: str
    protocol: str
    path: str
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...]
    answer: Callable[[bytes, Mapping[str, str]], np.ndarray]  # (response body, response headers) -> output


@dataclass(frozen=True, slots=True)
class Contender:
    """A server started afresh in every round, and the rows it is asked for."""

    name: str
    title: str
    version: str
    requirements: tuple[str, ...]
    launch: Callable[[int], contextlib.AbstractContextManager[peers.Running]]  # port -> a ready server
    asks: tuple[Ask, ...]


# --- mlpack's own server --------------------------------------------------------------------------------------------

def _binary_header(x: np.ndarray) -> bytes:
    """The v2 binary tensor extension's JSON header: the input's bytes follow it; the output comes back raw too."""
    return json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()


def _binary_answer(body: bytes, headers: Mapping[str, str]) -> np.ndarray:
    """The first output of a binary-extension answer: a JSON header of Inference-Header-Content-Length bytes, then
    each binary output's `binary_data_size` bytes in order."""
    length = headers.get("Inference-Header-Content-Length")
    if length is None:
        raise WrongAnswer(f"a binary answer without Inference-Header-Content-Length: {body[:200]!r}")
    output = json.loads(body[:int(length)])["outputs"][0]
    size = output["parameters"]["binary_data_size"]
    raw = body[int(length):int(length) + size]
    return np.frombuffer(raw, dtype=np.float32).reshape(output["shape"])


def _mlpack_version() -> str:
    """'mlpack-packager 0.1.0 @abc1234', '+dirty' when runtimes/ differs from that commit."""
    version = importlib.metadata.version("mlpack-packager")
    repo = Path(__file__).resolve().parents[1]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                            check=False).stdout.strip()
    if not commit:
        return f"mlpack-packager {version}"
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "runtimes"], cwd=repo, check=False).returncode
    return f"mlpack-packager {version} @{commit}" + ("+dirty" if dirty else "")


@contextlib.contextmanager
def mlpack_server(model_dir: Path, port: int, **settings: str) -> Iterator[peers.Running]:
    """mlpack's server on `model_dir`, pinned to the servers' CPU, with one onnxruntime thread and `settings`
    (MLPACK_* variables) over the bench's."""
    env = {"MLPACK_MODEL_DIR": str(model_dir), "MLPACK_HOST": "127.0.0.1", "MLPACK_PORT": str(port),
           "MLPACK_GRPC_PORT": "0", "MLPACK_THREADS": "1", "MLPACK_LOG_LEVEL": "warning", **settings}
    with tempfile.TemporaryDirectory(prefix="mlpack-bench-serving-") as cwd, \
            peers.serve([sys.executable, "-m", "mlpk.runtimes.server"], env, Path(cwd),
                        f"http://127.0.0.1:{port}/v2/health/ready", port, SERVER_CPU, MLPACK) as running:
        yield running


def mlpack_contender(model_dir: Path, x: np.ndarray) -> Contender:
    header = _binary_header(x)
    infer = "/v2/models/mlp/infer"
    asks = (Ask(MLPACK_JSON, "v2 JSON", infer, peers.v2_body(x, "x"), "application/json", (),
                lambda body, _headers: peers.v2_answer(body)),
            Ask(MLPACK_BINARY, "v2 binary tensors", infer, header + x.tobytes(), "application/octet-stream",
                (("Inference-Header-Content-Length", str(len(header))),), _binary_answer))
    return Contender(MLPACK, "mlpack", _mlpack_version(), (), lambda port: mlpack_server(model_dir, port), asks)


def peer_contender(peer: peers.Peer, venv: Path, model: Path, x: np.ndarray) -> Contender:
    ask = Ask(peer.name, peer.protocol, peer.path, peer.body(x, "x"), peer.content_type, (),
              lambda body, _headers: peer.answer(body))
    return Contender(peer.name, peer.title, peers.versions(venv), peers.requirements(peer),
                     lambda port: peers.start(peer, venv, model, port, SERVER_CPU), (ask,))


# --- measuring ------------------------------------------------------------------------------------------------------

RAW_SCRIPT = textwrap.dedent('''
    import json, sys, time
    import numpy as np
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
    width = session.get_inputs()[0].shape[1]
    x = np.random.default_rng(1).standard_normal((1, width)).astype(np.float32)
    for _ in range(200):
        session.run(None, {"x": x})
    latencies, end = [], time.perf_counter() + float(sys.argv[2])
    started = time.perf_counter()
    while time.perf_counter() < end:
        t = time.perf_counter()
        session.run(None, {"x": x})
        latencies.append(time.perf_counter() - t)
    seconds = time.perf_counter() - started
    latencies.sort()
    print(json.dumps({"calls_per_s": len(latencies) / seconds, "p50_ms": latencies[len(latencies) // 2] * 1e3,
                      "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3, "calls": len(latencies)}))
''')


def raw_session(model: Path, seconds: float) -> dict[str, float]:
    """`session.run` one call at a time in a process pinned to the servers' CPU: the floor under every server."""
    done = subprocess.run(peers.pinned([sys.executable, "-c", RAW_SCRIPT, str(model), str(seconds)], SERVER_CPU),
                          capture_output=True, text=True, check=False, env={**os.environ, **peers.THREAD_ENV})
    if done.returncode != 0:
        raise SystemExit(f"raw session.run failed: {done.stderr.strip()[-800:]}")
    return dict(json.loads(done.stdout))


def check(running: peers.Running, ask: Ask, expected: np.ndarray) -> None:
    """One request; its output must be the model's for the input (max absolute difference TOLERANCE)."""
    request = urllib.request.Request(running.url + ask.path, data=ask.body, method="POST",
                                     headers={"Content-Type": ask.content_type, **dict(ask.headers)})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - loopback only
            body, headers = answer.read(), answer.headers
    except urllib.error.HTTPError as err:
        raise WrongAnswer(f"{ask.row}: POST {ask.path} answered {err.code}: "
                          f"{err.read()[:400].decode(errors='replace')}") from err
    try:
        got = ask.answer(body, headers)
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise WrongAnswer(f"{ask.row}: cannot read the output from {body[:300]!r}: {err}") from err
    if got.shape != expected.shape:
        raise WrongAnswer(f"{ask.row}: output shape {list(got.shape)}, onnxruntime's is {list(expected.shape)}")
    worst = float(np.max(np.abs(got - expected)))
    if not worst <= TOLERANCE:
        raise WrongAnswer(f"{ask.row}: output differs from onnxruntime's by {worst:.3g} (> {TOLERANCE})")


def load(running: peers.Running, ask: Ask, connections: int, seconds: float) -> wrk.WrkResult:
    return wrk.run(running.url + ask.path, ask.body, ask.content_type, connections, seconds, LOAD_CPU,
                   dict(ask.headers))


def measure(contenders: list[Contender], model: Path, expected: np.ndarray, concurrencies: tuple[int, ...],
            seconds: float, rounds: int, failed: dict[str, str]) -> tuple[dict[str, float], dict[str, dict[int, Any]]]:
    """Interleaved rounds; the best round (most requests/s) of each row and concurrency, and the raw floor's best.
    A contender that fails goes into `failed` with its error and is not started again."""
    best: dict[str, dict[int, wrk.WrkResult]] = {}
    raw: dict[str, float] = {}
    for index in range(rounds):
        floor = raw_session(model, seconds)
        if floor["calls_per_s"] > raw.get("calls_per_s", 0.0):
            raw = floor
        # Each round starts one server further on, so no server is always measured first (or last) in a round.
        shift = index % max(len(contenders), 1)
        for contender in contenders[shift:] + contenders[:shift]:
            if contender.name in failed:
                continue
            print(f"round {index + 1}/{rounds}: {contender.name}", file=sys.stderr, flush=True)
            try:
                with contender.launch(free_port()) as running:
                    for ask in contender.asks:
                        check(running, ask, expected)
                        load(running, ask, max(concurrencies), min(seconds, 2.0))  # warm up, not kept
                    for connections in concurrencies:
                        for ask in contender.asks:
                            result = load(running, ask, connections, seconds)
                            kept = best.setdefault(ask.row, {})
                            if connections not in kept or result.rps > kept[connections].rps:
                                kept[connections] = result
            except (peers.PeerError, wrk.WrkError, WrongAnswer) as err:
                failed[contender.name] = str(err)
                for ask in contender.asks:
                    best.pop(ask.row, None)
                print(f"  {contender.name} failed: {err}", file=sys.stderr, flush=True)
    return raw, {row: dict(results) for row, results in best.items()}


# --- the report -----------------------------------------------------------------------------------------------------

def _dir_mb(path: Path) -> float:
    total = sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file() and not entry.is_symlink())
    return total / 2**20


def report(contenders: list[Contender], raw: dict[str, float], best: dict[str, dict[int, wrk.WrkResult]],
           failed: dict[str, str], seconds: float, rounds: int, concurrency: tuple[int, ...],
           venvs: dict[str, Path]) -> dict[str, Any]:
    rows = []
    for contender in contenders:
        for ask in contender.asks:
            if ask.row in best:
                rows.append({"row": ask.row, "server": contender.title, "version": contender.version,
                             "protocol": ask.protocol, "mlpack": contender.name == MLPACK,
                             "requirements": list(contender.requirements),
                             "results": {str(c): asdict(r) for c, r in sorted(best[ask.row].items())}})
    ratios: dict[str, dict[str, Any]] = {}
    for connections in concurrency:
        peer_rows = [row for row in rows if not row["mlpack"]]
        if not peer_rows:
            continue
        top = max(peer_rows, key=lambda row: row["results"][str(connections)]["rps"])
        top_result = top["results"][str(connections)]
        entry: dict[str, Any] = {"best_peer": top["row"], "best_peer_rps": top_result["rps"]}
        for row in rows:
            if row["mlpack"]:
                mine = row["results"][str(connections)]
                entry[row["row"]] = {"rps": mine["rps"] / top_result["rps"],
                                     "p50": mine["p50_ms"] / top_result["p50_ms"],
                                     "p99": mine["p99_ms"] / top_result["p99_ms"]}
        ratios[str(connections)] = entry
    return {
        "benchmark": "serving under load",
        "model": "MLP 64-256-256-10 (bench/server.py make_model), FP32, batch 1 per request",
        "seconds_per_row": seconds, "rounds": rounds, "concurrency": list(concurrency),
        "server_cpu": SERVER_CPU, "load_cpu": LOAD_CPU,
        "load": f"{wrk.version()}, 1 thread, one kept-alive connection per concurrent request",
        "onnxruntime": importlib.metadata.version("onnxruntime"), "numpy": importlib.metadata.version("numpy"),
        "python": platform.python_version(), "cpu_model": _cpu_model(),
        "raw_session_run": raw, "rows": rows, "ratios": ratios, "failed": failed,
        "peer_venvs_mb": {name: round(_dir_mb(path), 1) for name, path in venvs.items()},
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def render(results: dict[str, Any]) -> str:
    concurrencies = results["concurrency"]
    raw = results["raw_session_run"]
    lines = [f"MLP 64-256-256-10, batch 1. Each server alone on CPU {results['server_cpu']}; load: "
             f"{results['load']}, on CPU {results['load_cpu']}; {results['seconds_per_row']:g} s per row, best of "
             f"{results['rounds']} round(s). Latencies in ms.",
             f"raw session.run, one call at a time on CPU {results['server_cpu']}: "
             f"{raw['calls_per_s']:.0f} calls/s, p50 {raw['p50_ms']:.3f} ms", ""]
    head = f"{'server':18} {'version':36}" + "".join(f" | {'c=' + str(c):>5} {'req/s':>6} {'p50':>6} {'p99':>7}"
                                                    for c in concurrencies)
    lines += [head + " | errors", "-" * (len(head) + 9)]
    for row in results["rows"]:
        cells = "".join(f" | {'':5} {result['rps']:6.0f} {result['p50_ms']:6.2f} {result['p99_ms']:7.2f}"
                        for result in (row["results"][str(c)] for c in concurrencies))
        errors = sum(result["errors"] for result in row["results"].values())
        lines.append(f"{row['row']:18} {row['version'][:36]:36}{cells} | {errors}")
    lines.append("")
    for connections, entry in results["ratios"].items():
        mine = "; ".join(f"{name} {ratio['rps']:.2f}x its req/s, {ratio['p50']:.2f}x its p50, "
                         f"{ratio['p99']:.2f}x its p99" for name, ratio in entry.items() if isinstance(ratio, dict))
        lines.append(f"c={connections}: best peer {entry['best_peer']} ({entry['best_peer_rps']:.0f} req/s): "
                     f"{mine or 'mlpack not run'}")
    for name, error in results["failed"].items():
        lines.append(f"FAILED {name}: {error}")
    if results["peer_venvs_mb"]:
        lines.append("peer venvs: " + ", ".join(f"{name} {mb:.0f} MiB"
                                                for name, mb in results["peer_venvs_mb"].items()))
    return "\n".join(lines)


def run(seconds: float, rounds: int, concurrency: tuple[int, ...], only: list[str] | None = None) -> dict[str, Any]:
    """Measure mlpack and the peers (`only` those named; all by default) and return the results (module docstring);
    a peer that fails is in the results' `failed`."""
    chosen = only or [MLPACK, *peers.PEERS]
    started = time.monotonic()
    failed: dict[str, str] = {}
    venvs: dict[str, Path] = {}
    root = cache_dir() / "bench" / "peers"
    wrk.require()
    with tempfile.TemporaryDirectory(prefix="mlpack-bench-serving-") as tmp:
        model = make_model(Path(tmp) / "model")
        x = np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        expected = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        contenders = [mlpack_contender(model.parent, x)] if MLPACK in chosen else []
        for name in (n for n in chosen if n != MLPACK):
            print(f"venv for {name} under {root}", file=sys.stderr, flush=True)
            try:
                venvs[name] = peers.ensure(peers.PEERS[name], root)
                contenders.append(peer_contender(peers.PEERS[name], venvs[name], model, x))
            except peers.PeerError as err:
                failed[name] = str(err)
                print(f"  {name} failed: {err}", file=sys.stderr, flush=True)
        raw, best = measure(contenders, model, expected, concurrency, seconds, rounds, failed)
    results = report(contenders, raw, best, failed, seconds, rounds, concurrency, venvs)
    results["wall_s"] = round(time.monotonic() - started, 1)
    return results


def main() -> int:
    names = (MLPACK, *peers.PEERS)
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="wrk's duration per row and concurrency")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; each row keeps its best")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--only", nargs="+", choices=names, metavar="NAME",
                        help=f"only these servers (of {', '.join(names)})")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    if args.seconds < 1 or args.rounds < 1 or min(args.concurrency) < 1:
        parser.error("--seconds, --rounds and every --concurrency must be at least 1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind the with-blocks: servers are stopped
    results = run(args.seconds, args.rounds, tuple(args.concurrency), args.only)
    print(render(results))
    print(f"wall time {results['wall_s']:.0f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # the servers were stopped on the way out (their with-blocks)
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
