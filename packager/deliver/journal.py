"""What a delivery has done and what it has still to do.

A delivery is a short list of remote steps (create a repository, push, update a function, move an alias; or send
layers, load, restart). The journal holds them in order: `--plan` prints it without running anything, and an
error half-way names what was done and what was not, so the user knows the state they are in.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from mlpk.packager.errors import DeployError, MlpackError


@dataclass(frozen=True, slots=True)
class Step:
    """One planned step: a short key and what it will do (the remote calls, with their arguments)."""

    key: str
    does: str


@dataclass(slots=True)
class Journal:
    """The planned steps and, as they finish, what each did."""

    steps: list[Step]
    done: dict[str, str] = field(default_factory=dict)

    def plan(self) -> list[str]:
        return [f"{s.key}: {s.does}" for s in self.steps]

    @contextmanager
    def step(self, key: str) -> Iterator[dict[str, str]]:
        """Run one step: the body sets result["did"] to say what it did; an MlpackError is re-raised as a
        DeployError that also reports what was and was not done."""
        if key not in {s.key for s in self.steps}:
            raise KeyError(key)
        result: dict[str, str] = {}
        try:
            yield result
        except MlpackError as err:
            raise self.failed(key, err.message, err.hint) from err
        self.done[key] = result.get("did", "done")

    def failed(self, key: str, message: str, hint: str | None) -> DeployError:
        done = "; ".join(f"{k}: {v}" for k, v in self.done.items()) or "nothing"
        left = ", ".join(s.key for s in self.steps if s.key not in self.done) or "nothing"
        return DeployError(f"{key} failed: {message} (done: {done}; not done: {left})", hint=hint)

    def to_dict(self) -> dict[str, Any]:
        return {"done": dict(self.done), "not_done": [s.key for s in self.steps if s.key not in self.done]}
