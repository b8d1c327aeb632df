"""Wheel locks: the exact wheels of one deps layer, pinned by the sha256 the index published for each (issue 18, a
verified supply chain). The same lock gives the same bytes, so two exports weeks apart install the same deps.

A lock is a pip requirements file, so pip itself can use it (`pip install --require-hashes --no-deps -r LOCK`),
with a header naming what it was resolved for; a lock whose header differs from what is asked for now is stale:

    # mlpack wheel lock 1: pip install --require-hashes --no-deps -r THIS FILE
    # platform: linux/arm64
    # python: 3.11
    # glibc: 2.36
    # requirement: onnxruntime==1.31.1
    # requirement: numpy>=1.26
    numpy==2.4.6 --hash=sha256:0ab0…  # numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl

`wheels.resolve` makes locks, `wheels.install` installs from them; this module is the value and its file format.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlpk.packager.errors import ConfigError

HEADER = "# mlpack wheel lock 1: pip install --require-hashes --no-deps -r THIS FILE"
_FIELD = re.compile(r"# (platform|python|glibc|requirement): (.+)")
_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) --hash=sha256:([0-9a-f]{64})  # (\S+\.whl)")


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True, slots=True)
class Pin:
    """One wheel: its distribution, version, file name and the index's sha256 of the file."""

    name: str
    version: str
    filename: str
    sha256: str

    def line(self) -> str:
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}  # {self.filename}"


@dataclass(frozen=True, slots=True)
class Lock:
    """What was asked for (requirements, platform, CPython, glibc) and the wheels that answer it, sorted by name."""

    platform: str
    python: str
    glibc: str
    requirements: tuple[str, ...]
    pins: tuple[Pin, ...]

    def text(self) -> str:
        """The lock file: a pip requirements file with the inputs in its header."""
        lines = [HEADER, f"# platform: {self.platform}", f"# python: {self.python}", f"# glibc: {self.glibc}"]
        lines += [f"# requirement: {r}" for r in self.requirements]
        lines += [pin.line() for pin in self.pins]
        return "\n".join(lines) + "\n"

    def stale(self, requirements: Sequence[str], *, platform: str, python: str, glibc: str) -> str:
        """Why this lock does not answer `requirements` for (`platform`, `python`, `glibc`); '' when it does."""
        asked = {"platform": platform, "python": python, "glibc": glibc}
        for name, value in asked.items():
            if getattr(self, name) != value:
                return f"the lock is for {name} {getattr(self, name)}, not {value}"
        if sorted(_spaced(r) for r in self.requirements) != sorted(_spaced(r) for r in requirements):
            return (f"the requirements changed (locked: {', '.join(self.requirements) or 'none'}; now: "
                    f"{', '.join(requirements) or 'none'})")
        return ""


def _spaced(requirement: str) -> str:
    return "".join(requirement.split())


def parse(text: str, source: str) -> Lock:
    """A lock from its file text; ConfigError naming `source` and the line when it is not one mlpack wrote."""
    lines = text.splitlines()
    if not lines or lines[0] != HEADER:
        raise ConfigError(f"{source} is not an mlpack wheel lock (its first line is not '{HEADER}')",
                          hint=f"remove {source}; the next export resolves the requirements again")
    fields: dict[str, str] = {}
    requirements: list[str] = []
    pins: list[Pin] = []
    for number, line in enumerate(lines[1:], 2):
        field, pin = _FIELD.fullmatch(line), _PIN.fullmatch(line)
        if field and field[1] == "requirement":
            requirements.append(field[2])
        elif field:
            fields[field[1]] = field[2]
        elif pin:
            pins.append(Pin(pin[1], pin[2], pin[4], pin[3]))
        elif line.strip():
            raise ConfigError(f"{source}:{number} is not a pin 'NAME==VERSION --hash=sha256:HEX  # FILE.whl': "
                              f"{line.strip()[:80]}",
                              hint=f"remove {source}; the next export resolves the requirements again")
    missing = [name for name in ("platform", "python", "glibc") if name not in fields]
    if missing:
        raise ConfigError(f"{source} lacks the header line '# {missing[0]}: …'",
                          hint=f"remove {source}; the next export resolves the requirements again")
    return Lock(fields["platform"], fields["python"], fields["glibc"], tuple(requirements), tuple(pins))


def read(path: Path) -> Lock:
    """The lock in `path`."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read the wheel lock {path}: {err}",
                          hint=f"remove {path}; the next export resolves the requirements again") from err
    return parse(text, str(path))


def file_name(platform: str) -> str:
    """Where an export keeps the lock of `platform`'s deps, relative to its output directory."""
    return f"locks/{platform.replace('/', '-')}.txt"
