"""`mlpack bench IMAGE|DIR|MODEL`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from mlpk.packager.bench import report as benching
from mlpk.packager.cli import POSITIVE, report, wants_json


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 1e6 else f"{count / 1e3:.1f} kB"


def _render(data: dict[str, Any]) -> None:
    console = Console()
    where = {"process": "a process on this host", "container": "a container", "lambda": "Lambda under the RIE"}
    table = Table("concurrency", "requests", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms", box=None,
                  title=f"{data['model']['name']} in {where[data['runs_in']]}, {data['duration_s']:g} s per level")
    for level in data["levels"]:
        table.add_row(*(str(level[key]) if level[key] is not None else "-" for key in (
            "concurrency", "requests", "errors", "throughput_rps", "p50_ms", "p90_ms", "p99_ms")))
    console.print(table)
    memory = data["peak_memory"]
    console.print(f"cold start: {data['cold_start_s'] * 1000:.0f} ms ({data['cold_start_measured']})", highlight=False)
    if data["lambda_init_s"] is not None:
        console.print(f"function init: {data['lambda_init_s'] * 1000:.0f} ms (model load and warm-up, as the handler "
                      "logs it)", highlight=False)
    peak = f"{memory['mb']:.1f} MiB ({memory['method']})" if memory else "not readable"
    console.print(f"peak memory: {peak}", highlight=False)
    size = data["size"]
    console.print(f"model: {_size(size['model_bytes'])}", highlight=False)
    if size["layers"]:
        layers = Table("layer", "digest", "compressed", "uncompressed", box=None)
        for layer in size["layers"]:
            layers.add_row(layer["name"], layer["digest"][:19], _size(layer["compressed"]),
                           _size(layer["uncompressed"]))
        layers.add_row("total", "", _size(size["compressed"]), _size(size["uncompressed"]))
        console.print(layers)
    for level in data["levels"]:
        if level["first_error"]:
            console.print(f"first error at concurrency {level['concurrency']}: {level['first_error']}", highlight=False)
    for note in data["notes"]:
        console.print(f"note: {note}", highlight=False)
    console.print(f"written to {Path(data['files']['report']).parent}: bench.json, latency.png, throughput.png",
                  highlight=False)


@click.command()
@click.argument("source", metavar="IMAGE|DIR|MODEL")
@click.option("--concurrency", "-c", default="1,4,16", show_default=True,
              help="Requests in flight, one run per comma-separated value.")
@click.option("--duration", type=POSITIVE, default=10.0, show_default=True,
              help="Seconds of load per concurrency value.")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=Path("mlpack-bench"), show_default=True,
              help="Directory for bench.json, latency.png, throughput.png and server.log.")
@click.option("--local", is_flag=True, help="Serve an image's model on this host even when a Docker engine answers.")
@click.option("--platform", help="From a multi-platform image, the one to run [default: this machine's].")
@click.option("--port", type=click.IntRange(1, 65535), help="Host port of the server [default: a free one].")
@click.option("--ready-timeout", type=POSITIVE, default=120.0, show_default=True,
              help="Seconds to wait for the server to answer.")
@click.pass_context
def bench(ctx: click.Context, source: str, concurrency: str, duration: float, out: Path, local: bool,
          platform: str | None, port: int | None, ready_timeout: float) -> None:
    """Benchmark a model or image as it serves: latency percentiles, throughput and errors per concurrency, cold
    start, peak memory and size per layer; writes bench.json and charts. An image runs in a container when a Docker
    engine answers (a Lambda image under the Lambda emulator), else its model is served on this host."""
    request = benching.BenchRequest(
        source=source, out=out, concurrency=benching.parse_concurrency(concurrency), duration_s=duration,
        local=local, platform=platform, port=port, ready_timeout_s=ready_timeout,
        command=shlex.join(["mlpack", *sys.argv[1:]]))
    if wants_json(ctx):
        result = benching.run(request)
    else:
        with Console(stderr=True).status("benchmarking") as status:
            result = benching.run(request, lambda text: status.update(text))
    data = result.to_dict(samples=False)
    report(ctx, data, lambda: _render(data))
