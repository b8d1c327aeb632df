"""onnxruntime sessions for the build side, with onnxruntime's own logging kept out of mlpack's output.

onnxruntime prints ANSI-coloured `E:` lines for every failed run (probing a signature fails runs on purpose) and
for load errors, before mlpack's one-line error; what they say reaches the user through the exception's message,
which mlpack puts into its error. Severity 4 (FATAL) silences them; a session's level and the process-wide default
logger's (used while a model loads) are both set.
"""

from __future__ import annotations

import re
from typing import Any

FATAL = 4

# Where in onnxruntime's C++ an error was raised: the source file and line, then the function's signature
# ("/onnxruntime_src/.../reshape_helper.h:45 onnxruntime::ReshapeHelper::ReshapeHelper(const ...&, bool) "), which
# can fill the 300 characters an error line keeps and push out what follows it (the shapes that did not fit).
_CPP_WHERE = re.compile(r"\S+\.(?:h|hpp|cc|cpp):\d+ (?:[\w:<>,&*~ ]+\([^)]*\)(?: const)? ?)?")


def error_text(err: BaseException) -> str:
    """onnxruntime's error message on one line, without the C++ file, line and signature it names."""
    return " ".join(_CPP_WHERE.sub("", str(err)).split()) or type(err).__name__


def session_options() -> Any:
    """SessionOptions that log nothing below FATAL (and the default logger set likewise)."""
    import onnxruntime as ort

    ort.set_default_logger_severity(FATAL)
    options = ort.SessionOptions()
    options.log_severity_level = FATAL
    return options
