"""Load from wrk (the C HTTP benchmarking tool, Debian's `wrk`): one POST body, kept-alive connections, one thread.

wrk is driven by a Lua script that sets the method, the body (read from a file, so binary tensors pass byte for
byte) and the headers; `--latency` makes it print the latency distribution that `run` reads p50/p90/p99 from.
wrk counts answers that are not 2xx/3xx and socket errors (connect, read, write, timeout) apart from latency:
both are errors here, and a run with errors is reported with them, never dropped.

    result = run("http://127.0.0.1:8080/predict", body, "application/json", connections=8, seconds=5, cpu=0)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TIMEOUT_S = 10  # wrk's per-request timeout (its default is 2 s, which a slow server at 32 connections can pass)


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed something this module cannot read."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk run measured: throughput, latency percentiles (ms), errors and the requests it completed."""

    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    requests: int


def require() -> str:
    """The wrk executable, or a WrkError saying how to install it."""
    found = shutil.which("wrk")
    if found is None:
        raise WrkError("wrk is not installed: apt-get install -y wrk")
    return found


def version() -> str:
    """wrk's own version line ('wrk debian/4.1.0-3+b2'), for the page's list of what was used."""
    shown = subprocess.run([require(), "-v"], capture_output=True, text=True, check=False)
    words = (shown.stdout or shown.stderr).split()
    return " ".join(words[:2]) if words else "wrk (version unknown)"


def _lua_string(text: str) -> str:
    """A Lua string literal of `text`'s UTF-8 bytes: letters, digits and a few marks as they are, every other byte
    as a three-digit decimal escape (Lua reads up to three digits, so a digit after one stays a digit). No quote,
    backslash or newline can end it."""
    safe = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_./:;=,+")
    return '"' + "".join(chr(byte) if byte in safe else f"\\{byte:03d}" for byte in text.encode()) + '"'


def script(body_file: Path, content_type: str, headers: Mapping[str, str]) -> str:
    """The Lua script: POST the bytes of `body_file` with these headers on every request."""
    lines = ['wrk.method = "POST"',
             f"local f = assert(io.open({_lua_string(str(body_file))}, \"rb\"))",
             'wrk.body = f:read("*a")',
             "f:close()",
             f'wrk.headers["Content-Type"] = {_lua_string(content_type)}']
    lines += [f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}" for name, value in headers.items()]
    return "\n".join(lines) + "\n"


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise WrkError(f"cannot read wrk's latency {text!r}")
    return round(float(match.group(1)) * _UNITS_MS[match.group(2)], 3)  # wrk prints to the microsecond


def parse(output: str) -> WrkResult:
    """Read wrk's report (with --latency): requests/s, the 50/90/99% latencies, errors and total requests."""
    percentiles = {int(p): _ms(value) for p, value in re.findall(r"^\s+(50|90|99)%\s+(\S+)\s*$", output, re.M)}
    total = re.search(r"^\s*(\d+) requests in ", output, re.M)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if total is None or rate is None or set(percentiles) != {50, 90, 99}:
        raise WrkError(f"cannot read wrk's report: {output.strip()[-800:]!r}")
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = (sum(int(n) for n in socket_errors.groups()) if socket_errors else 0) + \
        (int(non_2xx.group(1)) if non_2xx else 0)
    return WrkResult(rps=float(rate.group(1)), p50_ms=percentiles[50], p90_ms=percentiles[90],
                     p99_ms=percentiles[99], errors=errors, requests=int(total.group(1)))


def run(url: str, body: bytes, content_type: str, connections: int, seconds: float, cpu: int | None = None,
        headers: Mapping[str, str] | None = None) -> WrkResult:
    """POST `body` to `url` from `connections` kept-alive connections on one wrk thread for `seconds`, pinned to
    `cpu` with taskset when given. Raises WrkError when wrk fails or its report cannot be read."""
    command = [require(), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", f"--timeout={TIMEOUT_S}s",
               "--latency"]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    with tempfile.TemporaryDirectory(prefix="mlpack-wrk-") as tmp:
        body_file, lua = Path(tmp) / "body", Path(tmp) / "post.lua"
        body_file.write_bytes(body)
        lua.write_text(script(body_file, content_type, headers or {}))
        done = subprocess.run([*command, "-s", str(lua), url], capture_output=True, text=True, check=False,
                              timeout=seconds + TIMEOUT_S + 30)
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}: {(done.stderr or done.stdout).strip()[-800:]}")
    return parse(done.stdout)
