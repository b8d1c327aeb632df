"""`mlpack serve`."""

from __future__ import annotations

from pathlib import Path

import click

from mlpk.packager import serving


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8080, or MLPACK_PORT).")
@click.option("--grpc-port", type=int, default=None,
              help="Also serve the Open Inference Protocol over gRPC on this port (images: 8081; default: off).")
@click.option("--name", default=None, help="Model name in URLs (default: the model card's name, else the file stem; "
              "a repository's models are named by their folders).")
@click.option("--providers", default=None, help="Execution providers, best first: tensorrt,cuda,cpu.")
@click.option("--threads", type=int, default=None, help="Intra-op threads (default: the cgroup CPU quota).")
@click.option("--warmup-runs", type=int, default=None, help="Warm-up runs before ready (default 2).")
@click.option("--max-body-bytes", type=int, default=None, help="Largest request body (default 64 MiB).")
@click.option("--max-buffered-bytes", type=int, default=None,
              help="Bytes held for all requests at once: bodies and their parsed JSON (default 512 MiB); past it 503.")
@click.option("--body-timeout", "body_timeout_s", type=float, default=None,
              help="Seconds a request body may take to arrive (default 60); past it 408.")
@click.option("--max-concurrent-runs", type=int, default=None,
              help="Runs of one model version at once (default: the CPUs, at least 2).")
@click.option("--max-queue", type=int, default=None,
              help="Calls of one model version waiting for a run (default 64); past it and the runs, 429.")
@click.option("--request-timeout", "request_timeout_s", type=float, default=None,
              help="Seconds a call may wait for a run (default 0: no limit); past it 504, not run.")
@click.option("--max-batch-size", type=int, default=None,
              help="Dynamic batching: stack waiting calls into runs of at most this many rows (default 0: off).")
@click.option("--batch-delay-us", type=int, default=None,
              help="Dynamic batching: microseconds the oldest call may wait for a fuller batch (default 0).")
@click.option("--preferred-batch-sizes", default=None,
              help="Dynamic batching: batch sizes to form, comma-separated (for example 4,8).")
@click.option("--access-log/--no-access-log", default=None, help="Log every request as a JSON line.")
def serve(model: Path, host: str | None, port: int | None, grpc_port: int | None, name: str | None,
          providers: str | None, threads: int | None, warmup_runs: int | None, max_body_bytes: int | None,
          max_buffered_bytes: int | None, body_timeout_s: float | None, max_concurrent_runs: int | None,
          max_queue: int | None, request_timeout_s: float | None, max_batch_size: int | None,
          batch_delay_us: int | None, preferred_batch_sizes: str | None, access_log: bool | None) -> None:
    """Serve MODEL (an .onnx file, a directory with model.onnx, or a model repository DIR/NAME/VERSION/model.onnx of
    several models and versions) on this host with the server mlpack images run: Open Inference Protocol v2 over
    HTTP and gRPC (tritonclient works), TF Serving :predict, /metrics. Stops cleanly on Ctrl-C/SIGTERM."""
    serving.serve(model, host=host, port=port, grpc_port=grpc_port, model_name=name, providers=providers,
                  threads=threads, warmup_runs=warmup_runs, max_body_bytes=max_body_bytes,
                  max_buffered_bytes=max_buffered_bytes, body_timeout_s=body_timeout_s,
                  max_concurrent_runs=max_concurrent_runs, max_queue=max_queue, request_timeout_s=request_timeout_s,
                  max_batch_size=max_batch_size, batch_delay_us=batch_delay_us,
                  preferred_batch_sizes=preferred_batch_sizes, access_log=access_log)
