"""`mlpack export` writes a wheel lock per platform and re-uses it: the same lock gives the same deps layer, and a
tampered wheel in the cache is caught before it reaches an image (issue 18, acceptance).

No engine is needed: the base is an empty OCI layout (the image is built and validated, not run), the requirements
are small pure-Python wheels from the real index, and the whole mlpack cache is a temporary one (MLPACK_CACHE).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from mlpk.packager import locks
from mlpk.packager.oci import empty_image, layout
from mlpk.packager.oci.validate import validate
from tests.export import models

PROFILE = 'extends = "cpu"\nname = "small"\nplatforms = ["linux/amd64"]\ngrpc_port = 0\n[wheels]\nrequirements = {}\n'


def _deps(report: dict[str, Any]) -> str:
    return next(layer["digest"] for layer in report["platforms"][0]["layers"] if layer["name"] == "deps")


def test_export_reuses_its_lock_and_catches_a_tampered_wheel(mlpack, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    base = tmp_path / "base"
    layout.write(empty_image("linux/amd64"), base)
    profile = tmp_path / "small.toml"
    profile.write_text(PROFILE.format('["anyio>=4"]'))
    out = tmp_path / "out"
    args = [str(models.mlp(tmp_path / "m")), "--target", str(profile), "--base", f"oci:{base}", "--quantize",
            "none", "-o", str(out)]

    def export() -> dict[str, Any]:
        done = mlpack("--json", "export", *args, env={"MLPACK_CACHE": str(cache)}, timeout=600)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    first = export()
    lock_file = out / locks.file_name("linux/amd64")
    assert first["platforms"][0]["wheels_lock"] == {"file": "locks/linux-amd64.txt",
                                                    "status": "resolved: no lock yet", "refetched": []}
    lock = locks.read(lock_file)
    assert lock.requirements == ("anyio>=4",) and {"anyio", "idna"} <= {locks.canonical(p.name) for p in lock.pins}

    # Tamper with a cached wheel (same name and size) and forget the remembered deps layers, so this export has to
    # build the deps layer from the wheels again.
    idna = next(p for p in lock.pins if locks.canonical(p.name) == "idna")
    wheel = cache / "wheels" / "cp311-x86_64-glibc2.36" / idna.filename
    tampered = bytearray(wheel.read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF
    wheel.write_bytes(bytes(tampered))
    shutil.rmtree(cache / "layers")
    second = export()
    assert second["platforms"][0]["wheels_lock"] == {"file": "locks/linux-amd64.txt", "status": "re-used",
                                                     "refetched": [idna.filename]}
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == idna.sha256
    assert _deps(second) == _deps(first) and second["digest"] == first["digest"], "the same lock, the same bytes"
    assert locks.read(lock_file) == lock
    validate(layout.read(out / "oci"))

    # Other requirements: the lock no longer answers them, so it is resolved again, and the report says why.
    profile.write_text(PROFILE.format('["idna>=3"]'))
    third = export()
    status = third["platforms"][0]["wheels_lock"]["status"]
    assert status == "resolved again: the requirements changed (locked: anyio>=4; now: idna>=3)", status
    assert locks.read(lock_file).requirements == ("idna>=3",) and _deps(third) != _deps(first)
