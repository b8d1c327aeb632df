"""Benchmark: a base build from a cold cache (downloads already stored) vs the cached rebuild, side by side.

    .venv/bin/python bench/base_build.py [--suite bookworm] [--arch amd64] [--runs 3]

Prints each timing, the uncompressed and compressed sizes, and the speed-up ratio of the cached rebuild. The
downloads store is the user's (so the network is out of the measurement after the first run); plans and images go
to a fresh temporary cache for every cold run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mlpk.packager import locations
from mlpk.packager.base import BaseSpec, Cache, build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--suite", default="bookworm")
    parser.add_argument("--arch", default="amd64")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    spec = BaseSpec(suite=args.suite, arch=args.arch)
    downloads = locations.cache_dir() / "base" / "downloads"
    cold, warm = [], []
    digests = set()
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            cache = Cache(Path(tmp), downloads=downloads)
            started = time.perf_counter()
            first = build(spec, cache)
            cold.append(time.perf_counter() - started)
            started = time.perf_counter()
            again = build(spec, cache)
            warm.append(time.perf_counter() - started)
            assert again.cached
            digests |= {str(first.image.digest), str(again.image.digest)}
    summary = first.summary()
    print(f"{args.suite}/{args.arch}: {len(first.plan.packages)} packages, "
          f"{summary['uncompressed_bytes'] / 1e6:.1f} MB uncompressed, {summary['compressed_bytes'] / 1e6:.1f} MB "
          f"compressed, digests identical across {args.runs} cold builds: {len(digests) == 1}")
    print(f"cold build (median of {args.runs}): {statistics.median(cold):.2f} s  {['%.2f' % t for t in cold]}")
    print(f"cached rebuild (median):       {statistics.median(warm):.2f} s  {['%.2f' % t for t in warm]}")
    print(f"ratio cold/cached: {statistics.median(cold) / statistics.median(warm):.0f}x")


if __name__ == "__main__":
    main()
