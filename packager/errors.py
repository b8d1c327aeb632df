"""One exception tree for mlpack (shared STYLE.md 6-7).

    MlpackError                 a user error: one line with the values involved, a hint, an exit code
    ├── ConfigError         2   flags, target profiles, user TOML
    ├── InputError          3   a model or data file that is missing, empty, truncated or of the wrong kind
    ├── ConversionError     4   a framework model that cannot become ONNX (unsupported ops, exporter failures)
    ├── ValidationError     5   parity between source and ONNX beyond tolerance
    ├── QuantizationError   6   a quantized model that fails the accuracy gate
    ├── BuildError          7   assembling an image (budgets, layers, bases)
    ├── RegistryError       8   pulling or pushing (auth, unreachable, digest mismatch)
    ├── ToolchainError      9   a missing extra, tool or service on this machine
    └── DeployError        10   Lambda, devices, manifests
    InternalError          70   a bug in mlpack: keeps its traceback

Third-party errors are translated where they enter (`raise ConversionError(...) from err`); the CLI holds the only
catch-all and prints `error: MESSAGE` and `hint: HINT` for user errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class MlpackError(Exception):
    """A user error: what failed, with the values involved, and how to fix it."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def one_line(self) -> str:
        """The message and hint on one line, for logs and the CLI."""
        text = " ".join(self.message.split())
        return f"{text}. Hint: {self.hint}" if self.hint else text


class ConfigError(MlpackError):
    exit_code = 2


class InputError(MlpackError):
    exit_code = 3


class ConversionError(MlpackError):
    exit_code = 4


class ValidationError(MlpackError):
    exit_code = 5


class QuantizationError(MlpackError):
    exit_code = 6


class BuildError(MlpackError):
    exit_code = 7


class RegistryError(MlpackError):
    exit_code = 8


class ToolchainError(MlpackError):
    exit_code = 9


class DeployError(MlpackError):
    exit_code = 10


class InternalError(Exception):
    """A bug in mlpack, not in the user's input; the CLI shows its traceback."""

    exit_code = 70


def missing_extra(module: str, extra: str, feature: str) -> ToolchainError:
    """The error for an optional framework that is not installed."""
    return ToolchainError(
        f"{feature} needs the Python module '{module}', which is not installed",
        hint=f"pip install 'mlpack-packager[{extra}]'",
    )


@contextmanager
def malformed(what: str, hint: str) -> Iterator[None]:
    """Data of the wrong shape inside `what` (a list where an object goes, a missing field, a digest that is not one,
    all in well-formed JSON): an InputError naming it, not the KeyError or AttributeError of the code reading it."""
    try:
        yield
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as err:
        raise InputError(f"{what} is malformed ({type(err).__name__}: {str(err)[:200]})", hint=hint) from err
