"""Errors the runtime answers to clients, by HTTP status.

    ClientError        400  the request is wrong: shape, datatype, missing input, malformed JSON, a bad binary layout
    ├── NotFound       404  an unknown model, version or route
    ├── MethodNotAllowed 405 a known path with the wrong method
    ├── TooLarge       413  a body over the configured limit, or a request needing more memory than the server has
    ├── BodyTimeout    408  a body that did not arrive within MLPACK_BODY_TIMEOUT seconds
    ├── Overloaded     503  a request that would fit once others finish (answered with Retry-After)
    │   └── QueueFull  429  a model version with every run and queue place taken (scheduler.py; Retry-After)
    └── TimedOut       504  a call whose deadline passed while it waited for a run (it was not run)
    ModelLoadError          the model directory cannot be served (raised at start, never to a client)

Every message names the value involved and what was expected, because the client is usually a program whose author
reads the message once, in a log. The server and the Lambda handler turn a ClientError into `{"error": MESSAGE}`
with its status; anything else is a bug and answers 500 with its traceback logged.
"""

from __future__ import annotations


class ClientError(Exception):
    """A request the server cannot run, answered with `status` and `{"error": message}`."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ClientError):
    status = 404


class TooLarge(ClientError):
    status = 413


class BodyTimeout(ClientError):
    status = 408


class Overloaded(ClientError):
    """Not the client's mistake, but answered like one (a JSON error, no traceback): retry after `retry_after_s`."""

    status = 503
    retry_after_s = 1


class QueueFull(Overloaded):
    """Too many calls for one model version at once (scheduler.py): retry after `retry_after_s`."""

    status = 429


class TimedOut(ClientError):
    """Not run: the call's deadline passed while it waited for a run (scheduler.py)."""

    status = 504


class ModelLoadError(Exception):
    """The model directory is missing, unreadable, or holds a model onnxruntime cannot load."""


class MethodNotAllowed(ClientError):
    """Answered with an `Allow` header listing `allowed` (RFC 9110 section 15.5.6)."""

    status = 405

    def __init__(self, message: str, allowed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allowed = allowed
