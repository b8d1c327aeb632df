"""Benchmark: a model-only update of an exported image on a Docker engine, bytes sent and load time, side by side.

Baseline: ship the whole new image (a full docker-archive, what `docker save | ssh device docker load` sends).
mlpack: `deliver device`'s way, an archive holding only the layers the engine lacks (here: the model layer).
Both update the same exported image with a model layer of `--model-mib` MiB of random weights (two different
weight files, so neither run finds the other's layer), on the local engine or, with --device, one behind SSH.

    python bench/device_update.py EXPORT_DIR [--model-mib 100] [--device ssh://root@host:22 --identity KEY]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from mlpk.packager import assemble
from mlpk.packager.deliver import archive, device
from mlpk.packager.deliver.engine import open_engine
from mlpk.packager.deliver.images import Resolved, missing_layers, resolve
from mlpk.packager.oci import Image, append_layers
from mlpk.packager.oci.image import canonical_json


def with_model(img: Image, weights: Path) -> Image:
    """`img` with its last (model) layer replaced by one holding `weights`."""
    config = img.config
    config["rootfs"]["diff_ids"] = config["rootfs"]["diff_ids"][:-1]
    config["history"] = config["history"][:-1]
    base = Image(canonical_json(config), img.layers[:-1], img.media_type)
    return append_layers(base, assemble.model_layer({"weights.bin": weights}), created_by="mlpack: model")


def load(engine, img: Image, tag: str, include: set[int] | None, tmp: Path) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    info = archive.write(img, tmp / f"{tag.replace('/', '_').replace(':', '_')}.tar", tag, include)
    started = time.perf_counter()
    with info.path.open("rb") as data:
        done = engine.docker("load", stdin=data)
    took = time.perf_counter() - started
    if done.code != 0:
        raise SystemExit(f"docker load failed: {done.err}")
    return done.sent, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--model-mib", type=int, default=100)
    parser.add_argument("--device")
    parser.add_argument("--identity", type=Path)
    parser.add_argument("--known-hosts", type=Path)
    args = parser.parse_args()
    engine = open_engine(args.device, identity=args.identity, known_hosts=args.known_hosts)
    original = resolve(str(args.export_dir))
    stamp = os.urandom(4).hex()
    with tempfile.TemporaryDirectory(prefix="mlpack-bench-") as name:
        tmp = Path(name)
        device.send(engine, Resolved(original.image, f"bench/base-{stamp}:1", None), f"bench/base-{stamp}:1")
        results = {}
        for label in ("baseline", "mlpack"):
            weights = tmp / f"{label}.bin"
            weights.write_bytes(os.urandom(args.model_mib << 20))
            img = with_model(original.image, weights)
            include = None if label == "baseline" else set(missing_layers(img, device.inventory(engine)))
            results[label] = load(engine, img, f"bench/{label}-{stamp}:1", include, tmp)
        for tag in (f"bench/base-{stamp}:1", f"bench/baseline-{stamp}:1", f"bench/mlpack-{stamp}:1"):
            engine.docker("rmi", tag)
    engine.close()
    (b_bytes, b_time), (m_bytes, m_time) = results["baseline"], results["mlpack"]
    print(f"{'':10} {'bytes sent':>14} {'load s':>8}")
    print(f"{'baseline':10} {b_bytes:>14,} {b_time:>8.2f}   full archive of the new image")
    print(f"{'mlpack':10} {m_bytes:>14,} {m_time:>8.2f}   missing layers only")
    print(f"ratio (mlpack / baseline): bytes {m_bytes / b_bytes:.3f}, load time {m_time / b_time:.3f}")


if __name__ == "__main__":
    main()
