"""Regenerate docs/benchmarks.md: mlpack's figures, each measured side by side with its baseline in one run here.

    .venv/bin/python bench/run.py                      # everything (about 15 minutes on 2 cores)
    .venv/bin/python bench/run.py --only server        # one section; the others keep their last figures

Sections: export (cold export against a model-only re-export), size (the exported image against the floor and a
naive framework image), start (process start to ready against the tutorial app), server (against raw onnxruntime
and the servers users pick: KServe, MLServer, BentoML, LitServe, FastAPI, Flask; bench/serving.py), load (dynamic
batching, a burst past the queue, memory under load, clients that hang up; bench/overload.py), grpc (gRPC against HTTP
with binary tensors, one C client; bench/grpc_vs_http.py), quantize (every sample in every mode), lambda (init under
the real Runtime Interface Emulator), card (`mlpack bench` of the exported image). Figures go to
docs/benchmarks/results.json, charts to docs/benchmarks/*.png, the page to docs/benchmarks.md, and the headline
ratios into the README between its `benchmarks` markers.

Needs the `all` extra (tensorflow-cpu, tf-keras, torch, flask, matplotlib), a Docker engine (lambda, card), the
Lambda emulator, wrk and h2load (tests/services/provision.sh provides them); the peers' venvs are made on first use. Trained samples and exports are kept in --work.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import page  # noqa: E402 - bench/ is a folder of scripts
import sections  # noqa: E402

from mlpk.packager import exportdir  # noqa: E402

SECTIONS = ("export", "size", "start", "server", "load", "grpc", "quantize", "lambda", "card")
DOCS = sections.REPO / "docs"


def measure(name: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    if name == "server":
        return sections.server(args.seconds, args.rounds, args.servers)
    if name == "load":
        return sections.load(args.seconds, args.rounds)
    if name == "grpc":
        return sections.grpc(args.grpc_requests, 4)
    if name == "quantize":
        return sections.quantization(work, args.latency_runs)
    models = sections.keras_models(work)
    if name == "export":
        return sections.export_times(work, models)
    if not exportdir.is_export(work / "export-a"):
        sections.export_times(work, models)  # the other sections use the cold export's image and model
    if name == "size":
        return sections.image_sizes(work, models)
    if name == "start":
        return sections.cold_start(work, models, args.runs)
    if name == "lambda":
        return sections.lambda_init(work, args.runs)
    return sections.image_card(work, work / "card", args.duration)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run only these sections (repeatable)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mlpack-bench")
    parser.add_argument("--docs", type=Path, default=DOCS, help="where benchmarks.md and its charts go")
    parser.add_argument("--readme", type=Path, default=sections.REPO / "README.md",
                        help="the README whose benchmarks block gets the headline ratios")
    parser.add_argument("--runs", type=int, default=5, help="cold starts per side (start, lambda)")
    parser.add_argument("--seconds", type=float, default=5, help="wrk's seconds per row and level (server, load)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; each row keeps its best")
    parser.add_argument("--servers", nargs="+", metavar="NAME",
                        help="server: only these (mlpack and the peers of bench/peers.py; default all)")
    parser.add_argument("--grpc-requests", type=int, default=16000, help="requests per row and concurrency (grpc)")
    parser.add_argument("--latency-runs", type=int, default=100, help="timed runs per quantized model")
    parser.add_argument("--duration", type=float, default=5, help="seconds per level of `mlpack bench`")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results_path = args.docs / "benchmarks" / "results.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.is_file() else {}
    started = time.perf_counter()
    for name in args.only or SECTIONS:
        print(f"[{time.perf_counter() - started:6.0f} s] {name} ...", flush=True)
        section_started = time.perf_counter()
        results[name] = measure(name, args.work, args)
        results[name]["seconds"] = round(time.perf_counter() - section_started, 1)
    results["host"] = page.host()
    results["total_seconds"] = round(time.perf_counter() - started, 1) if not args.only else \
        results.get("total_seconds")
    page.write(results, args.docs, args.work, args.readme)
    print(f"[{time.perf_counter() - started:6.0f} s] wrote {args.docs / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
