"""docs/benchmarks.md from bench/run.py's figures: a headline table, one section per measurement with its charts,
and for every figure the command that reproduces it. Also writes the headline ratios into the README."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RUN = ".venv/bin/python bench/run.py"
MB = 1e6
README_START, README_END = "<!-- benchmarks: written by bench/run.py -->", "<!-- /benchmarks -->"


def host() -> dict[str, Any]:
    import onnxruntime

    from mlpk.packager import __version__

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "mlpack": __version__, "date": time.strftime("%Y-%m-%d"),
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                     cwd=REPO, check=False).stdout.strip()}


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _mb(n: float) -> str:
    return f"{n / MB:,.1f} MB"


def _charts(results: dict[str, Any], folder: Path) -> dict[str, str]:
    """Draw every chart the figures allow; returns name -> file name (relative to docs/)."""
    from mlpk.packager.bench import charts

    folder.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, str] = {}

    def keep(name: str, path: Path) -> None:
        drawn[name] = f"{folder.name}/{path.name}"

    if "size" in results:
        totals = results["size"]["totals"]
        keep("size", charts.bars({"floor (base + onnxruntime + numpy + model)": totals["floor"]["uncompressed"] / MB,
                                  "mlpack export (cpu, amd64)": totals["mlpack"]["uncompressed"] / MB,
                                  "naive (tensorflow-cpu + tf-keras + Flask)": totals["naive"]["uncompressed"] / MB},
                                 folder / "image-size.png", title="Image size, uncompressed (same Debian base)",
                                 unit="MB", xlabel="uncompressed image size (MB)"))
    if "start" in results:
        start = results["start"]
        keep("start", charts.latency_distribution(
            {"mlpack server (onnxruntime)": [v * 1000 for v in start["mlpack_s"]],
             "tutorial app (tf-keras + Flask)": [v * 1000 for v in start["naive_s"]]},
            folder / "start-to-ready.png", title=f"Process start to ready, {start['runs']} fresh starts each",
            xlabel="start to ready (ms)", ylabel="starts ready within (%)"))
    if "export" in results:
        export = results["export"]
        keep("export", charts.bars({"cold export": export["cold_s"], "re-export, model-only change":
                                    export["model_only_s"]}, folder / "export-time.png",
                                   title="mlpack export, keras CNN -> cpu (amd64 + arm64)", unit="s",
                                   xlabel="wall-clock time (s)"))
    if "server" in results:
        rows = results["server"]["rows"]
        keep("throughput", charts.throughput_by_concurrency(
            {row["row"]: {int(c): r["rps"] for c, r in row["results"].items()} for row in rows},
            folder / "server-throughput.png", title="Throughput against concurrency, MLP 64-256-256-10, one core",
            p99_ms={row["row"]: {int(c): r["p99_ms"] for c, r in row["results"].items()} for row in rows}))
        level = "8" if "8" in rows[0]["results"] else max(rows[0]["results"], key=int)
        keep("peers", charts.bars({row["row"]: row["results"][level]["rps"] for row in rows},
                                  folder / "server-peers.png", title=f"req/s at {level}-way concurrency, one core",
                                  unit="req/s", xlabel="requests per second"))
    if "quantize" in results:
        rows = [r for r in results["quantize"]["rows"] if "refused" not in r]
        keep("quantize", charts.bars({f"{r['sample']}, {r['mode']}" + ("" if r["for"] == "cpu" else " (TRT)"):
                                      r["latency"]["speedup"] for r in rows}, folder / "quantize-speed.png",
                                     title="Quantized / FP32 speed-up on this CPU, batch 1", unit="x",
                                     xlabel="speed-up against the FP32 model (x; below 1 is slower)"))
    if "lambda" in results and results["lambda"]["to_first_answer_s"]:
        lam = results["lambda"]
        series = {"container start to first answer": [v * 1000 for v in lam["to_first_answer_s"]]}
        if lam["init_ms"]:
            series["init phase (emulator's INIT REPORT)"] = lam["init_ms"]
        keep("lambda", charts.latency_distribution(series, folder / "lambda-init.png",
                                                   title=f"Lambda cold starts under the RIE, {lam['runs']} runs",
                                                   xlabel="time (ms)", ylabel="cold starts within (%)"))
    return drawn


def _headlines(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(figure, mlpack, baseline, ratio, command) rows."""
    rows = []
    if "size" in results:
        t = results["size"]["totals"]
        rows.append(("image size (uncompressed, amd64)", _mb(t["mlpack"]["uncompressed"]),
                     f"naive framework image {_mb(t['naive']['uncompressed'])}",
                     f"{results['size']['naive_vs_mlpack']:.1f}x smaller", f"{RUN} --only size"))
        rows.append(("image size against the floor", _mb(t["mlpack"]["uncompressed"]),
                     f"floor {_mb(t['floor']['uncompressed'])}", f"{results['size']['mlpack_vs_floor']:.2f}x the floor",
                     f"{RUN} --only size"))
    if "start" in results:
        s = results["start"]
        rows.append(("process start to ready (median)", f"{_median(s['mlpack_s']) * 1000:,.0f} ms",
                     f"tutorial app {_median(s['naive_s']) * 1000:,.0f} ms", f"{s['ratio']:.1f}x faster",
                     f"{RUN} --only start"))
    if "export" in results:
        e = results["export"]
        rows.append(("re-export after a model-only change", f"{e['model_only_s']:.1f} s",
                     f"cold export {e['cold_s']:.1f} s", f"{e['ratio']:.1f}x faster", f"{RUN} --only export"))
    if "server" in results:
        srv = results["server"]
        for level in ("8", "1"):
            entry = srv["ratios"].get(level)
            if not entry:
                continue
            for row in ("mlpack v2 JSON", "mlpack v2 binary"):
                if row in entry:
                    mine = next(r for r in srv["rows"] if r["row"] == row)["results"][level]["rps"]
                    rows.append((f"throughput at {level}-way concurrency ({row})", f"{mine:,.0f} req/s",
                                 f"best peer ({entry['best_peer']}) {entry['best_peer_rps']:,.0f} req/s",
                                 f"{entry[row]['rps']:.2f}x", f"{RUN} --only server"))
        binary = next((r for r in srv["rows"] if r["row"] == "mlpack v2 binary"), None)
        if binary and "1" in binary["results"]:
            one, raw = binary["results"]["1"], srv["raw_session_run"]
            rows.append(("p50 latency, one client (mlpack v2 binary)", f"{one['p50_ms']:.3f} ms",
                         f"raw session.run {raw['p50_ms']:.3f} ms", f"+{one['p50_ms'] - raw['p50_ms']:.3f} ms",
                         f"{RUN} --only server"))
    if "load" in results and "batching" in results["load"]:
        batching = results["load"]["batching"]
        ratio = batching["ratios"]["v2 binary"]
        rows.append((f"dynamic batching, {batching['model']}, concurrency {batching['concurrency']} (v2 binary)",
                     f"{batching['rows']['v2 binary batched']['rps']:,.0f} req/s",
                     f"raw session.run {batching['raw_session_run']['calls_per_s']:,.0f} calls/s",
                     f"{ratio['batched_over_raw']:.2f}x", f"{RUN} --only load"))
    if "grpc" in results:
        pair = results["grpc"]["rows"].get("8")
        if pair:
            rpc, http = pair["grpc"], pair["http binary"]
            rows.append(("gRPC throughput at 8-way concurrency (binary tensors)", f"{rpc['rps']:,.0f} req/s",
                         f"HTTP binary {http['rps']:,.0f} req/s", f"{rpc['rps'] / http['rps']:.2f}x",
                         f"{RUN} --only grpc"))
    if "quantize" in results:
        for r in results["quantize"]["rows"]:
            if r["mode"] == "int8-static" and r["for"] == "cpu" and "refused" not in r and "CNN" in r["sample"]:
                rows.append((f"INT8 static, {r['sample']} (size)", f"{r['size']['ratio']:.2f}x FP32 file",
                             f"argmax agreement {r['accuracy']['argmax_agreement']:.1%}",
                             f"{r['latency']['speedup']:.2f}x speed", f"{RUN} --only quantize"))
                break
        for r in results["quantize"]["rows"]:
            if r["mode"] == "int8-dynamic" and "transformer" in r["sample"] and "refused" not in r:
                rows.append(("INT8 dynamic, transformer encoder (speed)", f"{r['latency']['candidate_ms']:.2f} ms",
                             f"FP32 {r['latency']['baseline_ms']:.2f} ms", f"{r['latency']['speedup']:.2f}x faster",
                             f"{RUN} --only quantize"))
    if "lambda" in results and results["lambda"]["init_ms"]:
        lam = results["lambda"]
        rows.append(("Lambda init (median, RIE)", f"{_median(lam['init_ms']):,.0f} ms",
                     "Lambda's init cap 10,000 ms", f"{_median(lam['init_ms']) / 10000:.1%} of the cap",
                     f"{RUN} --only lambda"))
    return rows


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _sections(results: dict[str, Any], charts: dict[str, str]) -> list[str]:
    out: list[str] = []

    def image(name: str, alt: str) -> None:
        if name in charts:
            out.append(f"\n![{alt}]({charts[name]})\n")

    if "size" in results:
        size = results["size"]
        rows = [(f"{image_name}: {layer}", _mb(v["compressed"]), _mb(v["uncompressed"]))
                for image_name, layers in size["layers"].items() for layer, v in layers.items()]
        rows += [(f"**{name} total**", _mb(v["compressed"]), _mb(v["uncompressed"])) for name, v in
                 size["totals"].items()]
        out += ["## Image size", "",
                "The `cpu` export of the keras digits CNN (amd64 image of the index) against the floor - the same "
                f"base with only {', '.join(size['floor_requirements'])} installed the way mlpack installs wheels, "
                "plus the model - and against the naive image of the classic tutorial on the same base: "
                f"`pip install {' '.join(size['naive_requirements'])}` for the same platform, the .h5 and a Flask "
                "app. Sizes are of the layers' tar (uncompressed) and gzip (compressed) bytes.", "",
                _table(("layer", "compressed", "uncompressed"), rows), "",
                f"Reproduce: `{RUN} --only size`"]
        image("size", "image sizes")
    if "start" in results:
        s = results["start"]
        out += ["## Start to ready", "",
                "Fresh processes on this host, alternating, from `exec` until the health endpoint answers 200: "
                "mlpack's server (`python -m mlpk.runtimes.server` on the exported model: onnxruntime session, "
                "warm-up) against the tutorial app (tf-keras loads the .h5, Flask serves it).", "",
                _table(("server", "median", "min", "max"),
                       [(name, f"{_median(v) * 1000:,.0f} ms", f"{min(v) * 1000:,.0f} ms", f"{max(v) * 1000:,.0f} ms")
                        for name, v in (("mlpack", s["mlpack_s"]), ("tutorial app", s["naive_s"]))]), "",
                f"Ratio of medians: **{s['ratio']:.1f}x**. Reproduce: `{RUN} --only start`"]
        image("start", "start to ready")
    if "export" in results:
        e = results["export"]
        out += ["## Export time", "",
                f"`{e['command']}` (convert with parity check, gated INT8 attempt, amd64 + arm64 images, layout "
                "and archives) from a cold cache that shares only verified downloads (no network in either "
                "timing), then the re-export of the retrained CNN (a model-only change) into the same OUT on the "
                "cache the cold run left"
                + (f", which read back {e['cached_layers_read_bytes']:,} bytes of cached layers (the report's "
                   "`cached_layers_read_bytes`)" if "cached_layers_read_bytes" in e else "") + "."
                + (f" The same model-only export into a new OUT, whose wheels lock pip resolves again, took "
                   f"{e['model_only_new_out_s']:.1f} s." if "model_only_new_out_s" in e else ""),
                "", _table(("run", "seconds", "steps (model / build / write)"), [
                    ("cold", f"{e['cold_s']:.1f}", " / ".join(f"{v:.1f}" for v in e["steps_cold"].values())),
                    ("model-only change", f"{e['model_only_s']:.1f}",
                     " / ".join(f"{v:.1f}" for v in e["steps_model_only"].values()))]), "",
                f"Ratio: **{e['ratio']:.1f}x**; layers that kept their digest: {', '.join(e['layers_kept'])}. "
                f"Reproduce: `{RUN} --only export`"]
        image("export", "export time")
    if "server" in results:
        srv = results["server"]
        levels = [str(c) for c in srv["concurrency"]]
        rows = [(row["row"], row["version"], *(f"{row['results'][c]['rps']:,.0f} / {row['results'][c]['p50_ms']:.2f} / "
                                               f"{row['results'][c]['p99_ms']:.2f}" for c in levels),
                 sum(r["errors"] for r in row["results"].values())) for row in srv["rows"]]
        ratios = []
        for level, entry in srv["ratios"].items():
            for name, ratio in entry.items():
                if isinstance(ratio, dict):
                    ratios.append((level, name, f"{entry['best_peer']} ({entry['best_peer_rps']:,.0f} req/s)",
                                   f"{ratio['rps']:.2f}x", f"{ratio['p50']:.2f}x", f"{ratio['p99']:.2f}x"))
        raw = srv["raw_session_run"]
        out += ["## Server", "",
                f"{srv['model']}. Each server alone on CPU {srv['server_cpu']} (one worker process, onnxruntime on "
                f"one thread), each as its framework's docs write an ONNX app (bench/peers.py, bench/peer_apps.py); "
                f"load: {srv['load']}, on CPU {srv['load_cpu']}; {srv['seconds_per_row']:g} s per row and concurrency, the "
                f"best of {srv['rounds']} interleaved round(s). Every server's answer was checked against "
                f"onnxruntime's before its load. Floor: raw `session.run` one call at a time on the same CPU, "
                f"{raw['calls_per_s']:,.0f} calls/s, p50 {raw['p50_ms']:.3f} ms. CPU: {srv['cpu_model']}.", "",
                _table(("row", "version", *(f"c={c}: req/s / p50 ms / p99 ms" for c in levels), "errors"), rows), "",
                _table(("concurrency", "mlpack row", "best peer", "req/s ratio", "p50 ratio", "p99 ratio"), ratios),
                "", *(f"Not measured: {name}: {error[:300]}" for name, error in srv["failed"].items()),
                f"Reproduce: `{RUN} --only server` (or `.venv/bin/python bench/serving.py`)"]
        image("throughput", "throughput and p99 against concurrency")
        image("peers", "requests per second of every server")
    if "load" in results:
        load = results["load"]
        out += ["## Under load: batching and backpressure", ""]
        if "batching" in load:
            b = load["batching"]
            rows = [(row, f"{r['rps']:,.0f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", r["errors"])
                    for row, r in b["rows"].items() if "rps" in r]
            out += [f"Dynamic batching, {b['model']} (21 MB of weights), concurrency {b['concurrency']}, "
                    f"`MLPACK_MAX_BATCH_SIZE=8` and `MLPACK_BATCH_DELAY_US={b.get('batch_delay_us', 0)}` against "
                    "unbatched; raw `session.run` one call at a time on the same CPU: "
                    f"{b['raw_session_run']['calls_per_s']:,.0f} calls/s. Calls per batched run: "
                    + ", ".join(f"{r['mean']:.2f}" for r in b["rows"].values() if "mean" in r) + ".", "",
                    _table(("row", "req/s", "p50 ms", "p99 ms", "errors"), rows), "",
                    *(f"- {kind}: batched **{r['batched_over_raw']:.2f}x** raw session.run (unbatched "
                      f"{r['unbatched_over_raw']:.2f}x); batched p99 {r['batched_p99_over_unbatched_p99']:.2f}x the "
                      "unbatched p99; each round's batched row against that round's raw session.run: "
                      + (", ".join(f"{v:.2f}x" for v in r.get("batched_over_raw_per_round", [])) or "not measured")
                      for kind, r in b["ratios"].items()), "",
                    "The ratios in bold are best round against best round, as every figure on this page; the rounds "
                    "alone show how much the host's other tenants move them (the raw floor itself moved from 2,700 "
                    "to 4,200 calls/s between runs on this machine).", ""]
        if "burst" in load:
            u = load["burst"]
            out += [f"- Burst: {u['calls']} calls at once at a model version with one run and a queue of "
                    f"{u['queue']}, busy: {u['ran']} waited and ran, {u['refused_429']} were refused with 429 + "
                    f"Retry-After, p50 {u['refusal_ms']['p50']:.1f} ms and at most {u['refusal_ms']['max']:.1f} ms "
                    f"after being sent; {u['server_errors_5xx']} 5xx."]
        if "memory" in load:
            m = load["memory"]
            out += [f"- Memory: VmRSS {m['rss_warm_mb']:.1f} MB warm; +{m['growth_mb'][0]:.2f} MB over "
                    f"{m['requests'][0]:,} requests at concurrency {m['concurrency']}, then "
                    f"+{m['growth_mb'][1]:.2f} MB over {m['requests'][1]:,} more."]
        if "disconnects" in load:
            d = load["disconnects"]
            out += [f"- Clients gone: {d['clients_gone']} clients sent a call to a busy model version and hung up; "
                    f"{d['dropped_from_queue']:.0f} calls left the queue (`mlpack_requests_shed_total"
                    f"{{reason=\"client_gone\"}}`) and {d['runs_of_theirs']:.0f} of theirs ran."]
        out += ["", f"Reproduce: `{RUN} --only load` (or `.venv/bin/python bench/overload.py`)", ""]
    if "grpc" in results:
        g = results["grpc"]
        rows = []
        for level, pair in g["rows"].items():
            for name, r in pair.items():
                rows.append((level, name, f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}", f"{r['rps']:,.0f}",
                             f"{r['cpu_us']:.1f}", r["errors"]))
            rpc, http = pair["grpc"], pair["http binary"]
            rows.append((level, "**grpc / http**", f"**{rpc['p50_ms'] / http['p50_ms']:.2f}x**",
                         f"{rpc['p99_ms'] / http['p99_ms']:.2f}x", f"**{rpc['rps'] / http['rps']:.2f}x**",
                         f"{rpc['cpu_us'] / http['cpu_us']:.2f}x", ""))
        out += ["## gRPC against HTTP", "",
                f"The same MLP (64-256-256-10, batch 1) behind one server process, its HTTP port (the binary tensor "
                f"extension) and its gRPC port (`raw_input_contents`), pinned to its own CPU with one onnxruntime "
                f"thread; one C client for both, {g['client']} (HTTP/1.1 keep-alive and HTTP/2), on the other CPU, "
                f"one request at a time per connection; {g['requests']:,} requests per row in {g['rounds']} rounds "
                "that alternate the two. Server CPU is the process's time on a CPU per request (schedstat). Every "
                "gRPC answer is checked OK in the server's /metrics (h2load sees HTTP statuses only).", "",
                _table(("concurrency", "protocol", "p50 ms", "p99 ms", "req/s", "server CPU us/req", "errors"),
                       rows), "",
                f"Reproduce: `{RUN} --only grpc` (or `.venv/bin/python bench/grpc_vs_http.py`)", ""]
    if "quantize" in results:
        rows = []
        for r in results["quantize"]["rows"]:
            mode = r["mode"] + ("" if r["for"] == "cpu" else f" (for {r['for']})")
            if "refused" in r:
                rows.append((r["sample"], mode, "-", "-", "-", "-", f"refused: {r['refused'][:80]}"))
                continue
            acc = r["accuracy"]
            accuracy = "-" if acc["accuracy_before"] is None else \
                f"{acc['accuracy_before']:.2%} -> {acc['accuracy_after']:.2%}"
            rows.append((r["sample"], mode, f"{r['size']['ratio']:.3f}", f"{r['latency']['speedup']:.2f}x",
                         accuracy, f"{acc['cosine']:.5f}", r["chosen"]))
        out += ["## Quantization", "",
                f"Every sample in every mode through `mlpk.packager.quantize` with its accuracy gate; FP32 and "
                f"quantized models alternate in one process, median of {results['quantize']['runs']} runs at batch "
                "1. TensorRT-bound rows are gated on CPU (no GPU here), so their speed is CPU speed.", "",
                _table(("sample", "mode", "size ratio", "speed-up", "accuracy FP32 -> quantized", "cosine", "gate"),
                       rows), "", f"Reproduce: `{RUN} --only quantize` (or `.venv/bin/python bench/quantize.py`)"]
        image("quantize", "quantization speed-up")
    if "lambda" in results:
        lam = results["lambda"]
        out += ["## Lambda init", "",
                f"`{lam['command']}` ({lam['image_mb']:.1f} MB image), started {lam['runs']} times in Docker with the "
                "real Runtime Interface Emulator as entrypoint; each start's first invocation is an inference.", "",
                _table(("measure", "median", "runs"), [
                    ("container start to first answer", f"{_median(lam['to_first_answer_s']) * 1000:,.0f} ms",
                     ", ".join(f"{v * 1000:,.0f}" for v in lam["to_first_answer_s"])),
                    ("init phase (INIT REPORT)", f"{_median(lam['init_ms']):,.0f} ms",
                     ", ".join(f"{v:,.0f}" for v in lam["init_ms"]))]), "",
                f"Reproduce: `{RUN} --only lambda`"]
        image("lambda", "lambda init")
    if "card" in results:
        card = results["card"]
        levels = [(lv["concurrency"], lv["requests"], lv["errors"], f"{lv['throughput_rps']:,.0f}",
                   f"{lv['p50_ms']:.2f}", f"{lv['p90_ms']:.2f}", f"{lv['p99_ms']:.2f}") for lv in card["levels"]]
        size = card["size"]
        memory = card.get("peak_memory") or {}
        out += ["## Benchmark card of a build", "",
                "`mlpack bench` on the exported `cpu` image, as any build can have it (`bench.json` and charts): "
                f"`{card['command']}`, run in a {card['runs_in']}; {card['duration_s']:g} s per concurrency level.",
                "", _table(("concurrency", "requests", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms"), levels), "",
                _table(("cold start", "peak memory", "image (compressed / uncompressed)"), [(
                    f"{card['cold_start_s'] * 1000:,.0f} ms ({card['cold_start_measured']})",
                    f"{memory.get('mb', float('nan')):.1f} MiB ({memory.get('method', 'not readable')})",
                    f"{_mb(size['compressed'])} / {_mb(size['uncompressed'])}")]), "",
                *(f"Note: {note}." for note in card.get("notes", [])), "",
                f"Reproduce: `{RUN} --only card`"]
        for png in ("latency", "throughput"):
            image(f"card-{png}", f"mlpack bench {png}")
    return out


def write(results: dict[str, Any], docs: Path, work: Path, readme: Path) -> Path:
    """Write results.json, the charts, benchmarks.md and the README's headline block (each through a temp file)."""
    from mlpk.packager.atomic import atomic_file

    folder = docs / "benchmarks"
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(folder / "results.json") as tmp:
        tmp.write_text(json.dumps(results, sort_keys=True, separators=(",", ":")) + "\n")
    charts = _charts(results, folder)
    if "card" in results:
        for png in ("latency", "throughput"):
            source = work / "card" / f"{png}.png"
            if source.is_file():
                with atomic_file(folder / f"card-{png}.png") as tmp:
                    tmp.write_bytes(source.read_bytes())
                charts[f"card-{png}"] = f"{folder.name}/card-{png}.png"
    h = results["host"]
    headlines = _headlines(results)
    total = results.get("total_seconds")
    lines = ["# Benchmarks", "",
             "<!-- written by bench/run.py: edit that, not this page -->", "",
             f"Measured on {h['date']} on {h['cpu']} ({h['cores']} cores, {h['machine']}, no GPU), Python "
             f"{h['python']}, onnxruntime {h['onnxruntime']}, mlpack {h['mlpack']} ({h['commit']}). Each figure is "
             "a ratio or a distribution from one run, mlpack and its baseline side by side on this machine"
             + (f"; the whole page took {total / 60:.1f} minutes" if total else "") + ".", "",
             f"Regenerate everything: `{RUN}`", "",
             _table(("figure", "mlpack", "baseline", "ratio", "reproduce"),
                    [(a, b, c, d, f"`{e}`") for a, b, c, d, e in headlines]), ""]
    lines += _sections(results, charts)
    page_path = docs / "benchmarks.md"
    with atomic_file(page_path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    for written in (page_path, *folder.iterdir()):
        written.chmod(0o644)  # atomic_file's temporary files are private (mkstemp)
    _readme(headlines, readme)
    return page_path


def _readme(headlines: list[tuple[str, str, str, str, str]], readme: Path) -> None:
    """Replace the README's block between the benchmarks markers with the headline ratios."""
    from mlpk.packager.atomic import atomic_file

    text = readme.read_text()
    if README_START not in text:
        print("README has no benchmarks markers; headline block not written", file=sys.stderr)
        return
    block = "\n".join(f"- {figure}: {ratio} ({mlpack} against {baseline})"
                      for figure, mlpack, baseline, ratio, _ in headlines)
    text = re.sub(re.escape(README_START) + ".*?" + re.escape(README_END),
                  lambda _: f"{README_START}\n{block}\n\nAll figures, charts and reproducing commands: "
                            f"[docs/benchmarks.md](docs/benchmarks.md).\n{README_END}", text, flags=re.S)
    with atomic_file(readme) as tmp:
        tmp.write_text(text)
