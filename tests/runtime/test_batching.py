"""Dynamic batching (runtimes/batching.py, runtimes/scheduler.py, issue 15) on the real server process, with the real
clients: concurrent calls of every datatype share one run and each gets exactly its own answer; calls of different
shapes (past the batch axis) or asking for different outputs never share a run; a model whose rows depend on each
other, or that has no batch axis, serves unbatched with the reason logged; a model repository's config.json turns
batching on for one model; settings that do not go together stop the start.

Batches are made deterministic with the batching settings themselves, not with timing: a preferred batch size that
the test's calls add up to (the batch runs once all have arrived), or a long queue delay (calls that cannot join wait
it out and run on their own). Runs and the calls in each are read from mlpack_batch_size in /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

from tests.conftest import free_port
from tests.runtime import models
from tests.runtime.conftest import Served, start_server, stop_server
from tests.runtime.test_tritonclient import NUMPY, assert_equal, reference, sample


def runs(served: Served, model: str) -> tuple[float, float]:
    """(runs, calls served by them) of `model` so far, from mlpack_batch_size."""
    text = httpx.get(served.url + "/metrics", timeout=10).text
    count = total = 0.0
    for line in text.splitlines():
        if line.startswith(f'mlpack_batch_size_count{{model="{model}"'):
            count = float(line.split()[-1])
        elif line.startswith(f'mlpack_batch_size_sum{{model="{model}"'):
            total = float(line.split()[-1])
    return count, total


def concurrently(*calls: Callable[[], Any]) -> list[Any]:
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int, call: Callable[[], Any]) -> None:
        try:
            results[index] = call()
        except BaseException as err:  # noqa: BLE001 - reported below, in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=run, args=(index, call)) for index, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results


@contextlib.contextmanager
def cpus(count: int | None) -> Iterator[None]:
    """The CPUs a server started inside may use: its first `count` of this process's (None: all of them). A child
    inherits its parent's affinity, and the server reads its own (runtimes/cpus.py)."""
    before = os.sched_getaffinity(0)
    if count is not None:
        os.sched_setaffinity(0, sorted(before)[:count])
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@pytest.fixture(scope="module", params=[None, 1], ids=["every-cpu", "one-cpu"])
def every_batched(request: pytest.FixtureRequest, server_factory: Callable[..., Served],
                  model_dirs: dict[str, Path]) -> tuple[Served, str]:
    """every_dtype served with a preferred batch of 6 rows (three calls of 1, 2 and 3 rows make one run) and a
    queue delay long enough that nothing runs before all three are in; on every CPU (batches run in a worker thread)
    and on one (where they run on the event loop once the model's run time is known, runtimes/scheduler.py)."""
    port = free_port()
    with cpus(request.param):
        served = server_factory(model_dirs["every"], MLPACK_MAX_BATCH_SIZE="16", MLPACK_PREFERRED_BATCH_SIZES="6",
                                MLPACK_BATCH_DELAY_US="20000000", MLPACK_GRPC_PORT=str(port))
    assert "dynamic batching on" in served.log_text()
    if request.param == 1:
        loaded = next(line for line in served.log_lines() if line.get("msg") == "model loaded")
        assert loaded["threads"] == 1, loaded
        http_call(served, every_feeds(6, seed=5, binary=True), binary=True)  # a first run: its time known after it
    return served, f"127.0.0.1:{port}"


def every_feeds(rows: int, seed: int, binary: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {f"in_{kind.lower()}": sample(kind, (rows, 2), rng) for kind in NUMPY}
    if not binary:  # JSON numbers: keep floats exactly representable through Python floats
        for name in ("in_fp16", "in_fp32", "in_fp64"):
            feeds[name] = feeds[name].round(2)
    return feeds


TYPES = {f"in_{kind.lower()}": kind for kind in NUMPY}


def http_call(served: Served, feeds: dict[str, np.ndarray], binary: bool) -> dict[str, np.ndarray]:
    client = thttp.InferenceServerClient(served.host, network_timeout=60)
    inputs = []
    for name, value in feeds.items():
        item = thttp.InferInput(name, list(value.shape), TYPES[name])
        item.set_data_from_numpy(value, binary_data=binary)
        inputs.append(item)
    outputs = [thttp.InferRequestedOutput(f"out_{kind.lower()}", binary_data=binary) for kind in NUMPY]
    result = client.infer("every-dtype", inputs, outputs=outputs)
    return {f"out_{kind.lower()}": result.as_numpy(f"out_{kind.lower()}") for kind in NUMPY}


def grpc_call(target: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    inputs = []
    for name, value in feeds.items():
        item = tgrpc.InferInput(name, list(value.shape), TYPES[name])
        item.set_data_from_numpy(value)
        inputs.append(item)
    outputs = [tgrpc.InferRequestedOutput(f"out_{kind.lower()}") for kind in NUMPY]
    result = tgrpc.InferenceServerClient(target).infer("every-dtype", inputs, outputs=outputs)
    return {f"out_{kind.lower()}": result.as_numpy(f"out_{kind.lower()}") for kind in NUMPY}


@pytest.mark.parametrize("transports", ["json+binary+grpc", "binary+binary+json"])
def test_calls_of_every_datatype_share_a_run_and_each_gets_its_own_answer(
        every_batched: tuple[Served, str], model_dirs: dict[str, Path], transports: str) -> None:
    served, target = every_batched
    kinds = transports.split("+")
    feeds = [every_feeds(rows, seed=rows * 11, binary=kind != "json") for rows, kind in zip((1, 2, 3), kinds)]
    before = runs(served, "every-dtype")

    def call(kind: str, feed: dict[str, np.ndarray]) -> Callable[[], dict[str, np.ndarray]]:
        if kind == "grpc":
            return lambda: grpc_call(target, feed)
        return lambda: http_call(served, feed, kind == "binary")

    answers = concurrently(*(call(kind, feed) for kind, feed in zip(kinds, feeds)))
    after = runs(served, "every-dtype")
    assert (after[0] - before[0], after[1] - before[1]) == (1, 3), "one run served the three calls"
    for feed, answer in zip(feeds, answers):
        want = reference(model_dirs["every"], feed)
        for name, value in want.items():
            assert_equal(answer[name], value)


@pytest.fixture(scope="module")
def seq_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.seq(tmp_path_factory.mktemp("seq") / "seq")


def test_calls_of_different_shapes_or_outputs_never_share_a_run(server_factory: Callable[..., Served],
                                                                 seq_dir: Path) -> None:
    """Six calls at once, with a queue delay of 1 s and no batch size they can reach: length 3 (1 and 2 rows),
    length 5 (1 and 1 rows), and length 3 asking for `s` only (1 and 3 rows). Each group waits out the delay and runs
    alone: three runs, and every answer is the call's own."""
    served = server_factory(seq_dir, MLPACK_MAX_BATCH_SIZE="64", MLPACK_BATCH_DELAY_US="1000000",
                            MLPACK_MAX_CONCURRENT_RUNS="4")
    session = ort.InferenceSession(str(seq_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    calls = [(rng.standard_normal((rows, length)).astype(np.float32), outputs)
             for rows, length, outputs in ((1, 3, None), (2, 3, None), (1, 5, None), (1, 5, None),
                                           (1, 3, ["s"]), (3, 3, ["s"]))]

    def one(x: np.ndarray, outputs: list[str] | None) -> Callable[[], dict[str, Any]]:
        body: dict[str, Any] = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                                            "data": x.ravel().tolist()}]}
        if outputs:
            body["outputs"] = [{"name": name} for name in outputs]
        return lambda: httpx.post(served.url + "/v2/models/seq/infer", json=body, timeout=60).json()

    before = runs(served, "seq")
    answers = concurrently(*(one(x, outputs) for x, outputs in calls))
    after = runs(served, "seq")
    assert (after[0] - before[0], after[1] - before[1]) == (3, 6), "three runs: one per shape and outputs"
    for (x, outputs), answer in zip(calls, answers):
        want = dict(zip(["y", "s"], session.run(["y", "s"], {"x": x}), strict=True))
        got = {item["name"]: np.array(item["data"], np.float32).reshape(item["shape"]) for item in answer["outputs"]}
        assert sorted(got) == sorted(outputs or ["y", "s"])
        for name, value in got.items():
            np.testing.assert_allclose(value, want[name], rtol=1e-6, atol=1e-6)


def _unbatched(tmp_path: Path, model_dir: Path, reason: str, name: str, x: np.ndarray) -> None:
    served = start_server(model_dir, tmp_path / "server.log", MLPACK_MAX_BATCH_SIZE="8",
                          MLPACK_BATCH_DELAY_US="500000")
    try:
        warnings = [line for line in served.log_lines() if "dynamic batching is off" in line["msg"]]
        assert len(warnings) == 1 and reason in warnings[0]["msg"], served.log_text()
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
        before = runs(served, name)
        answers = concurrently(*[lambda: httpx.post(f"{served.url}/v2/models/{name}/infer", json=body,
                                                    timeout=60).json()] * 4)
        after = runs(served, name)
        assert after[1] - before[1] == after[0] - before[0], "no run served more than one call"
        session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
        want = session.run(None, {"x": x})[0]
        for answer in answers:
            np.testing.assert_allclose(np.array(answer["outputs"][0]["data"], np.float32).reshape(want.shape), want,
                                       rtol=1e-6, atol=1e-6)
    finally:
        stop_server(served)


def test_a_model_whose_rows_depend_on_each_other_is_never_batched(tmp_path: Path) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    _unbatched(tmp_path, models.centered(tmp_path / "centered"), "changes when another call shares its run",
               "centered", x)


def test_a_model_without_a_batch_axis_is_never_batched(tmp_path: Path) -> None:
    x = np.ones((1, 30), np.float32)
    _unbatched(tmp_path, models.row30(tmp_path / "row30"), "without a dynamic first (batch) axis", "row30", x)


def test_a_repository_model_batches_by_its_config(tmp_path: Path) -> None:
    """config.json's Triton fields turn batching on for `seq` alone; `centered` beside it is not batched (and is not
    checked); a malformed dynamic_batching fails that model's load with the file and the form named."""
    root = tmp_path / "repo"
    models.seq(root / "seq" / "1")
    (root / "seq" / "config.json").write_text(json.dumps(
        {"max_batch_size": 8, "dynamic_batching": {"preferred_batch_size": [2], "max_queue_delay_microseconds":
                                                   20_000_000}}))
    models.centered(root / "centered" / "1")
    models.seq(root / "broken" / "1")
    (root / "broken" / "config.json").write_text(json.dumps({"dynamic_batching": {}}))
    served = start_server(root, tmp_path / "server.log")
    try:
        lines = served.log_lines()
        on = [line for line in lines if line["msg"].startswith("dynamic batching on")]
        assert [(line["model"], line["max_batch_size"], line["preferred_batch_sizes"]) for line in on] == [
            ("seq", 8, [2])]
        assert not [line for line in lines if "dynamic batching is off" in line["msg"]]
        index = httpx.post(served.url + "/v2/repository/index", json={}).json()
        broken = next(entry for entry in index if entry["name"] == "broken")
        assert broken["state"] == "UNAVAILABLE" and "config.json" in broken["reason"]
        assert "max_batch_size of at least 1" in broken["reason"]
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]}
        before = runs(served, "seq")
        concurrently(*[lambda: httpx.post(served.url + "/v2/models/seq/infer", json=body, timeout=60)] * 2)
        after = runs(served, "seq")
        assert (after[0] - before[0], after[1] - before[1]) == (1, 2)
    finally:
        stop_server(served)


@pytest.mark.parametrize(("variables", "words"), [
    ({"MLPACK_PREFERRED_BATCH_SIZES": "4"}, "MLPACK_MAX_BATCH_SIZE turns on"),
    ({"MLPACK_MAX_BATCH_SIZE": "4", "MLPACK_PREFERRED_BATCH_SIZES": "2,8"}, "[8], over MLPACK_MAX_BATCH_SIZE=4"),
    ({"MLPACK_MAX_BATCH_SIZE": "4", "MLPACK_PREFERRED_BATCH_SIZES": "2,x"}, "MLPACK_PREFERRED_BATCH_SIZES='x'"),
])
def test_batching_settings_that_do_not_go_together_stop_the_start(tmp_path: Path, seq_dir: Path,
                                                                  variables: dict[str, str], words: str) -> None:
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "mlpk.runtimes.server"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MLPACK_MODEL_DIR": str(seq_dir), "MLPACK_PORT": str(free_port()),
                               **variables})
    assert done.returncode == 1
    assert words in done.stderr, done.stderr


def test_serve_names_the_flags(mlpack, seq_dir: Path) -> None:  # noqa: ANN001 - the CLI fixture
    done = mlpack("serve", str(seq_dir), "--preferred-batch-sizes", "4", "--port", str(free_port()))
    assert done.returncode == 2 and "--preferred-batch-sizes and --batch-delay-us shape dynamic batching" in \
        done.stderr and "--max-batch-size" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_burst_of_calls_is_stacked_and_answered_in_order(server_factory: Callable[..., Served], seq_dir: Path) -> None:
    """Thirty-two single-row calls from one client loop against a batching server with one run: all answered right,
    in fewer runs than calls (each run takes what waited while the one before ran)."""
    served = server_factory(seq_dir, MLPACK_MAX_BATCH_SIZE="8", MLPACK_BATCH_DELAY_US="200000",
                            MLPACK_MAX_CONCURRENT_RUNS="1", MLPACK_THREADS="1")
    xs = [np.full((1, 4), index, np.float32) for index in range(32)]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=32), timeout=60) as client:
            return await asyncio.gather(*(client.post(served.url + "/v2/models/seq/infer", json={"inputs": [
                {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": x.ravel().tolist()}]}) for x in xs))

    before = runs(served, "seq")
    answers = asyncio.run(burst())
    after = runs(served, "seq")
    for x, answer in zip(xs, answers):
        got = {item["name"]: item["data"] for item in answer.json()["outputs"]}
        assert got == {"y": (2 * x).ravel().tolist(), "s": [float(x.sum())]}
    assert after[1] - before[1] == 32 and after[0] - before[0] < 32, (before, after)
