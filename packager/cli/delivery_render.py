"""Human renderings of delivery results (deploy, deliver, manifest)."""

from __future__ import annotations

from typing import Any

from rich.console import Console


def deploy_report(data: dict[str, Any], *, planned: bool) -> None:
    """A Lambda deployment: the plan, or what each step did and where the alias points."""
    console = Console(highlight=False, soft_wrap=True, markup=False)
    if planned:
        arch = f" ({data['architecture']})" if data.get("architecture") else ""
        console.print(f"plan for {data['function']}{arch}; no calls made:")
        for number, line in enumerate(data["plan"], 1):
            console.print(f"  {number}. {line}")
        return
    for key, did in data["journal"].get("done", {}).items():
        console.print(f"{key}: {did}")
    console.print(f"{data['function']}:{data['alias']} -> version {data['version']}")


def delivery_report(data: dict[str, Any]) -> None:
    """A device delivery, bundle, delta or apply: what was sent or written, and the service's state."""
    console = Console(highlight=False, soft_wrap=True, markup=False)
    for key, value in data.items():
        if isinstance(value, dict | list):
            continue
        console.print(f"{key}: {value}")
    for key, did in (data.get("journal") or {}).get("done", {}).items():
        console.print(f"  {key}: {did}")


def swarm_report(data: dict[str, Any]) -> None:
    """A Swarm stack: what each step did, then each service's replicas and update state."""
    console = Console(highlight=False, soft_wrap=True, markup=False)
    for key, did in data["journal"].get("done", {}).items():
        console.print(f"{key}: {did}")
    for service in data["services"]:
        update = f", update {service['update']}" if service["update"] else ""
        console.print(f"{service['name']} ({service['role'] or '-'}): {service['running']}/{service['desired']} "
                      f"running{update}, {service['image']}")
    if data.get("ports"):
        console.print("one address: " + ", ".join(f"port {port} ({kind})" for kind, port in data["ports"].items()) +
                      " on every node")


def fleet_report(data: dict[str, Any]) -> None:
    """A fleet rollout: one line per device, then how it ended."""
    console = Console(highlight=False, soft_wrap=True, markup=False)
    for dev in data["devices"]:
        before, after = (_short(dev["image_before"]), _short(dev["image_after"]))
        line = (f"stage {dev['stage']} {dev['name']}: {dev['result']}; image {before} -> {after}; "
                f"{dev['layers_sent']} layer(s), {dev['bytes_sent']:,} bytes sent in {dev['seconds']:.1f} s" +
                (" (kept from the journal)" if dev.get("from_journal") else ""))
        console.print(line + (f"; {dev['error']}" if dev["error"] else ""))
    console.print(f"rollout {data['state']}" + (f" at {data['reason']}" if data.get("reason") else "") +
                  (" (resumed from its journal)" if data.get("resumed") else ""))


def _short(image_id: str | None) -> str:
    return image_id.split(":", 1)[-1][:12] if image_id else "none"
