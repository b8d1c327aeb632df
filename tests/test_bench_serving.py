"""bench/serving.py's harness: wrk's report is read right, every peer's spec is whole, and mlpack's two rows (v2 JSON,
v2 binary tensors) are asked and answered right by the real server. The peers themselves are not installed here
(their venvs take minutes and ~1.7 GB); `bench/serving.py` checks each peer's answer before it is measured."""

from __future__ import annotations

import json
import string
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import peers  # noqa: E402 - bench/ is a folder of scripts
import serving  # noqa: E402
import wrk  # noqa: E402
from server import free_port, make_model  # noqa: E402

# wrk 4.1.0's report (Debian), as printed against a Flask app answering 404.
WRK_404 = """Running 1s test @ http://127.0.0.1:58179/nope
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.22ms    3.42ms  34.95ms   91.59%
    Req/Sec     3.01k   796.14     4.23k    60.00%
  Latency Distribution
     50%    1.00ms
     75%    2.26ms
     90%    4.99ms
     99%   18.92ms
  3005 requests in 1.01s, 1.00MB read
  Non-2xx or 3xx responses: 3005
Requests/sec:   2989.35
Transfer/sec:      1.00MB
"""


def test_wrk_report_gives_rate_percentiles_and_errors() -> None:
    assert wrk.parse(WRK_404) == wrk.WrkResult(rps=2989.35, p50_ms=1.0, p90_ms=4.99, p99_ms=18.92, errors=3005,
                                               requests=3005)
    mixed = (WRK_404.replace("  Non-2xx or 3xx responses: 3005\n",
                             "  Socket errors: connect 1, read 2, write 3, timeout 4\n")
             .replace("50%    1.00ms", "50%  812.00us").replace("99%   18.92ms", "99%    1.25s"))
    assert wrk.parse(mixed) == wrk.WrkResult(rps=2989.35, p50_ms=0.812, p90_ms=4.99, p99_ms=1250.0, errors=10,
                                             requests=3005)


def test_wrk_report_without_latency_is_refused() -> None:
    cut = WRK_404.split("  Latency Distribution")[0]
    try:
        wrk.parse(cut)
    except wrk.WrkError as err:
        assert "cannot read wrk's report" in str(err)
    else:
        raise AssertionError("a report without --latency's distribution was read")


def _lua_bytes(literal: str) -> bytes:
    """Lua's reading of a double-quoted literal with decimal escapes (what wrk's LuaJIT does with it)."""
    assert literal[0] == literal[-1] == '"'
    out, inner, index = bytearray(), literal[1:-1], 0
    while index < len(inner):
        if inner[index] == "\\":
            digits = inner[index + 1:index + 4]
            assert digits.isdigit() and len(digits) == 3, literal
            out.append(int(digits))
            index += 4
        else:
            assert inner[index] not in '"\n\r', literal
            out += inner[index].encode()
            index += 1
    return bytes(out)


def test_lua_literals_carry_any_text() -> None:
    for text in ['plain/path-1.lua', 'quote " backslash \\ newline \n then 7', "über\t1", "\x00" + "9" * 3]:
        assert _lua_bytes(wrk._lua_string(text)) == text.encode()


def test_every_peer_spec_is_whole() -> None:
    values = {key: "1" for key in ("python", "bin", "dir", "model", "port", "spare")}
    x = np.arange(64, dtype=np.float32).reshape(1, 64) / 7
    assert set(peers.PEERS) == {"kserve", "mlserver", "bentoml", "litserve", "fastapi", "flask"}
    for name, peer in peers.PEERS.items():
        compile(peer.app, f"{name}/app.py", "exec")
        for part in (*peer.command, *(value for _, value in peer.env), *(text for _, text in peer.files)):
            string.Template(part).substitute(values)  # KeyError on a placeholder start() does not fill
        assert any(pin.startswith(f"{peer.dist}==") for pin in peer.pins), f"{name} does not pin {peer.dist}"
        body = json.loads(peer.body(x, "x"))
        flat = body["inputs"][0]["data"] if peer.protocol == "v2 JSON" else np.ravel(next(iter(body.values())))
        assert np.array_equal(np.asarray(flat, dtype=np.float32), x.ravel()), name
        assert peer.ready.startswith("/") and peer.path.startswith("/")
    assert peers.requirements(peers.PEERS["flask"])[-2:] == (
        f"onnxruntime=={ort.__version__}", f"numpy=={np.__version__}")


def test_mlpack_rows_are_answered_right_by_the_server(tmp_path: Path) -> None:
    model = make_model(tmp_path / "model")
    x = np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)
    expected = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    contender = serving.mlpack_contender(model.parent, x)
    assert [ask.row for ask in contender.asks] == [serving.MLPACK_JSON, serving.MLPACK_BINARY]
    with contender.launch(free_port()) as running:
        for ask in contender.asks:
            serving.check(running, ask, expected)
        try:
            serving.check(running, contender.asks[1], expected + 1e-3)
        except serving.WrongAnswer as err:
            assert "differs from onnxruntime's" in str(err)
        else:
            raise AssertionError("a wrong output passed the check")
