"""onnxruntime sessions for the build side, with onnxruntime's own logging kept out of mlpack's output.

onnxruntime prints ANSI-coloured `E:` lines for every failed run (probing a signature fails runs on purpose) and
for load errors, before mlpack's one-line error; what they say reaches the user through the exception's message,
which mlpack puts into its error. Severity 4 (FATAL) silences them; a session's level and the process-wide default
logger's (used while a model loads) are both set.
"""

from __future__ import annotations

from typing import Any

FATAL = 4


def session_options() -> Any:
    """SessionOptions that log nothing below FATAL (and the default logger set likewise)."""
    import onnxruntime as ort

    ort.set_default_logger_severity(FATAL)
    options = ort.SessionOptions()
    options.log_severity_level = FATAL
    return options
