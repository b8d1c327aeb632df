"""A rollout of one image over a fleet (FLEET.toml, fleet.py): `mlpack deliver fleet FLEET.toml IMAGE`.

Stage by stage, each device (up to `parallel` at once) goes through what `deliver device` does — only the layers its
engine lacks are sent, :previous keeps the old image, the container is replaced and must answer /v2/health/ready —
and then a health window: for `health_window` seconds the new container must keep answering and must not restart.
A device that fails either is rolled back on its own (its previous image started again and checked). When a
stage's failed devices exceed its budget (`max_failures`), the rollout stops there: devices of later stages are not
touched, and those already updated stay on the new image (`--rollback` puts them back).

A journal (JSON, written atomically after every change of a device's state) makes it resumable: run the same
command again after an interruption (kill -9 included) and devices the journal records as finished keep their
result; the others are done again, which sends nothing they already have. A journal of another image or another
version of FLEET.toml is refused until `--fresh`. The report (`--report FILE`, `--json`) lists per device the image
running before and after (Docker image IDs: the config digests), layers and bytes sent, seconds and the result.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mlpk.packager.deliver import device as delivery
from mlpk.packager.deliver.engine import open_engine
from mlpk.packager.deliver.fleet import Device, Fleet
from mlpk.packager.deliver.images import item_of
from mlpk.packager.deliver.images import resolve
from mlpk.packager.errors import ConfigError, DeployError, MlpackError

FINISHED = ("updated", "current", "rolled back", "failed", "unreachable")  # final results; "rolled back": failed
FAILURES = ("rolled back", "failed", "unreachable")


@dataclass(frozen=True, slots=True)
class DeviceReport:
    """What the rollout did on one device."""

    name: str
    url: str
    stage: int
    result: str = "not started"
    service: str | None = None  # not started | updating | health window | FINISHED
    image_before: str | None = None
    image_after: str | None = None
    layers_sent: int = 0
    layer_bytes: int = 0  # the layer blobs sent (only those the device lacked)
    bytes_sent: int = 0  # everything streamed into `docker load`: the blobs, the archive's tar headers and JSON
    seconds: float = 0.0
    error: str | None = None
    from_journal: bool = False  # a result an interrupted run of this rollout recorded, kept as it was

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class RolloutReport:
    fleet: str
    image: str  # the image's digest (a manifest or an index)
    state: str  # done | stopped | running (interrupted, in a journal)
    stopped_at: int | None  # the stage whose budget was spent
    reason: str | None
    stages: tuple[tuple[str, ...], ...]
    devices: tuple[DeviceReport, ...]
    resumed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"fleet": self.fleet, "image": self.image, "state": self.state, "stopped_at": self.stopped_at,
                "reason": self.reason, "stages": [list(s) for s in self.stages], "resumed": self.resumed,
                "devices": [d.to_dict() for d in self.devices]}


@dataclass
class _Journal:
    """The rollout's record on disk; every change is written whole (temporary file, then rename)."""

    path: Path
    data: dict[str, Any]
    lock: threading.Lock = field(default_factory=threading.Lock)

    def device(self, report: DeviceReport) -> None:
        with self.lock:
            self.data["devices"][report.name] = report.to_dict()
            self.write()

    def write(self) -> None:
        staged = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        staged.write_text(json.dumps(self.data, indent=2, sort_keys=True))
        os.replace(staged, self.path)


def journal_path(fleet: Fleet) -> Path:
    """Beside FLEET.toml: .NAME.rollout.json"""
    return fleet.path.with_name(f".{fleet.path.stem}.rollout.json")


def _open_journal(fleet: Fleet, image: str, image_arg: str, path: Path, fresh: bool) -> tuple[_Journal, bool]:
    if path.exists() and not fresh:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"the rollout journal {path} cannot be read ({err})",
                              hint="start over with --fresh") from err
        if data.get("state") == "running":
            if data.get("image") != image:
                raise ConfigError(f"{fleet.path} has an unfinished rollout of {data.get('image_arg')} "
                                  f"({data.get('image', '?')[:19]}), interrupted at stage {data.get('stage')} of "
                                  f"{len(fleet.stages)}; this is {image_arg} ({image[:19]})",
                                  hint=f"finish it: mlpack deliver fleet {fleet.path} {data.get('image_arg')}; or "
                                       "start this one over it with --fresh")
            if data.get("fleet_sha256") != fleet.digest:
                raise ConfigError(f"{fleet.path} changed since its unfinished rollout of {image_arg} began "
                                  f"(journal {path})", hint="put the file back to resume, or start over with --fresh")
            return _Journal(path, data), True
        if data.get("state") == "stopped" and data.get("image") == image:
            raise ConfigError(f"the rollout of {image_arg} to {fleet.path} stopped at stage {data.get('stopped_at')}: "
                              f"{data.get('reason')}", hint="fix the failing devices, then run again with --fresh "
                                                            "(devices already on the image are left as they are)")
    data = {"fleet": str(fleet.path), "fleet_sha256": fleet.digest, "image": image, "image_arg": image_arg,
            "state": "running", "stage": 1, "devices": {}, "started": time.time()}
    journal = _Journal(path, data)
    journal.write()
    return journal, False


def _running_image(engine: delivery.Engine, service: str) -> str | None:
    done = engine.docker("inspect", "--format", "{{.Image}}", service)
    return done.out.strip() if done.code == 0 and done.out.strip() else None


def _watch(engine: delivery.Engine, service: delivery.Service, window_s: float, interval_s: float) -> None:
    """The health window: the container keeps running, does not restart, and answers ready at every check."""
    script = delivery.ready_script(service.ready_port)
    first = engine.docker("inspect", "--format", "{{.RestartCount}} {{.State.StartedAt}}", service.name).out.strip()
    deadline = time.monotonic() + window_s
    while True:
        now = engine.docker("inspect", "--format", "{{.RestartCount}} {{.State.StartedAt}} {{.State.Status}}",
                            service.name).out.split()
        if not now or " ".join(now[:2]) != first or now[2] != "running":
            raise DeployError(f"{engine.name}: {service.name} restarted or stopped in its health window "
                              f"({' '.join(now) or 'gone'})", hint=f"see `docker logs {service.name}` on the device")
        if engine.docker("exec", service.name, "python3", "-c", script).code != 0:
            raise DeployError(f"{engine.name}: {service.name} stopped answering /v2/health/ready in its health window",
                              hint=f"see `docker logs {service.name}` on the device")
        if time.monotonic() >= deadline:
            return
        time.sleep(interval_s)


def _update(fleet: Fleet, dev: Device, stage: int, image: str, platform: str | None, service_name: str | None,
            tag: str | None, note: Callable[[DeviceReport], None]) -> DeviceReport:
    """One device through send, restart, health window; rolled back on its own when it fails."""
    started = time.monotonic()
    report = DeviceReport(dev.name, dev.url, stage, "updating")
    note(report)
    try:
        engine = open_engine(dev.url, identity=fleet.identity, known_hosts=fleet.known_hosts, docker=dev.docker)
    except MlpackError as err:
        return replace(report, result="unreachable", error=err.one_line(), seconds=time.monotonic() - started)
    try:
        resolved = resolve(image, platform or delivery.engine_platform(engine), strict=platform is not None)
        if tag:
            resolved = type(resolved)(resolved.image, tag, resolved.report)
        service = delivery.Service(service_name or delivery.default_service(resolved), port=dev.port,
                                   run_args=dev.run_args, ready_timeout_s=fleet.ready_timeout_s,
                                   network=dev.network, env=dev.env)
        service.check()
        before = _running_image(engine, service.name)
        report = replace(report, image_before=before, service=service.name)
        try:
            result = delivery.deliver(engine, resolved, service)
        except MlpackError as err:  # deliver put the previous image back when the new one did not get ready
            return replace(report, result="rolled back" if "runs again" in err.message else "failed",
                           error=err.one_line(), image_after=_running_image(engine, service.name),
                           seconds=time.monotonic() - started)
        report = replace(report, result="health window", layers_sent=result.layers_sent,
                         layer_bytes=result.layer_bytes, bytes_sent=result.bytes_sent)
        note(report)
        try:
            _watch(engine, service, fleet.health_window_s, fleet.health_interval_s)
        except MlpackError as err:
            try:
                if before is not None:
                    delivery.rollback(engine, service)
                    outcome = "rolled back"
                else:
                    outcome = "failed"
            except MlpackError as back:
                return replace(report, result="failed", error=f"{err.one_line()}; the rollback failed too: "
                               f"{back.one_line()}", image_after=_running_image(engine, service.name),
                               seconds=time.monotonic() - started)
            return replace(report, result=outcome, error=err.one_line(),
                           image_after=_running_image(engine, service.name), seconds=time.monotonic() - started)
        after = _running_image(engine, service.name)
        return replace(report, result="current" if after == before else "updated", image_after=after,
                       seconds=time.monotonic() - started)
    except MlpackError as err:
        return replace(report, result="failed", error=err.one_line(), seconds=time.monotonic() - started)
    finally:
        engine.close()


def run(fleet: Fleet, image: str, *, platform: str | None = None, service: str | None = None, tag: str | None = None,
        journal: Path | None = None, fresh: bool = False) -> RolloutReport:
    """Roll `image` out over `fleet` (module docstring); never raises for a device's failure: the report says."""
    digest = str(item_of(image).digest)
    book, resumed = _open_journal(fleet, digest, image, journal or journal_path(fleet), fresh)
    stages = tuple(tuple(d.name for d in stage) for stage in fleet.stages)
    reports: dict[str, DeviceReport] = {}
    for number, stage in enumerate(fleet.stages, 1):
        for dev in stage:
            kept = book.data["devices"].get(dev.name)
            reports[dev.name] = replace(DeviceReport(**kept), from_journal=True) \
                if kept and kept["result"] in FINISHED else DeviceReport(dev.name, dev.url, number)
    state, stopped_at, reason = "done", None, None
    for number, stage in enumerate(fleet.stages, 1):
        book.data["stage"] = number
        todo = [d for d in stage if reports[d.name].result not in FINISHED]
        with ThreadPoolExecutor(max_workers=max(1, min(fleet.parallel, len(todo) or 1))) as pool:
            futures = {d.name: pool.submit(_update, fleet, d, number, image, platform, service or fleet.service, tag,
                                           book.device) for d in todo}
            for name, future in futures.items():
                reports[name] = future.result()
                book.device(reports[name])
        failed = [reports[d.name] for d in stage if reports[d.name].result in FAILURES]
        if len(failed) > fleet.budget(stage):
            state, stopped_at = "stopped", number
            reason = (f"stage {number} of {len(fleet.stages)}: {len(failed)} of {len(stage)} device(s) failed "
                      f"({', '.join(f'{r.name} {r.result}' for r in failed)}), budget {fleet.budget(stage)}")
            break
    book.data.update({"state": state, "stopped_at": stopped_at, "reason": reason})
    book.write()
    return RolloutReport(str(fleet.path), digest, state, stopped_at, reason, stages,
                         tuple(reports[d.name] for d in fleet.devices), resumed)


def rollback(fleet: Fleet, *, journal: Path | None = None) -> RolloutReport:
    """Put every device that the journal's rollout updated back on its previous image."""
    path = journal or journal_path(fleet)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"no rollout journal to roll back at {path}",
                          hint=f"--rollback undoes a rollout that ran with mlpack deliver fleet {fleet.path} IMAGE") \
            from err
    reports = []
    by_name = {d.name: d for d in fleet.devices}
    for name, kept in data.get("devices", {}).items():
        report = DeviceReport(**kept)
        dev = by_name.get(name)
        if report.result != "updated" or dev is None:
            reports.append(report)
            continue
        started = time.monotonic()
        try:
            engine = open_engine(dev.url, identity=fleet.identity, known_hosts=fleet.known_hosts, docker=dev.docker)
            try:
                service = delivery.Service(report.service or fleet.service or "", port=dev.port, run_args=dev.run_args,
                                           ready_timeout_s=fleet.ready_timeout_s, network=dev.network, env=dev.env)
                delivery.rollback(engine, service)
                after = _running_image(engine, service.name)
            finally:
                engine.close()
            reports.append(replace(report, result="rolled back", image_after=after, error=None,
                                   seconds=time.monotonic() - started))
        except MlpackError as err:
            reports.append(replace(report, result="failed", error=f"rollback: {err.one_line()}"))
    data.update({"state": "rolled back", "devices": {r.name: r.to_dict() for r in reports}})
    _Journal(path, data).write()
    return RolloutReport(str(fleet.path), data.get("image", ""), "rolled back", None, None,
                         tuple(tuple(d.name for d in s) for s in fleet.stages), tuple(reports))
