"""Writes held within a turn of the event loop (runtimes/writes.py), on asyncio's own loop: what is written at
once, what waits for the turn's end, in which order, and what a closed transport gets. Over real sockets the server's
tests see the same (tests/runtime/test_http.py: clients sending at once, pipelining, closing)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from mlpk.runtimes import writes
from mlpk.runtimes.writes import MAX_HELD, Writes


class Recorded(asyncio.WriteTransport):
    """A transport that logs what is written to it, beside the callbacks' own entries in the same log."""

    def __init__(self, log: list[object], name: str) -> None:
        super().__init__()
        self.log = log
        self.name = name
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.log.append((self.name, bytes(data)))

    def is_closing(self) -> bool:
        return self.closed


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def run_turns(loop: asyncio.AbstractEventLoop) -> None:
    """Run what is queued on `loop`, and what that queues, until nothing is left."""
    loop.run_until_complete(asyncio.sleep(0.01))


def test_the_standard_loop_has_the_queue_writes_looks_at(loop: asyncio.AbstractEventLoop) -> None:
    """Without it every write goes out at once: correct, and as slow as before (the module docstring's figures)."""
    assert writes.ready_queue(loop) is not None
    assert Writes(loop).waiting is not None


def test_a_write_with_nothing_else_waiting_goes_out_at_once(loop: asyncio.AbstractEventLoop) -> None:
    log: list[object] = []
    out = Writes(loop)
    client = Recorded(log, "a")

    def lone() -> None:
        loop.stop()  # a flag, not a callback: nothing else waits in this turn
        out.write(client, b"answer")
        log.append("bookkeeping after the answer")

    loop.call_soon(lone)
    loop.run_forever()
    assert log == [("a", b"answer"), "bookkeeping after the answer"]


def test_writes_of_a_busy_turn_go_out_at_its_end_in_order(loop: asyncio.AbstractEventLoop) -> None:
    log: list[object] = []
    out = Writes(loop)
    a, b = Recorded(log, "a"), Recorded(log, "b")

    def first() -> None:
        out.write(a, b"1")
        log.append("first done")

    def second() -> None:
        out.write(b, b"2")
        out.write(a, b"3")
        log.append("second done")

    loop.call_soon(first)
    loop.call_soon(second)
    run_turns(loop)
    assert log == ["first done", "second done", ("a", b"1"), ("b", b"2"), ("a", b"3")]


def test_past_max_held_everything_held_goes_out_at_once(loop: asyncio.AbstractEventLoop) -> None:
    """So that a client that does not read meets its transport's flow control as soon as it would unheld."""
    log: list[object] = []
    out = Writes(loop)
    client = Recorded(log, "a")
    big = b"x" * MAX_HELD

    def busy() -> None:
        out.write(client, b"small")
        log.append("held")
        out.write(client, big)
        log.append("past the bound")

    loop.call_soon(busy)
    loop.call_soon(lambda: None)  # other work waits in the same turn
    run_turns(loop)
    assert log == ["held", ("a", b"small"), ("a", big), "past the bound"]


def test_a_transport_closed_before_the_end_of_the_turn_gets_nothing(loop: asyncio.AbstractEventLoop) -> None:
    log: list[object] = []
    out = Writes(loop)
    gone, staying = Recorded(log, "gone"), Recorded(log, "staying")

    def answer_both() -> None:
        out.write(gone, b"late")
        out.write(staying, b"kept")
        gone.closed = True

    loop.call_soon(answer_both)
    loop.call_soon(lambda: None)
    run_turns(loop)
    assert log == [("staying", b"kept")]


def test_a_flush_before_closing_writes_what_is_held_first(loop: asyncio.AbstractEventLoop) -> None:
    """What Connection._close does (runtimes/http.py): the held answers, then the close."""
    log: list[object] = []
    out = Writes(loop)
    client = Recorded(log, "a")

    def answer_then_close() -> None:
        out.write(client, b"last answer")
        out.flush()
        client.closed = True
        log.append("closed")

    loop.call_soon(answer_then_close)
    loop.call_soon(lambda: None)
    run_turns(loop)
    assert log == [("a", b"last answer"), "closed"]
