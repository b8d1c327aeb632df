"""Benchmark: mlpack's server when load is more than a run can take — dynamic batching, and backpressure.

Four measurements, each on mlpack's server pinned to CPU 1 with one onnxruntime thread (load from CPU 0):
- batching: a larger MLP (512 -> 2048 -> 2048 -> 10, 21 MB of weights, batch 1 per request) at 8-way concurrency,
  unbatched and with MLPACK_MAX_BATCH_SIZE=8 and MLPACK_BATCH_DELAY_US=BATCH_DELAY_US (v2 JSON and v2 binary,
  wrk), against raw `session.run` one call at a time on the same CPU: a batch reads the weights once for all its
  calls, and onnxruntime's kernels do more per row on 8 rows than on one. Interleaved rounds, best round per row.
  Prints the batched rows over raw, the batched p99 over the unbatched and the calls per batched run.
- burst: a model version with one run and a queue of 8, busy with a long call, gets 80 calls at once (ten times its
  queue) on 80 connections from one event loop: how many wait and how many are refused, how soon each refusal
  (429 + Retry-After) arrives after its request was sent, and whether any answer is a 5xx.
- memory: the server's resident memory (VmRSS) after a warm-up, after 20,000 requests at 16-way concurrency, and
  after 20,000 more: the growth of each.
- disconnects: 40 clients that send a call to a busy model version and hang up at once: the calls dropped from the
  queue (mlpack_requests_shed_total{reason="client_gone"}) and the runs made (only the busy one).

    .venv/bin/python bench/overload.py [--seconds 5] [--rounds 2] [--only batching|burst|memory|disconnects]
                                       [--out FILE.json]

Needs Debian's wrk (`apt-get install -y wrk`), taskset and two CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import serving  # noqa: E402 - bench/ is a folder of scripts
import wrk  # noqa: E402
from server import free_port  # noqa: E402

from tests.runtime.models import sleeper  # noqa: E402 - the scheduling tests' model whose call sets its run time

BIG = (512, 2048, 2048, 10)
QUEUE = 8
# How long the oldest waiting call may wait for a full batch. wrk's connections are closed-loop clients (each sends its
# next call when its answer arrives): with no delay, a run starts with whatever is waiting when the last one ends,
# the calls it answered come back while it runs, and the clients settle into two groups that alternate, 3.4 calls per
# run at concurrency 8 (measured). Waiting up to a run's time (0.7 ms for 8 rows of this model) lets them meet again.
BATCH_DELAY_US = 1000


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=30) as answer:  # noqa: S310 - loopback only
        text = answer.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def batching(work: Path, seconds: float, rounds: int) -> dict[str, Any]:
    model = serving.make_model(work / "big", BIG)
    x = np.random.default_rng(1).standard_normal((1, BIG[0])).astype(np.float32)
    asks = serving.mlpack_contender(model.parent, x).asks
    settings = {"unbatched": {}, "batched": {"MLPACK_MAX_BATCH_SIZE": "8", "MLPACK_BATCH_DELAY_US": str(BATCH_DELAY_US)}}
    best: dict[str, dict[str, Any]] = {}
    raw: dict[str, float] = {}
    per_round: dict[str, list[float]] = {"v2 JSON": [], "v2 binary": []}  # batched over that round's raw
    for _ in range(rounds):
        floor = serving.raw_session(model, seconds)
        raw = floor if floor["calls_per_s"] > raw.get("calls_per_s", 0.0) else raw
        for mode, env in settings.items():
            with serving.mlpack_server(model.parent, free_port(), **env) as running:
                for ask in asks:
                    wrk.run(running.url + ask.path, ask.body, ask.content_type, 8, 1, serving.LOAD_CPU,
                            dict(ask.headers))  # warm up, not kept
                    result = wrk.run(running.url + ask.path, ask.body, ask.content_type, 8, seconds,
                                     serving.LOAD_CPU, dict(ask.headers))
                    row = f"{ask.row.replace('mlpack ', '')} {mode}"
                    if mode == "batched":
                        per_round[ask.row.replace("mlpack ", "")].append(result.rps / floor["calls_per_s"])
                    if row not in best or result.rps > best[row]["rps"]:
                        best[row] = dataclasses.asdict(result)
                if mode == "batched":
                    calls, runs = (_metric(running.url, "mlpack_batch_size_sum"),
                                   _metric(running.url, "mlpack_batch_size_count"))
                    best[f"calls per batched run ({mode})"] = {"mean": calls / runs if runs else 0.0}
    ratios = {}
    for kind in ("v2 JSON", "v2 binary"):
        batched, unbatched = best[f"{kind} batched"], best[f"{kind} unbatched"]
        ratios[kind] = {"batched_over_raw": batched["rps"] / raw["calls_per_s"],
                        "unbatched_over_raw": unbatched["rps"] / raw["calls_per_s"],
                        "batched_p99_over_unbatched_p99": batched["p99_ms"] / unbatched["p99_ms"],
                        "batched_over_raw_per_round": per_round[kind]}
    return {"model": "MLP " + "-".join(map(str, BIG)), "concurrency": 8, "batch_delay_us": BATCH_DELAY_US,
            "raw_session_run": raw, "rows": best, "ratios": ratios}


async def _exchange(host: str, port: int, request: bytes, hang_up: bool = False) -> tuple[int, float]:
    """Send `request` on a new connection; (status, seconds from sending to the status line), or (0, 0) after
    hanging up at once when `hang_up`."""
    reader, writer = await asyncio.open_connection(host, port)
    started = time.perf_counter()
    writer.write(request)
    await writer.drain()
    if hang_up:
        writer.close()
        return 0, 0.0
    line = await reader.readline()
    took = time.perf_counter() - started
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    writer.close()
    return int(line.split()[1]), took


def _request(rounds: int, width: int = 256) -> bytes:
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, width], "data": [0.01] * width},
                                  {"name": "n", "datatype": "INT64", "shape": [], "data": [rounds]}]}).encode()
    return (f"POST /v2/models/sleeper/infer HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def _busy(url: str, port: int) -> tuple[asyncio.AbstractEventLoop, Any, int]:
    """Calibrate the sleeper to a call of about 3 s and start one: (a loop, the call's future, its rounds)."""
    base, times = 256, []
    for _ in range(3):
        before = _metric(url, 'mlpack_inference_duration_seconds_sum{model="sleeper"')
        asyncio.run(_exchange("127.0.0.1", port, _request(base)))
        times.append(_metric(url, 'mlpack_inference_duration_seconds_sum{model="sleeper"') - before)
    rounds = int(base * 3.0 / max(min(times), 1e-4))
    loop = asyncio.new_event_loop()
    busy = loop.create_task(_exchange("127.0.0.1", port, _request(rounds)))
    deadline = time.monotonic() + 30
    while _metric(url, "mlpack_runs_active") < 1:
        loop.run_until_complete(asyncio.sleep(0.01))
        assert time.monotonic() < deadline, "the long call did not start"
    return loop, busy, rounds


def burst(work: Path) -> dict[str, Any]:
    model_dir = sleeper(work / "sleeper")
    port = free_port()
    with serving.mlpack_server(model_dir, port, MLPACK_MAX_CONCURRENT_RUNS="1", MLPACK_MAX_QUEUE=str(QUEUE),
                               MLPACK_WARMUP_RUNS="0") as running:
        loop, busy, _ = _busy(running.url, port)

        async def calls() -> list[tuple[int, float]]:
            return list(await asyncio.gather(*(_exchange("127.0.0.1", port, _request(0))
                                               for _ in range(10 * QUEUE))))

        answers = loop.run_until_complete(calls())
        loop.run_until_complete(busy)
        loop.close()
    refused = sorted(took * 1000 for status, took in answers if status == 429)
    return {"queue": QUEUE, "calls": len(answers), "ran": sum(1 for status, _ in answers if status == 200),
            "refused_429": len(refused), "server_errors_5xx": sum(1 for status, _ in answers if status >= 500),
            "refusal_ms": {"p50": statistics.median(refused) if refused else None,
                           "max": refused[-1] if refused else None}}


def _rss(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) * 1024 for line in text.splitlines() if line.startswith("VmRSS:"))


def memory(work: Path) -> dict[str, Any]:
    model = serving.make_model(work / "mlp")
    x = np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)
    ask = serving.mlpack_contender(model.parent, x).asks[0]
    with serving.mlpack_server(model.parent, free_port()) as running:
        def requests(count: int) -> int:
            done = 0
            while done < count:
                done += wrk.run(running.url + ask.path, ask.body, ask.content_type, 16,
                                1, serving.LOAD_CPU).requests
            return done

        requests(5000)  # warm up
        idle = _rss(running.pid)
        first = requests(20_000)
        after_first = _rss(running.pid)
        second = requests(20_000)
        after_second = _rss(running.pid)
    return {"concurrency": 16, "rss_warm_mb": idle / 2**20, "requests": [first, second],
            "rss_after_mb": [after_first / 2**20, after_second / 2**20],
            "growth_mb": [(after_first - idle) / 2**20, (after_second - after_first) / 2**20]}


def disconnects(work: Path, clients: int = 40) -> dict[str, Any]:
    model_dir = sleeper(work / "sleeper")
    port = free_port()
    with serving.mlpack_server(model_dir, port, MLPACK_MAX_CONCURRENT_RUNS="1", MLPACK_MAX_QUEUE="64",
                               MLPACK_WARMUP_RUNS="0") as running:
        loop, busy, _ = _busy(running.url, port)
        runs_before = _metric(running.url, "mlpack_inference_duration_seconds_count")  # the busy call not yet in

        async def leave() -> None:
            await asyncio.gather(*(_exchange("127.0.0.1", port, _request(0), hang_up=True) for _ in range(clients)))

        loop.run_until_complete(leave())
        loop.run_until_complete(busy)
        loop.close()
        time.sleep(0.5)
        gone = _metric(running.url, 'mlpack_requests_shed_total{model="sleeper",reason="client_gone"')
        runs = _metric(running.url, "mlpack_inference_duration_seconds_count") - runs_before - 1  # the busy call
    return {"clients_gone": clients, "dropped_from_queue": gone, "runs_of_theirs": runs}


def _rounds(ratio: dict[str, Any]) -> str:
    return ", ".join(f"{value:.2f}x" for value in ratio.get("batched_over_raw_per_round", [])) or "not measured"


def render(results: dict[str, Any]) -> str:
    lines = []
    if "batching" in results:
        b = results["batching"]
        lines.append(f"{b['model']}, concurrency {b['concurrency']}; raw session.run one call at a time: "
                     f"{b['raw_session_run']['calls_per_s']:,.0f} calls/s")
        for row, figures in b["rows"].items():
            if "rps" in figures:
                lines.append(f"  {row:24} {figures['rps']:8,.0f} req/s  p50 {figures['p50_ms']:.2f} ms  "
                             f"p99 {figures['p99_ms']:.2f} ms  errors {figures['errors']}")
        for row, figures in b["rows"].items():
            if "mean" in figures:
                lines.append(f"  {row}: {figures['mean']:.2f} (max batch 8, queue delay {b.get('batch_delay_us', 0)} us)")
        for kind, ratio in b["ratios"].items():
            lines.append(f"  {kind}: batched {ratio['batched_over_raw']:.2f}x raw session.run (unbatched "
                         f"{ratio['unbatched_over_raw']:.2f}x); batched p99 {ratio['batched_p99_over_unbatched_p99']:.2f}x"
                         f" the unbatched p99; each round against its own raw: {_rounds(ratio)}")
    if "burst" in results:
        u = results["burst"]
        lines.append(f"burst of {u['calls']} calls at a queue of {u['queue']}: {u['ran']} ran, {u['refused_429']} "
                     f"refused 429 (p50 {u['refusal_ms']['p50']:.1f} ms, max {u['refusal_ms']['max']:.1f} ms after "
                     f"sending), {u['server_errors_5xx']} 5xx")
    if "memory" in results:
        m = results["memory"]
        lines.append(f"memory: VmRSS {m['rss_warm_mb']:.1f} MB warm, then +{m['growth_mb'][0]:.2f} MB over "
                     f"{m['requests'][0]:,} requests and +{m['growth_mb'][1]:.2f} MB over {m['requests'][1]:,} more "
                     f"at concurrency {m['concurrency']}")
    if "disconnects" in results:
        d = results["disconnects"]
        lines.append(f"disconnects: {d['clients_gone']} clients left while queued; {d['dropped_from_queue']:.0f} "
                     f"calls dropped (client_gone), {d['runs_of_theirs']:.0f} of theirs run")
    return "\n".join(lines)


SECTIONS = ("batching", "burst", "memory", "disconnects")


def measure(names: tuple[str, ...], seconds: float, rounds: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mlpack-bench-overload-") as tmp:
        work = Path(tmp)
        for name in names:
            print(f"{name} ...", file=sys.stderr, flush=True)
            if name == "batching":
                results[name] = batching(work, seconds, rounds)
            elif name == "burst":
                results[name] = burst(work)
            elif name == "memory":
                results[name] = memory(work)
            else:
                results[name] = disconnects(work)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", action="append", choices=SECTIONS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = measure(tuple(args.only or SECTIONS), args.seconds, args.rounds)
    print(render(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
