"""The models a server serves: one model, or a model repository of several models and versions side by side.

A model path is either one model (an .onnx file, or a folder holding `model.onnx` or a single .onnx file), served
as version "1", or a repository in Triton's layout:

    DIR/NAME/config.json          optional: {"version_policy": {"all": {}} | {"latest": {"num_versions": N}}
                                                                 | {"specific": {"versions": [1, 3]}}}
    DIR/NAME/VERSION/model.onnx   VERSION a positive integer; model-card.json and warmup.npz beside it

Every model folder's versions are chosen by its version policy: the field names are Triton's (its model
configuration in JSON), the default is `all` (Triton's is `latest` 1: an mlpack image holds only the versions put
in it on purpose). Entries whose name is not a number are not versions and are ignored, as Triton does.

Each version loads on its own: a version (or a whole model, for a bad name or config.json) that fails to load is
kept as a `Failure` with its reason, logged, and listed in the repository index as UNAVAILABLE, while the others
serve. Only a repository where nothing loads stops the start. Each loaded version has its own readiness (its
warm-up); the server is ready when every loaded version is. A request naming a model without a version gets its
newest ready version (its newest one while none is ready yet).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpk.runtimes import batching, config, logs
from mlpk.runtimes.batching import Batching
from mlpk.runtimes.errors import ModelLoadError, NotFound

if TYPE_CHECKING:
    from mlpk.runtimes.model import Model

CONFIG_FILE = "config.json"
POLICIES = ("all", "latest", "specific")


class Readiness:
    """Whether a model version serves, and if not, why: warming up (runs done of total), a failed warm-up that
    blocks serving (a TensorRT engine that cannot be built), or draining. Thread-safe; the readiness endpoints
    answer it.

    The v2 protocol's health endpoints carry the answer in the status code (200 true, anything else false;
    tritonclient's is_server_ready / is_model_ready test `status_code == 200`); the body is ours, so a 503 says
    why in `{"ready": false, "error": ...}` (and `warmup` progress while warming up)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = False
        self._error: str | None = None
        self._progress: tuple[int, int] | None = None
        self._state = "starting"  # starting | warming | ready | failed | draining

    def warming(self, done: int, total: int) -> None:
        with self._lock:
            if self._state != "draining":  # a warm-up finishing during a drain must not turn it ready again
                self._ready, self._state, self._progress = False, "warming", (done, total)

    def ready(self) -> None:
        with self._lock:
            if self._state != "draining":  # a warm-up finishing during a drain must not turn it ready again
                self._ready, self._state, self._error = True, "ready", None

    def failed(self, reason: str) -> None:
        with self._lock:
            if self._state != "draining":  # a warm-up finishing during a drain must not turn it ready again
                self._ready, self._state, self._error = False, "failed", reason

    def draining(self) -> None:
        with self._lock:
            self._ready, self._state = False, "draining"

    def is_set(self) -> bool:
        return self._ready

    @property
    def error(self) -> str | None:
        """Why the model cannot serve, when a warm-up failure keeps it from it."""
        return self._error

    @property
    def state(self) -> str:
        """The repository index's word for it: READY, LOADING (starting or warming up) or UNAVAILABLE."""
        with self._lock:
            return {"ready": "READY", "failed": "UNAVAILABLE", "draining": "UNAVAILABLE"}.get(self._state, "LOADING")

    def answer(self, model: str) -> tuple[int, dict[str, Any]]:
        """The status and JSON body of a readiness endpoint."""
        with self._lock:
            state, error, progress = self._state, self._error, self._progress
        if state == "ready":
            return 200, {"ready": True}
        body: dict[str, Any] = {"ready": False}
        if state == "failed":
            body["error"] = error
        elif state == "warming" and progress is not None:
            done, total = progress
            body["error"] = f"model '{model}' is warming up: {done} of {total} runs done"
            body["warmup"] = {"runs_done": done, "runs": total}
        elif state == "draining":
            body["error"] = "the server is shutting down (draining requests in flight)"
        else:
            body["error"] = f"model '{model}' is loaded; its warm-up has not started yet"
        return 503, body


@dataclass(frozen=True, slots=True)
class Policy:
    """A model's version policy (Triton's `version_policy`): `all`, the `latest` `count`, or `specific` ones."""

    kind: str = "all"
    count: int = 0
    versions: tuple[int, ...] = ()

    def choose(self, available: Sequence[int]) -> list[int]:
        """The versions to load, newest first."""
        newest_first = sorted(available, reverse=True)
        if self.kind == "latest":
            return newest_first[:self.count]
        if self.kind == "specific":
            return [version for version in newest_first if version in self.versions]
        return newest_first


def _document(file: Path, forms: str) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{file} cannot be read as JSON: {err}; expected {forms}") from None


def batching_of(folder: Path) -> Batching | None:
    """The dynamic batching in `folder`/config.json (batching.py; none without one)."""
    file = folder / CONFIG_FILE
    if not file.is_file():
        return None
    document = _document(file, batching.FORM)
    return batching.from_config(file, document) if isinstance(document, dict) else None


def policy_of(folder: Path) -> Policy:
    """The version policy in `folder`/config.json (the default, `all`, without one); ModelLoadError naming the file
    and the forms it takes when it is malformed."""
    file = folder / CONFIG_FILE
    if not file.is_file():
        return Policy()
    forms = ('{"version_policy": {"all": {}}}, {"version_policy": {"latest": {"num_versions": 2}}} or '
             '{"version_policy": {"specific": {"versions": [1, 3]}}}')
    document = _document(file, forms)
    policy = document.get("version_policy", {"all": {}}) if isinstance(document, dict) else None
    if not isinstance(policy, dict) or len(policy) != 1 or next(iter(policy)) not in POLICIES:
        raise ModelLoadError(f"{file} has version_policy {policy!r}; expected {forms}")
    kind, body = next(iter(policy.items()))
    body = body if isinstance(body, dict) else {}
    if kind == "latest":
        count = body.get("num_versions")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ModelLoadError(f"{file}: version_policy.latest.num_versions is {count!r}; expected a whole number "
                                 f"of at least 1, in one of {forms}")
        return Policy(kind, count=count)
    if kind == "specific":
        versions = body.get("versions")
        if not isinstance(versions, list) or not versions or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in versions):
            raise ModelLoadError(f"{file}: version_policy.specific.versions is {versions!r}; expected a list of "
                                 f"positive version numbers, in one of {forms}")
        return Policy(kind, versions=tuple(versions))
    return Policy()


@dataclass(frozen=True, slots=True)
class Served:
    """One loaded model version, its readiness, and the dynamic batching its model's config.json asks for."""

    model: Model
    readiness: Readiness = field(default_factory=Readiness, compare=False)
    batching: Batching | None = None

    @property
    def name(self) -> str:
        return str(self.model.name)

    @property
    def version(self) -> str:
        return str(self.model.version)


@dataclass(frozen=True, slots=True)
class Failure:
    """A model version (or a whole model: version "") that did not load, and why."""

    name: str
    version: str
    reason: str


def is_repository(path: Path) -> bool:
    """Whether `path` is a repository: a folder holding no .onnx file itself, and a NAME/VERSION/ folder."""
    if not path.is_dir() or any(path.glob("*.onnx")):
        return False
    return any(version.is_dir() and version.name.isdigit() for version in path.glob("*/*"))


def versions_in(folder: Path) -> list[int]:
    """The version folders of a model folder (positive integers; other entries are not versions)."""
    return [int(entry.name) for entry in folder.iterdir()
            if entry.is_dir() and entry.name.isdigit() and int(entry.name) > 0]


class Repository:
    """The loaded versions of every model, and the failures; looked up by name and version."""

    def __init__(self, served: Sequence[Served], failures: Sequence[Failure] = ()) -> None:
        self.served = tuple(sorted(served, key=lambda s: (s.name, -int(s.version) if s.version.isdigit() else 0)))
        self.failures = tuple(failures)
        if not self.served:
            raise ModelLoadError("no model loaded: " + "; ".join(f.reason for f in self.failures))
        self._by_name: dict[str, list[Served]] = {}  # each request looks its model up: by name, not by a scan
        for item in self.served:
            self._by_name.setdefault(item.name, []).append(item)
        self._by_version = {(item.name, item.version): item for item in self.served}

    def names(self) -> list[str]:
        return list(dict.fromkeys(s.name for s in self.served))

    def versions(self, name: str) -> list[Served]:
        """The loaded versions of `name`, newest first."""
        return list(self._by_name.get(name, ()))

    def only(self) -> Served | None:
        """The version served when a request names none (Lambda's `POST /`): the newest of the only model."""
        names = self.names()
        return self.find(names[0]) if len(names) == 1 else None

    def describe(self) -> str:
        """The models served, for messages: `'a' (versions 2, 1) with inputs ..., 'b' ...`."""
        parts = []
        for name in self.names():
            versions = self.versions(name)
            parts.append(f"'{name}' (version{'s' if len(versions) > 1 else ''} "
                         f"{', '.join(s.version for s in versions)}) with inputs {versions[0].model.signature()}")
        return "; ".join(parts)

    def find(self, name: str, version: str | None = None) -> Served:
        """The version a request names; without one, the newest ready version (the newest while none is ready).
        NotFound says what is served instead."""
        if version is not None:
            found = self._by_version.get((name, version))
            if found is not None:
                return found
        versions = self._by_name.get(name, ())
        if version is None:
            for item in versions:
                if item.readiness.is_set():
                    return item
            if versions:
                return versions[0]
        if not versions:
            failures = [f for f in self.failures if f.name == name]
            why = f"; it failed to load: {failures[0].reason}" if failures else ""
            raise NotFound(f"unknown model '{name}'{why}; this server serves {self.describe()}")
        failed = next((f for f in self.failures if f.name == name and f.version == version), None)
        why = f" (it failed to load: {failed.reason})" if failed else ""
        raise NotFound(f"model '{name}' has no version '{version}'{why}; it has version"
                       f"{'s' if len(versions) > 1 else ''} {', '.join(s.version for s in versions)}")

    def is_ready(self) -> bool:
        """Every loaded version is ready (failed loads do not count: they are in the index and the logs)."""
        return all(s.readiness.is_set() for s in self.served)

    def answer(self) -> tuple[int, dict[str, Any]]:
        """The server readiness endpoint's status and body: the first version that is not ready says why."""
        for served in self.served:
            status, body = served.readiness.answer(served.name)
            if status != 200:
                return status, body
        return 200, {"ready": True}

    def draining(self) -> None:
        for served in self.served:
            served.readiness.draining()

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """The model repository extension's index: every version with its state (Triton's fields), failures with
        their reason."""
        entries = []
        for served in self.served:
            state = served.readiness.state
            entry = {"name": served.name, "version": served.version, "state": state}
            if served.readiness.error is not None:
                entry.update(state="UNAVAILABLE", reason=served.readiness.error)
            entries.append(entry)
        entries += [{"name": f.name, "version": f.version, "state": "UNAVAILABLE", "reason": f.reason}
                    for f in self.failures]
        return [entry for entry in entries if entry["state"] == "READY"] if ready_only else entries


Loader = Callable[[Path, str, str], "Model"]  # (version folder, name, version) -> the loaded model


def load(root: Path, loader: Loader) -> Repository:
    """Every model and version of the repository at `root` its policies choose, each loaded by `loader` on its
    own; failures are logged and kept (module docstring)."""
    served: list[Served] = []
    failures: list[Failure] = []

    def failed(name: str, version: str, reason: str) -> None:
        failures.append(Failure(name, version, reason))
        logs.get().error("model failed to load; the others serve", extra={"fields": {
            "model": name, "version": version or None, "reason": reason}})

    for folder in sorted(entry for entry in root.iterdir() if entry.is_dir()):
        try:
            name = config.model_name(f"model folder {folder}", folder.name)
            policy = policy_of(folder)
            batched = batching_of(folder)
        except (ValueError, ModelLoadError) as err:
            failed(folder.name, "", str(err))
            continue
        available = versions_in(folder)
        chosen = policy.choose(available)
        if not chosen:
            failed(name, "", f"{folder} has no version folder its version policy ({policy.kind}) chooses; "
                             f"versions there: {sorted(available) or 'none'}")
            continue
        for version in chosen:
            try:
                served.append(Served(loader(folder / str(version), name, str(version)), batching=batched))
            except ModelLoadError as err:
                failed(name, str(version), str(err))
            except Exception as err:  # noqa: BLE001 - any failure of one version must leave the others serving
                logs.get().exception("model load crashed", extra={"fields": {"model": name, "version": version}})
                failed(name, str(version), f"loading {folder / str(version)} crashed: {err}")
    if not served:
        raise ModelLoadError(f"no model in the repository {root} loaded: "
                             + "; ".join(f"{f.name}/{f.version or '*'}: {f.reason}" for f in failures)
                             if failures else f"the repository {root} holds no model")
    return Repository(served, failures)
