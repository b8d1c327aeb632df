"""Structured logs: one JSON object per line on stderr, so a container's log driver or CloudWatch can index them.

Fields beyond the message go in `extra={"fields": {...}}`; exceptions keep their traceback under "exc".
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOGGER = "mlpack.runtime"


class JsonFormatter(logging.Formatter):
    """`{"ts": ..., "level": ..., "logger": ..., "msg": ..., **fields}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(level: str = "info") -> logging.Logger:
    """Send the runtime's logs (and asyncio's: an exception in a callback of the event loop) to stderr as JSON
    lines, once per process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in (LOGGER, "asyncio"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    return logging.getLogger(LOGGER)


def get() -> logging.Logger:
    return logging.getLogger(LOGGER)


def info(message: str, **fields: Any) -> None:
    get().info(message, extra={"fields": fields})


def warning(message: str, **fields: Any) -> None:
    get().warning(message, extra={"fields": fields})
