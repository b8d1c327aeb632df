"""Loading PyTorch sources safely: TorchScript, torch.export programs, state dicts (+ the user's model class), and
full pickled modules only behind an explicit opt-in (unpickling runs code from the file, as torch's own
`weights_only=True` default guards against)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlpk.packager.convert.detect import Format
from mlpk.packager.convert.registry import ConvertOptions
from mlpk.packager.errors import ConfigError, InputError, missing_extra

_WHAT = {"torchscript": "a TorchScript archive", "torch-export": "a torch.export program (.pt2)",
         "torch-save": "a torch.save file (state dict)", "safetensors": "a safetensors state dict"}
_CLASS_HINT = "e.g. --model-class samples/torch_cnn.py:DigitsCNN --model-args '{\"width\": 16}'"


def import_torch() -> Any:
    try:
        import torch
    except ImportError as err:
        raise missing_extra(err.name or "torch", "torch", "converting PyTorch models") from err
    return torch


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:300]}" if text else type(err).__name__


def _unreadable(source: Path, fmt: Format, err: BaseException) -> InputError:
    return InputError(f"{source.name} cannot be read as {_WHAT[fmt]} ({_first_line(err)})",
                      hint="the file may be truncated: save it again")


def model_class(spec: str) -> type:
    """Resolve `module:Class` or `path/to/file.py:Class` (the file is imported as a module of its own)."""
    location, sep, name = spec.rpartition(":")
    if not sep or not location or not name:
        raise ConfigError(f"--model-class {spec!r} is not MODULE:CLASS or FILE.py:CLASS", hint=_CLASS_HINT)
    try:
        if location.endswith(".py") or "/" in location:
            path = Path(location)
            if not path.is_file():
                raise ConfigError(f"--model-class {spec!r}: file {location} does not exist", hint=_CLASS_HINT)
            module_name = f"mlpack_user_{path.stem}"
            loader = importlib.util.spec_from_file_location(module_name, path)
            assert loader is not None and loader.loader is not None
            module = importlib.util.module_from_spec(loader)
            sys.path.insert(0, str(path.resolve().parent))  # let the file import its neighbours
            try:
                sys.modules[module_name] = module
                loader.loader.exec_module(module)
            finally:
                sys.path.remove(str(path.resolve().parent))
        else:
            if "" not in sys.path:
                sys.path.insert(0, "")  # `module:Class` resolves from the working directory, like python -m
            module = importlib.import_module(location)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - user code may raise anything while importing
        raise ConfigError(f"--model-class {spec!r}: importing {location} failed ({_first_line(err)})",
                          hint=_CLASS_HINT) from err
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        raise ConfigError(f"--model-class {spec!r}: {location} has no class {name!r}", hint=_CLASS_HINT)
    return cls


def _from_state_dict(source: Path, state: Mapping[str, Any], options: ConvertOptions) -> Any:
    torch = import_torch()
    if not options.model_class:
        raise ConfigError(f"{source.name} holds a state dict (weights only, {len(state)} tensors); rebuilding the "
                          f"model needs its class", hint=f"pass --model-class and --model-args: {_CLASS_HINT}")
    cls = model_class(options.model_class)
    try:
        module = cls(**dict(options.model_args))
    except Exception as err:  # noqa: BLE001 - user code may raise anything
        raise ConfigError(f"{options.model_class}(**{dict(options.model_args)}) failed ({_first_line(err)})",
                          hint="check --model-args (a JSON object of the constructor's keyword arguments)") from err
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"--model-class {options.model_class} is not a torch.nn.Module")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ConfigError(f"{source.name} does not fit {options.model_class}(**{dict(options.model_args)}): "
                          f"{' '.join(str(err).split())[:400]}", hint="check --model-class and --model-args") from err
    return module.eval()


def load(source: Path, fmt: Format, options: ConvertOptions) -> Any:
    """The model as something callable: a ScriptModule, an ExportedProgram, or an nn.Module in eval mode."""
    torch = import_torch()
    if fmt == "torchscript":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript loading
                return torch.jit.load(str(source), map_location="cpu").eval()
        except Exception as err:  # noqa: BLE001 - any failure to deserialize is an unreadable input file
            raise _unreadable(source, fmt, err) from err
    if fmt == "torch-export":
        try:
            return torch.export.load(str(source))
        except Exception as err:  # noqa: BLE001
            raise _unreadable(source, fmt, err) from err
    if fmt == "safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:
            raise missing_extra("safetensors", "torch", "reading .safetensors state dicts") from err
        try:
            state = load_file(str(source), device="cpu")
        except Exception as err:  # noqa: BLE001
            raise _unreadable(source, fmt, err) from err
        return _from_state_dict(source, state, options)
    try:
        obj = torch.load(str(source), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - weights_only refuses pickled code with UnpicklingError
        if "weights_only" not in str(err) and "Unsupported global" not in str(err):
            raise _unreadable(source, fmt, err) from err
        if not options.trust_pickle:
            raise ConfigError(f"{source.name} holds pickled Python objects (a whole module?), and loading them runs "
                              f"code from the file", hint="save a state dict or TorchScript instead, or pass "
                              "--trust-pickle if you trust this file") from err
        try:
            obj = torch.load(str(source), map_location="cpu", weights_only=False)
        except Exception as err2:  # noqa: BLE001
            raise _unreadable(source, fmt, err2) from err2
    if isinstance(obj, torch.nn.Module):
        return obj.eval()
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]  # a training checkpoint
    if isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _from_state_dict(source, obj, options)
    raise InputError(f"{source.name} holds a {type(obj).__name__}, not a module or a state dict of tensors",
                     hint="save model.state_dict() or a TorchScript / torch.export program")
