"""Backpressure and deadlines (runtimes/scheduler.py, issue 15) against the real server process, with real clients:
past the runs and the queue of a model version a call is refused at once (HTTP 429 with Retry-After, gRPC
RESOURCE_EXHAUSTED), a burst of ten times the queue included; a call that waits for a run past its deadline (the
request's `timeout` parameter as tritonclient sends it, MLPACK_REQUEST_TIMEOUT, or the gRPC client's deadline) is
answered 504 / DEADLINE_EXCEEDED and never run; a call whose client left while it waited is dropped, not run. Each is
counted in /metrics, and the server serves normally afterwards.

The model is `sleeper`: a call's `n` sets how long its run takes, calibrated once so a slow call runs about SLOW_S
seconds. A slow call holds the one run while the test waits for /metrics to say so (runs active, queue depth) before
it acts, so no step depends on a sleep being long enough.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from mlpk.runtimes import proto
from tests.conftest import free_port
from tests.runtime import models
from tests.runtime.conftest import Served

SLOW_S = 2.5
WIDTH = 256
INFER = "/v2/models/sleeper/infer"
RUNS = 'mlpack_inference_duration_seconds_count{model="sleeper",version="1"}'
RUN_SECONDS = 'mlpack_inference_duration_seconds_sum{model="sleeper",version="1"}'
ACTIVE = 'mlpack_runs_active{model="sleeper",version="1"}'
DEPTH = 'mlpack_queue_depth{model="sleeper",version="1"}'


def body(rounds: int) -> dict:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, WIDTH], "data": [0.01] * WIDTH},
                       {"name": "n", "datatype": "INT64", "shape": [], "data": [rounds]}]}


def shed(reason: str) -> str:
    return f'mlpack_requests_shed_total{{model="sleeper",reason="{reason}",version="1"}}'


def metric(served: Served, name: str) -> float:
    text = httpx.get(served.url + "/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def until(check: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {seconds} s"
        time.sleep(0.01)


def infer_request(rounds: int = 0) -> object:
    """A ModelInferRequest for the sleeper, raw contents."""
    request_class, _ = proto.methods()["ModelInfer"]
    return request_class(model_name="sleeper", inputs=[{"name": "x", "datatype": "FP32", "shape": [1, WIDTH]},
                                                        {"name": "n", "datatype": "INT64", "shape": []}],
                         raw_input_contents=[np.full((1, WIDTH), 0.01, np.float32).tobytes(),
                                             np.array(rounds, np.int64).tobytes()])


def grpc_input(rounds: int = 0) -> list[tgrpc.InferInput]:
    x = tgrpc.InferInput("x", [1, WIDTH], "FP32")
    x.set_data_from_numpy(np.full((1, WIDTH), 0.01, np.float32))
    n = tgrpc.InferInput("n", [], "INT64")
    n.set_data_from_numpy(np.array(rounds, np.int64))
    return [x, n]


@dataclass
class Sleepy:
    """A server of `sleeper` with one run and `queue` places, its gRPC address, and the rounds of a slow call."""

    served: Served
    target: str
    rounds: int
    statuses: list[int] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def call(self, rounds: int, **kwargs: object) -> httpx.Response:
        return httpx.post(self.served.url + INFER, json=body(rounds), timeout=kwargs.pop("timeout", 60), **kwargs)

    def slow(self) -> None:
        """One slow call in the background; its status lands in `statuses`."""
        thread = threading.Thread(target=lambda: self.statuses.append(self.call(self.rounds).status_code))
        self.threads.append(thread)
        thread.start()

    def busy(self, waiting: int = 0) -> None:
        """A slow call holding the run, and `waiting` more in the queue, as /metrics shows them."""
        self.slow()
        until(lambda: metric(self.served, ACTIVE) == 1, "the slow call's run")
        for count in range(1, waiting + 1):
            self.slow()
            until(lambda depth=count: metric(self.served, DEPTH) == depth, f"{count} slow calls waiting")

    def settle(self) -> list[int]:
        """Wait for the slow calls; their statuses."""
        for thread in self.threads:
            thread.join(120)
        statuses, self.statuses, self.threads = self.statuses, [], []
        return statuses


def calibrated(served: Served) -> int:
    """The rounds of a call whose run takes at least about SLOW_S seconds here: from the fastest of three timed runs
    (the server's own inference time; other work on the machine only makes a run longer)."""
    base = 256
    times = []
    for _ in range(3):
        before = metric(served, RUN_SECONDS)
        assert httpx.post(served.url + INFER, json=body(base), timeout=60).status_code == 200
        times.append(metric(served, RUN_SECONDS) - before)
    return max(base, int(base * SLOW_S / max(min(times), 1e-4)))


@pytest.fixture(scope="module")
def sleeper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.sleeper(tmp_path_factory.mktemp("sleeper") / "sleeper")


@pytest.fixture(scope="module")
def sleepy(server_factory: Callable[..., Served], sleeper_dir: Path) -> Iterator[Sleepy]:
    port = free_port()
    served = server_factory(sleeper_dir, MLPACK_THREADS="1", MLPACK_MAX_CONCURRENT_RUNS="1", MLPACK_MAX_QUEUE="1",
                            MLPACK_GRPC_PORT=str(port), MLPACK_WARMUP_RUNS="0")
    server = Sleepy(served, f"127.0.0.1:{port}", calibrated(served))
    yield server
    server.settle()


def test_past_the_runs_and_the_queue_a_call_is_refused_at_once(sleepy: Sleepy) -> None:
    sleepy.busy(waiting=1)  # one runs, one waits: every place is taken
    shed_before = metric(sleepy.served, shed("queue_full"))
    started = time.perf_counter()
    answer = sleepy.call(0, timeout=10)
    refused_in = time.perf_counter() - started
    assert answer.status_code == 429, answer.text
    assert answer.headers["retry-after"] == "1"
    assert "1 runs at once and 1 waiting" in answer.json()["error"] and "MLPACK_MAX_QUEUE" in answer.json()["error"]
    assert refused_in < SLOW_S / 2, "refused at once, not after waiting for a run"
    with pytest.raises(InferenceServerException) as refused:
        tgrpc.InferenceServerClient(sleepy.target).infer("sleeper", grpc_input())
    assert refused.value.status() == "StatusCode.RESOURCE_EXHAUSTED", refused.value
    assert "MLPACK_MAX_QUEUE" in refused.value.message()
    channel = grpc.insecure_channel(sleepy.target)
    with pytest.raises(grpc.RpcError) as raw:  # the bare channel shows the trailing metadata tritonclient drops
        channel.unary_unary(f"/{proto.SERVICE}/ModelInfer", request_serializer=lambda m: m.SerializeToString())(
            infer_request(), timeout=10)
    assert raw.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(raw.value.trailing_metadata())["retry-after"] == "1"
    assert metric(sleepy.served, shed("queue_full")) - shed_before == 3  # HTTP, tritonclient.grpc, the bare channel
    assert sleepy.settle() == [200, 200]
    assert sleepy.call(0, timeout=10).status_code == 200


def test_a_call_that_waits_past_its_timeout_is_504_and_never_runs(sleepy: Sleepy) -> None:
    runs_before = metric(sleepy.served, RUNS)
    timeouts_before = metric(sleepy.served, shed("timeout"))
    gone_before = metric(sleepy.served, shed("client_gone"))
    sleepy.busy()
    client = thttp.InferenceServerClient(sleepy.served.host, network_timeout=30)
    x = thttp.InferInput("x", [1, WIDTH], "FP32")
    x.set_data_from_numpy(np.full((1, WIDTH), 0.01, np.float32))
    n = thttp.InferInput("n", [], "INT64")
    n.set_data_from_numpy(np.array(0, np.int64))
    started = time.perf_counter()
    with pytest.raises(InferenceServerException) as late:
        client.infer("sleeper", [x, n], timeout=50_000)  # 50 ms, in the request's parameters
    waited = time.perf_counter() - started
    assert late.value.status() == "504", late.value
    assert "reached its deadline first" in str(late.value) and "it was not run" in str(late.value)
    assert waited < SLOW_S / 2, "answered at its deadline, not after the slow run"
    with pytest.raises(InferenceServerException) as late_grpc:
        tgrpc.InferenceServerClient(sleepy.target).infer("sleeper", grpc_input(), timeout=50_000)
    assert late_grpc.value.status() == "StatusCode.DEADLINE_EXCEEDED", late_grpc.value
    with pytest.raises(InferenceServerException) as client_deadline:  # the gRPC client's own deadline
        tgrpc.InferenceServerClient(sleepy.target).infer("sleeper", grpc_input(), client_timeout=0.1)
    assert client_deadline.value.status() == "StatusCode.DEADLINE_EXCEEDED", client_deadline.value
    assert sleepy.settle() == [200]
    # The gRPC client's deadline ends the call on both sides at once: the server counts it as a timeout, or as a
    # client gone when the client's cancellation arrives first.
    until(lambda: metric(sleepy.served, shed("timeout")) - timeouts_before >= 2 and
          metric(sleepy.served, shed("timeout")) + metric(sleepy.served, shed("client_gone"))
          - timeouts_before - gone_before == 3, "three dropped calls counted")
    assert metric(sleepy.served, RUNS) - runs_before == 1, "only the slow call ran"
    bad = httpx.post(sleepy.served.url + INFER, json={**body(0), "parameters": {"timeout": "soon"}}, timeout=10)
    assert bad.status_code == 400 and "'timeout' must be a non-negative integer of microseconds" in bad.text


def test_a_call_whose_client_left_while_it_waited_is_not_run(sleepy: Sleepy) -> None:
    runs_before = metric(sleepy.served, RUNS)
    gone_before = metric(sleepy.served, shed("client_gone"))
    sleepy.busy()
    with pytest.raises(httpx.ReadTimeout):
        sleepy.call(0, timeout=httpx.Timeout(10, read=0.2))  # leaves while queued
    until(lambda: metric(sleepy.served, shed("client_gone")) - gone_before == 1, "the drop counted")
    assert metric(sleepy.served, DEPTH) == 0, "it left the queue at once"
    assert sleepy.settle() == [200]
    assert metric(sleepy.served, RUNS) - runs_before == 1, "the slow call only"


def test_a_grpc_call_cancelled_while_it_waited_is_not_run(sleepy: Sleepy) -> None:
    """grpcio cancels with RST_STREAM (CANCEL); the server takes the call out of the queue at once."""
    runs_before = metric(sleepy.served, RUNS)
    gone_before = metric(sleepy.served, shed("client_gone"))
    sleepy.busy()
    with grpc.insecure_channel(sleepy.target) as channel:
        waiting = channel.unary_unary(f"/{proto.SERVICE}/ModelInfer").future(infer_request().SerializeToString())
        until(lambda: metric(sleepy.served, DEPTH) == 1, "the gRPC call waiting")
        assert waiting.cancel()
        until(lambda: metric(sleepy.served, shed("client_gone")) - gone_before == 1, "the drop counted")
    assert metric(sleepy.served, DEPTH) == 0, "it left the queue at once"
    assert sleepy.settle() == [200]
    assert metric(sleepy.served, RUNS) - runs_before == 1, "the slow call only"
    assert 'endpoint="/inference.GRPCInferenceService/ModelInfer",method="GRPC",status="CANCELLED"' in \
        httpx.get(sleepy.served.url + "/metrics").text


def test_a_burst_of_ten_times_the_queue_is_refused_past_it(server_factory: Callable[..., Served],
                                                          sleeper_dir: Path) -> None:
    """40 calls at once at a queue of 4, while the one run is busy: 4 wait and run, 36 are answered 429 with
    Retry-After (had any come after the busy run ended, it would have found a place); no 5xx. The calls go out from
    one event loop, so they all arrive while the run is busy. (bench/serving.py measures how fast refusals come.)"""
    served = server_factory(sleeper_dir, MLPACK_THREADS="1", MLPACK_MAX_CONCURRENT_RUNS="1", MLPACK_MAX_QUEUE="4",
                            MLPACK_WARMUP_RUNS="0")
    server = Sleepy(served, "", calibrated(served))
    shed_before = metric(served, shed("queue_full"))
    server.busy()

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=40, max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits, timeout=120) as client:
            return await asyncio.gather(*(client.post(served.url + INFER, json=body(0)) for _ in range(40)))

    answers = asyncio.run(burst())
    assert server.settle() == [200]
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] * 4 + [429] * 36, statuses
    assert all(answer.headers["retry-after"] == "1" for answer in answers if answer.status_code == 429)
    assert metric(served, shed("queue_full")) - shed_before == 36


def test_the_server_default_timeout_applies_without_a_parameter(server_factory: Callable[..., Served],
                                                                sleeper_dir: Path) -> None:
    served = server_factory(sleeper_dir, MLPACK_THREADS="1", MLPACK_MAX_CONCURRENT_RUNS="1",
                            MLPACK_REQUEST_TIMEOUT="0.05", MLPACK_WARMUP_RUNS="0")
    server = Sleepy(served, "", calibrated(served))
    server.busy()
    answer = server.call(0, timeout=10)
    assert answer.status_code == 504 and "MLPACK_REQUEST_TIMEOUT" in answer.json()["error"], answer.text
    assert server.settle() == [200]
    assert server.call(0, timeout=10).status_code == 200  # no wait: it runs
