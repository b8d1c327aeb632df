"""Pure transformations of images (shared STYLE.md 3): each returns a new Image and leaves its argument alone."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, UTC
from typing import Any

from mlpk.packager.errors import ConfigError
from mlpk.packager.oci.image import Image, canonical_json
from mlpk.packager.oci.layer import Layer, source_date_epoch


def _created() -> str:
    """The creation time recorded in configs and history: SOURCE_DATE_EPOCH or the epoch, for reproducibility."""
    return datetime.fromtimestamp(source_date_epoch(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _with(img: Image, config: dict[str, Any], **changes: Any) -> Image:
    return dataclasses.replace(img, config_bytes=canonical_json(config), raw_manifest=None, **changes)


def append_layers(img: Image, *layers: Layer, created_by: str = "mlpack build", comment: str = "") -> Image:
    """`img` with `layers` on top, their diff_ids in the config and one history entry per layer."""
    config = img.config
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs.setdefault("diff_ids", [])
    history = config.setdefault("history", [])
    for layer in layers:
        rootfs["diff_ids"].append(str(layer.diff_id))
        entry = {"created": _created(), "created_by": created_by}
        if comment:
            entry["comment"] = comment
        history.append(entry)
    config["created"] = _created()
    return _with(img, config, layers=(*img.layers, *layers))


def _env_merge(current: Sequence[str], updates: Mapping[str, str]) -> list[str]:
    order = [item.split("=", 1)[0] for item in current]
    values = dict(item.partition("=")[::2] for item in current)
    for key, value in updates.items():
        if not key or "=" in key or any(c.isspace() or not c.isprintable() for c in key):
            raise ConfigError(f"environment variable name '{key}' is empty or holds '=', a space or a control "
                              "character", hint="give env as NAME=VALUE, e.g. LOG_LEVEL=info")
        if key not in values:
            order.append(key)
        values[key] = value
    return [f"{key}={values[key]}" for key in order]


def with_config(img: Image, *, entrypoint: Sequence[str] | None = None, cmd: Sequence[str] | None = None,
                env: Mapping[str, str] | None = None, user: str | None = None, workdir: str | None = None,
                labels: Mapping[str, str | None] | None = None, exposed_ports: Sequence[str] | None = None) -> Image:
    """`img` with its runtime config changed: env and labels are merged (a label set to None is removed), the rest
    replaced (None keeps them).
    A new entrypoint without a cmd drops the base's cmd, as a Dockerfile ENTRYPOINT does."""
    config = img.config
    section = config.setdefault("config", {}) or {}
    config["config"] = section
    if entrypoint is not None:
        section["Entrypoint"] = list(entrypoint)
        if cmd is None:
            section.pop("Cmd", None)  # as Dockerfile ENTRYPOINT does: the base's Cmd was meant for its entrypoint
    if cmd is not None:
        section["Cmd"] = list(cmd)
    if env:
        section["Env"] = _env_merge(section.get("Env") or [], env)
    if user is not None:
        if not re.fullmatch(r"[^\s:]+(:[^\s:]+)?", user):
            raise ConfigError(f"user '{user}' is not USER, UID, USER:GROUP or UID:GID", hint="e.g. 65532:65532")
        section["User"] = user
    if workdir is not None:
        if not workdir.startswith("/"):
            raise ConfigError(f"workdir '{workdir}' is not absolute", hint="give an absolute path like /app")
        section["WorkingDir"] = workdir
    if labels:
        merged = {**(section.get("Labels") or {}), **labels}
        section["Labels"] = {key: value for key, value in merged.items() if value is not None}
    if exposed_ports:
        ports = dict(section.get("ExposedPorts") or {})
        for port in exposed_ports:
            name = port if "/" in port else f"{port}/tcp"
            number, _, proto = name.partition("/")
            if not number.isdigit() or not 1 <= int(number) <= 65535 or proto not in ("tcp", "udp", "sctp"):
                raise ConfigError(f"exposed port '{port}' is not PORT[/tcp|udp|sctp] with PORT from 1 to 65535",
                                  hint="e.g. 8080/tcp")
            ports[name] = {}
        section["ExposedPorts"] = ports
    return _with(img, config)


def annotate(img: Image, **annotations: str) -> Image:
    """`img` with manifest annotations added (keys with dots are passed as a mapping: annotate(img, **{...}))."""
    merged = {**dict(img.annotations), **annotations}
    return dataclasses.replace(img, annotations=tuple(sorted(merged.items())), raw_manifest=None)


def with_media_type(img: Image, media_type: str) -> Image:
    """`img` with its manifest (and layer/config names) in the OCI or the Docker schema 2 family."""
    return dataclasses.replace(img, media_type=media_type, raw_manifest=None)
