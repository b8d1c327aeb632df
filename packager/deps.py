"""The deps layer: the target's requirements installed from wheels for one platform (wheels.py), with the image's
CycloneDX SBOM, remembered by everything that decides its bytes so a re-export whose deps did not change installs
nothing."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from mlpk.packager import __version__, locations, locks, wheels
from mlpk.packager.base import sbom
from mlpk.packager.oci import BlobLayer, Digest, Entry, Layer, layer_from_entries
from mlpk.packager.atomic import atomic_file
from mlpk.packager.oci.cache import default_cache
from mlpk.packager.targets import Target

PREFIX = "/opt/mlpack"
SITE = f"{PREFIX}/site-packages"  # the deps
SBOM_PATH = f"{PREFIX}/sbom.cdx.json"


def layer(target: Target, platform: str, workdir: Path, *, sbom: object | None = None,
          lock: locks.Lock | None = None) -> tuple[Layer, wheels.Deps]:
    """The target's requirements for `platform`, installed from wheels at SITE, with the image's CycloneDX SBOM
    (the base's packages when mlpack built the base, plus every installed distribution) at SBOM_PATH.

    The wheels are the ones `lock` pins while it answers the target's requirements, else a fresh resolution
    (wheels.lock_for); the returned Deps carries the lock used. The finished layer is remembered under a key of
    everything that decides its bytes (the lock's pins, platform, Python, glibc and the base's SBOM identity), so a
    re-export whose deps did not change reuses it without installing anything: the model-only change is the fast
    path. The remembered blob is reused as it is when it is the file known to hash to its digest (oci.known), else
    hashed first; one that no longer matches is evicted and the layer rebuilt.
    """
    lock, relock = wheels.lock_for(target.wheels.requirements, platform=platform, python=target.python,
                                   glibc=target.base.glibc, index=target.wheels.index,
                                   extra_index=target.wheels.extra_index, previous=lock)
    base_id = str(getattr(sbom, "serial_number", "")) if sbom is not None else ""
    key = _deps_key(target, platform, lock, base_id)
    cached = _cached_deps(key, platform, target.python, lock, relock)
    if cached is not None:
        return cached
    deps = wheels.install(target.wheels.requirements, workdir / f"site-{platform.replace('/', '-')}",
                          platform=platform, python=target.python, glibc=target.base.glibc,
                          index=target.wheels.index, extra_index=target.wheels.extra_index, image_path=SITE,
                          lock=lock)
    deps = replace(deps, relock=relock)
    entries = [Entry(SITE, "dir", mode=0o755)]
    for path in sorted(deps.root.rglob("*")):
        image_path = f"{SITE}/{path.relative_to(deps.root).as_posix()}"
        if path.is_symlink():
            entries.append(Entry(image_path, "symlink", target=str(path.readlink())))
        elif path.is_dir():
            entries.append(Entry(image_path, "dir", mode=0o755))
        else:
            entries.append(Entry(image_path, "file", source=path, mode=0o755 if path.stat().st_mode & 0o111
                                 else 0o644))
    sbom_file = workdir / f"sbom-{platform.replace('/', '-')}.cdx.json"
    sbom_file.write_text(image_sbom(sbom, deps.distributions, target, platform))
    entries.append(Entry(SBOM_PATH, "file", source=sbom_file, mode=0o644))
    layer = layer_from_entries(entries)
    _remember_deps(key, layer, deps)
    return layer, deps


DEPS_CACHE_VERSION = "1"


def _deps_key(target: Target, platform: str, lock: locks.Lock, base_id: str) -> str:
    ident = [DEPS_CACHE_VERSION, __version__, list(target.wheels.requirements), target.wheels.index,
             target.wheels.extra_index, platform, target.python, target.base.glibc, SITE, SBOM_PATH, base_id,
             target.name, lock.text(), sorted(wheels.PRUNED)]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()


def _deps_record(key: str) -> Path:
    return locations.cache_dir() / "layers" / f"deps-{key}.json"


def _cached_deps(key: str, platform: str, python: str, lock: locks.Lock,
                 relock: str) -> tuple[Layer, wheels.Deps] | None:
    record = _deps_record(key)
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    store = default_cache()
    digest = Digest.parse(data["digest"])
    if not store.sound(digest, int(data["size"])):
        store.evict(digest)  # a corrupted blob is never reused: the caller builds the layer again
        return None
    layer = BlobLayer(store.path(digest), digest, Digest.parse(data["diff_id"]), int(data["size"]))
    found = tuple(wheels.Distribution(**d) for d in data["distributions"])
    return layer, wheels.Deps(Path(SITE), platform, python, found, int(data["pruned_bytes"]), bool(data["compiled"]),
                              lock, relock)


def _remember_deps(key: str, layer: Layer, deps: wheels.Deps) -> None:
    record = _deps_record(key)
    record.parent.mkdir(parents=True, exist_ok=True)
    data = {"digest": str(layer.digest), "diff_id": str(layer.diff_id), "size": layer.size,
            "distributions": [{"name": d.name, "version": d.version, "license": d.license, "summary": d.summary}
                              for d in deps.distributions],
            "pruned_bytes": deps.pruned_bytes, "compiled": deps.compiled}
    with atomic_file(record) as tmp:
        tmp.write_text(json.dumps(data))


def image_sbom(base_sbom: object | None, distributions: tuple[wheels.Distribution, ...], target: Target,
               platform: str) -> str:
    """CycloneDX JSON: the base's SBOM (or an empty one for bases mlpack did not build) plus the Python
    distributions of the deps layer."""
    if base_sbom is None:
        name = f"mlpack-{target.name}-{platform.replace('/', '-')}"
        base_sbom = sbom.empty(name, name + "".join(f" {d.name}=={d.version}" for d in distributions))
    sbom.add_python_distributions(base_sbom, [(d.name, d.version) for d in distributions])
    return sbom.to_json(base_sbom)
