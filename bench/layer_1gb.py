"""Benchmark: build a deterministic layer holding one 1 GiB file, and print time and peak memory.

Side by side in one run: mlpack's layer_from_dir (tar + gzip streamed into the blob cache, digest and diff_id
computed on the way) against the baseline `tar --sort=name … | gzip -n -6` (GNU tar and gzip, the same settings),
and mlpack again at a quarter of the size, to show that peak memory does not grow with the layer (it streams).
Each measurement runs in a fresh child process so its peak RSS is its own.

    python bench/layer_1gb.py [--size-mib 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNK = 8 << 20


def make_input(path: Path, size: int) -> None:
    """`size` bytes of random data (model weights compress about as badly)."""
    path.mkdir(parents=True, exist_ok=True)
    with (path / "weights.bin").open("wb") as out:
        left = size
        while left:
            n = min(CHUNK, left)
            out.write(os.urandom(n))
            left -= n


def child(src: str, cache: str) -> None:
    os.environ["MLPACK_CACHE"] = cache
    from mlpk.packager.oci import layer_from_dir

    started = time.perf_counter()
    layer = layer_from_dir(Path(src), prefix="/opt/model")
    took = time.perf_counter() - started
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": took, "peak_rss_mib": rss_mib, "size": layer.size, "digest": str(layer.digest)}))


def run_mlpack(src: Path, cache: Path) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--child", str(src), str(cache)], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout)


def baseline_child(src: str, out: str) -> None:
    script = (f"tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C {src} -cf - . "
              f"| gzip -n -6 > {out}")
    started = time.perf_counter()
    subprocess.run(["bash", "-c", script], check=True)
    took = time.perf_counter() - started
    rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"seconds": took, "peak_rss_mib": rss_mib, "size": Path(out).stat().st_size}))


def run_baseline(src: Path, out: Path) -> dict[str, float]:
    """GNU tar | gzip in a child of its own, whose largest grandchild is the peak RSS reported."""
    done = subprocess.run([sys.executable, __file__, "--baseline-child", str(src), str(out)], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--baseline-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.baseline_child:
        baseline_child(*args.baseline_child)
        return
    with tempfile.TemporaryDirectory(prefix="mlpack-bench-") as tmp:
        root = Path(tmp)
        big, small = root / "big", root / "small"
        make_input(big, args.size_mib << 20)
        make_input(small, (args.size_mib // 4) << 20)
        mine = run_mlpack(big, root / "cache")
        base = run_baseline(big, root / "baseline.tar.gz")
        quarter = run_mlpack(small, root / "cache-small")
    mib = args.size_mib
    print(f"layer of {mib} MiB of random data (gzip -6), {os.cpu_count()} CPUs")
    print(f"  mlpack layer_from_dir : {mine['seconds']:7.1f} s  {mib / mine['seconds']:6.1f} MiB/s  "
          f"peak RSS {mine['peak_rss_mib']:6.1f} MiB")
    print(f"  tar | gzip -n (base)  : {base['seconds']:7.1f} s  {mib / base['seconds']:6.1f} MiB/s  "
          f"peak RSS {base['peak_rss_mib']:6.1f} MiB (largest process)")
    print(f"  time ratio mlpack/baseline: {mine['seconds'] / base['seconds']:.2f}")
    print(f"  mlpack at {mib // 4} MiB: peak RSS {quarter['peak_rss_mib']:6.1f} MiB -> memory ratio "
          f"{mib} MiB / {mib // 4} MiB = {mine['peak_rss_mib'] / quarter['peak_rss_mib']:.2f} (flat when ~1.0)")


if __name__ == "__main__":
    main()
