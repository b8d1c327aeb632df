"""`mlpack serve`."""

from __future__ import annotations

from pathlib import Path

import click


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
@click.option("--access-log/--no-access-log", default=None, help="Log every request as a JSON line.")
def serve(model: Path, host: str | None, port: int | None, grpc_port: int | None, name: str | None, providers: str | None,
          threads: int | None, warmup_runs: int | None, max_body_bytes: int | None, max_buffered_bytes: int | None,
          body_timeout_s: float | None, access_log: bool | None) -> None:
    """Serve MODEL (an .onnx file, a directory with model.onnx, or a model repository DIR/NAME/VERSION/model.onnx of
    several models and versions) on this host with the server mlpack images run: Open Inference Protocol v2 over
    HTTP and gRPC (tritonclient works), TF Serving :predict, /metrics. Stops cleanly on Ctrl-C/SIGTERM."""
    from mlpk.packager import serving

    serving.serve(model, host=host, port=port, grpc_port=grpc_port, model_name=name, providers=providers,
                  threads=threads, warmup_runs=warmup_runs, max_body_bytes=max_body_bytes, max_buffered_bytes=max_buffered_bytes,
                  body_timeout_s=body_timeout_s, access_log=access_log)
