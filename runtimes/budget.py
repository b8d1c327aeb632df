"""The server's bound on memory held for requests: one budget of bytes shared by every request in flight.

A request holds a lease on the budget for the bytes of its body as they arrive (all of a declared Content-Length at
once, before any is read), for its decompressed body, and for what its JSON will take once parsed (`json_cost`, an
upper bound: a JSON number becomes a Python object and a list slot, then an array element); the lease is given back
when the answer is sent. So the memory that requests can pin is bounded by MLPACK_MAX_BUFFERED_BYTES, whatever the
clients do: stalled uploads, many large bodies at once, a small body of millions of numbers.

A request that could never fit (it alone needs more than the whole budget) is answered 413; one that would fit once
others finish is answered 503 with Retry-After, so a client backs off instead of the server growing. Thread-safe:
leases are taken on the event loop and given back after handlers that run in threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from mlpk.runtimes.errors import Overloaded, TooLarge

Hold = Callable[[int, "str | Callable[[], str]"], None]  # Lease.hold: (bytes, what they are for)

# Bytes one JSON value may take once parsed, at most: the largest a value of a few bytes of text becomes is an empty
# object (a dict, 64) in its list slot (8); a number takes less even with its elements in the float64 array numpy
# infers and in the array of the model's dtype (24 + 8, then 8 + 8).
PER_JSON_VALUE = 72


# Bytes of JSON text up to which the bound is taken from the length alone: counting is a pass over the text as long as
# orjson's parse of it (9 us for a 10 KiB tensor of 512 floats, measured), while the bound from the length holds at most
# 16384 / 2 * PER_JSON_VALUE = 576 KiB of the budget per request, 37 MiB for the 66 calls one model version admits by
# default on two CPUs (two runs and a queue of 64), against the default budget of 512 MiB.
_SMALL = 16 * 1024


def json_values_bound(raw: bytes | bytearray | memoryview) -> int:
    """An upper bound on the values a JSON text holds: a list or object of n items has n - 1 commas, so every
    value is counted by a comma, by the bracket that opens its list or object, or is the text's one value (three
    passes at C speed; no parsing; commas and brackets inside strings only raise the bound). A text of up to _SMALL
    bytes is bounded by half its length (a value of n bytes nests at most n / 2 values: '[[]]'), which is cheaper
    to know than to count and, for texts that small, holds little more of the budget."""
    if len(raw) <= _SMALL:  # every value takes two bytes of text with its separator (a lone one, one): no passes
        return (len(raw) + 1) // 2
    data = raw if isinstance(raw, (bytes, bytearray)) else bytes(raw)
    return data.count(b",") + data.count(b"[") + data.count(b"{") + 1


def json_cost(raw: bytes | bytearray | memoryview) -> int:
    """The bytes parsing `raw` into arrays may take, at most."""
    return PER_JSON_VALUE * json_values_bound(raw)


class Budget:
    """`limit` bytes shared by all requests; `lease()` opens one request's account."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self._used

    def lease(self) -> Lease:
        return Lease(self)

    def _take(self, size: int, held: int, what: str | Callable[[], str]) -> None:
        if held + size > self.limit:
            what = what() if callable(what) else what
            raise TooLarge(f"{what} needs {held + size} bytes, more than the server holds for all requests at once "
                           f"({self.limit} bytes, MLPACK_MAX_BUFFERED_BYTES); send smaller batches, or binary tensor "
                           "data instead of JSON")
        with self._lock:
            if self._used + size > self.limit:
                what = what() if callable(what) else what
                raise Overloaded(f"the server is holding {self._used} of its {self.limit} bytes for other requests "
                                 f"(MLPACK_MAX_BUFFERED_BYTES) and {what} needs {size} more; retry shortly")
            self._used += size

    def _give(self, size: int) -> None:
        with self._lock:
            self._used -= size


class Lease:
    """One request's bytes on the budget: `hold` adds to them (or raises, holding nothing more), `release` gives
    all back (idempotent)."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.held = 0

    def hold(self, size: int, what: str | Callable[[], str] = "this request") -> None:
        """Hold `size` more bytes; `what` (or what it returns: the phrase is made only for a refusal) names them."""
        if size > 0:
            self.budget._take(size, self.held, what)
            self.held += size

    def release(self) -> None:
        held, self.held = self.held, 0
        if held:
            self.budget._give(held)
