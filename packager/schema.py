"""User configuration files (target profiles, FLEET.toml) checked against a JSON Schema: every problem at once,
each naming its field, and an unknown key with the known one it is closest to ("did you mean")."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import jsonschema


def field_name(path: Any) -> str:
    """A.B.0.C for a JSON path; '(top level)' for the root."""
    return ".".join(str(p) for p in path) or "(top level)"


def problems(raw: Any, schema: Mapping[str, Any]) -> list[str]:
    """Every problem of `raw` against `schema` (Draft 2020-12), sorted by field; empty when it is valid."""
    found: list[str] = []
    validator = jsonschema.Draft202012Validator(schema)
    for err in sorted(validator.iter_errors(raw), key=lambda e: list(map(str, e.absolute_path))):
        where = field_name(err.absolute_path)
        if err.validator == "additionalProperties":
            known = sorted(_properties_at(schema, err.absolute_path))
            for key in sorted(set(err.instance) - set(known)):
                close = difflib.get_close_matches(key, known, n=1)
                name = f"{where}.{key}" if err.absolute_path else key
                found.append(f"{name}: unknown field" + (f" (did you mean '{close[0]}'?)" if close else ""))
        else:
            found.append(f"{where}: {err.message}")
    return found


def _properties_at(schema: Mapping[str, Any], path: Any) -> dict[str, Any]:
    node = schema
    for part in path:
        node = node["items"] if isinstance(part, int) else node["properties"][part]
    return dict(node.get("properties", {}))
