"""A bounded load loop on 127.0.0.1 for the availability tests: a few threads post inference requests through one
address until told to stop, or until their request or time bound is reached (whichever comes first), and count
what answered how. Failures are measured, not timed: a request fails when it gets no HTTP answer or an answer
other than 200, however long it took (each has a 30 s client timeout)."""

from __future__ import annotations

import collections
import http.client
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

BODY = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 16], "data": [0.5] * 32}]})


@dataclass
class Counts:
    """What the loop saw so far: answers by status ('error:NAME' for a request with no answer), by replica (the
    proxy's X-Mlpack-Replica header), and each failure's time and kind."""

    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    replicas: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[tuple[float, str, str]] = field(default_factory=list)  # (time, status, replica)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return self.total - self.statuses["200"]

    def wait_for(self, requests: int, timeout: float = 120) -> None:
        """Block until `requests` more requests than now have been answered (or failed)."""
        goal, deadline = self.total + requests, time.monotonic() + timeout
        while self.total < goal and time.monotonic() < deadline:
            time.sleep(0.05)

    def summary(self) -> str:
        share = 100 * self.failed / self.total if self.total else 0.0
        by = collections.Counter(f"{status} from {replica}" for _, status, replica in self.failures)
        return f"{self.failed} of {self.total} requests failed ({share:.3f} %): {dict(self.statuses)}" + \
            (f"; failures: {dict(by)}" if by else "")


@contextmanager
def running(port: int, *, path: str = "/v2/models/scorer/infer", workers: int = 2, max_requests: int = 200_000,
            max_seconds: float = 300) -> Iterator[Counts]:
    """Post `BODY` to 127.0.0.1:`port``path` from `workers` threads (keep-alive connections, a new one after any
    failure) while the block runs, within the bounds; the counts are final when the block exits."""
    counts = Counts()
    stop = threading.Event()
    deadline = time.monotonic() + max_seconds

    def work() -> None:
        conn: http.client.HTTPConnection | None = None
        while not stop.is_set() and time.monotonic() < deadline and counts.total < max_requests:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("POST", path, BODY, {"Content-Type": "application/json"})
                answer = conn.getresponse()
                answer.read()
                status, replica = str(answer.status), answer.getheader("x-mlpack-replica") or "-"
            except (OSError, http.client.HTTPException) as err:
                status, replica = f"error:{type(err).__name__}", "-"
                if conn is not None:
                    conn.close()
                conn = None
            with counts.lock:
                counts.statuses[status] += 1
                counts.replicas[replica] += 1
                if status != "200":
                    counts.failures.append((time.monotonic(), status, replica))
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    try:
        yield counts
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
