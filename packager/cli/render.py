"""Human renderings of reports that more than one command prints (rich tables)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _mb(value: float) -> str:
    return f"{value / 1e6:.1f} MB"


def export_report(result: Any) -> None:
    """An ExportReport: layers against the budget, figures, digests, and how to run the image."""
    console = Console()
    data = result.to_dict()
    for build in data["platforms"]:
        table = Table("layer", "digest", "compressed", "uncompressed", title=f"{build['platform']}  "
                      f"{build['size_mb']:.1f} MB of {data['budget_mb']:g} MB budget", box=None)
        for layer in build["layers"]:
            table.add_row(layer["name"], layer["digest"][:19], _mb(layer["compressed"]), _mb(layer["uncompressed"]))
        console.print(table)
    parity = (data["model"].get("parity") or {})
    if parity:
        worst = max((o.get("max_abs") or 0.0 for o in parity.get("outputs", [])), default=0.0)
        origin = parity.get("inputs_from", "?")
        note = " (no --sample-data: inputs made from the model's signature)" if "synthetic" in origin else ""
        console.print(f"parity: max abs error {worst:.3g} over {parity.get('samples', '?')} samples of "
                      f"{origin}{note}")
    opt = data["optimization"]
    line = f"optimization: {opt.get('mode')}"
    if opt.get("kept_fp32_because"):
        line += f" (requested {opt['requested']}, kept FP32: {opt['kept_fp32_because']})"
    console.print(line)
    if len(data.get("models") or []) > 1 or any(m["layer"] != "model" for m in data.get("models") or []):
        console.print("models: " + ", ".join(f"{m['name']}/{m['version']}" for m in data["models"])
                      + " (a model repository: /v2/models/NAME/versions/VERSION)")
    console.print(f"image: {data['tag']}  digest {data['digest']}")
    if data.get("pushed"):
        console.print(f"pushed: {data['pushed']['reference']}")
    console.print(f"written to {data['out']}; run it with:")
    for hint in data["run"]:
        console.print(f"  {hint}", highlight=False)
