"""Loading PyTorch sources safely: TorchScript, torch.export programs, state dicts (+ the user's model class), and
full pickled modules only behind an explicit opt-in (unpickling runs code from the file, as torch's own
`weights_only=True` default guards against).

A `.pt` may be a training checkpoint rather than a bare state dict: `{"epoch": 3, "model_state_dict": ...,
"optimizer_state_dict": ...}`, Lightning's `{"state_dict": {"model.conv.weight": ...}, ...}`, `{"model": {"state_dict":
...}}`, weights saved from a DataParallel wrapper (`module.` keys). Every state dict up to two levels deep is a
candidate; the first whose keys are exactly the class's (wrapper prefixes stripped; a strict load) is used, and the
conversion notes name where it was found.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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


def model_class(spec: str) -> Callable[..., Any]:
    """Resolve `module:Class` or `path/to/file.py:Class` (the file is imported as a module of its own); a function
    that builds the module (torchvision.models:resnet18) is taken like a class."""
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
    except Exception as err:  # user code may raise anything while importing
        raise ConfigError(f"--model-class {spec!r}: importing {location} failed ({_first_line(err)})",
                          hint=_CLASS_HINT) from err
    cls = getattr(module, name, None)
    if not callable(cls):
        raise ConfigError(f"--model-class {spec!r}: {location} has no class or function {name!r}", hint=_CLASS_HINT)
    return cls


# Checkpoints: where training scripts keep the weights, most preferred first: the file itself, then torch's
# tutorials (`model_state_dict`), Lightning and timm (`state_dict`), DeepSpeed (`module`) and the usual home-made
# names. EMA copies (timm's `state_dict_ema`, `model_ema`, ...) come last: the raw weights are the model that was
# trained, so EMA weights are used only when nothing else fits the class, and the notes say which were taken.
_WEIGHT_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "net", "network", "weights", "params",
                "module")
_EMA_KEYS = ("ema", "model_ema", "state_dict_ema", "ema_state_dict", "ema_model", "model_ema_state_dict")
_MAX_DEPTH = 2  # {"model": {"state_dict": ...}} is as deep as checkpoints usually nest
# Wrapper prefixes, stripped while every key carries one the class's own keys lack: DataParallel / DDP (`module.`),
# torch.compile (`_orig_mod.`), Lightning modules holding the network as an attribute (`model.`, `net.`).
_PREFIXES = ("module.", "_orig_mod.", "model.", "net.")
_FEW = 3  # key names shown per list in a refusal


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """The source model as something callable, and how it was found (for the conversion notes)."""

    model: Any  # a ScriptModule, an ExportedProgram, or an nn.Module in eval mode
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A state dict (or a pickled nn.Module) found at `path` inside a loaded file."""

    path: tuple[Any, ...]  # keys from the file's top level; () is the file itself
    value: Any

    @property
    def where(self) -> str:
        """`['model']['state_dict']`; empty for the file itself (read after the file's name)."""
        return "".join(f"[{k!r}]" for k in self.path)

    @property
    def ema(self) -> bool:
        return any(str(k).lower() in _EMA_KEYS for k in self.path)


@dataclass(frozen=True, slots=True)
class _Fit:
    """How a candidate's keys compare with the model class's own, after stripping wrapper prefixes."""

    state: Mapping[str, Any]
    prefix: str
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    shared: int

    def describe(self) -> str:
        def few(keys: tuple[str, ...]) -> str:
            more = f", +{len(keys) - _FEW} more" if len(keys) > _FEW else ""
            return f" ({', '.join(keys[:_FEW])}{more})" if keys else ""

        stripped = f" after stripping {self.prefix!r}" if self.prefix else ""
        return (f"{len(self.missing)} missing{few(self.missing)}, {len(self.unexpected)} unexpected"
                f"{few(self.unexpected)}{stripped}")


def _rank(key: Any) -> int:
    name = str(key).lower()
    if name in _WEIGHT_KEYS:
        return _WEIGHT_KEYS.index(name)
    return len(_WEIGHT_KEYS) + (len(_EMA_KEYS) if name in _EMA_KEYS else 0)


def _candidates(obj: Any) -> tuple[list[_Candidate], list[str]]:
    """Every state dict of tensors (or nn.Module) in `obj` up to _MAX_DEPTH, best first; and the dicts looked into."""
    torch = import_torch()
    found: list[_Candidate] = []
    opened: list[str] = []

    def visit(value: Any, path: tuple[Any, ...]) -> None:
        if isinstance(value, torch.nn.Module):
            found.append(_Candidate(path, value))
        elif isinstance(value, Mapping) and value:
            if all(isinstance(k, str) for k in value) and all(isinstance(v, torch.Tensor) for v in value.values()):
                found.append(_Candidate(path, value))
            elif len(path) < _MAX_DEPTH:
                if path:
                    opened.append(_Candidate(path, value).where)
                for key in sorted(value, key=_rank):  # stable: the file's own order among equals
                    visit(value[key], (*path, key))

    visit(obj, ())
    found.sort(key=lambda c: c.ema)  # raw weights before EMA copies, wherever each was found
    return found, opened


def _fit(expected: set[str], state: Mapping[str, Any]) -> _Fit:
    keys, prefix = set(state), ""
    while keys != expected:
        strip = next((p for p in _PREFIXES if all(k.startswith(p) for k in keys)
                      and not any(k.startswith(p) for k in expected)), None)
        if strip is None:
            break
        keys, prefix = {k[len(strip):] for k in keys}, prefix + strip
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items()}
    return _Fit(state, prefix, tuple(sorted(expected - keys)), tuple(sorted(keys - expected)), len(keys & expected))


def _shape_mismatches(state: Mapping[str, Any], own: Mapping[str, Any]) -> str:
    wrong = [(k, list(v.shape), list(own[k].shape)) for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    shown = ", ".join(f"{k}: {a} in the file, {b} in the class" for k, a, b in wrong[:_FEW])
    return f"{len(wrong)} shape mismatches ({shown}{', ...' if len(wrong) > _FEW else ''})" if wrong else ""


def _top_keys(obj: Any) -> str:
    if not isinstance(obj, Mapping):
        return f"a {type(obj).__name__}"
    keys = [repr(k) for k in list(obj)[:12]]
    return f"top-level keys [{', '.join(keys)}{', ...' if len(obj) > 12 else ''}]"


def _instantiate(options: ConvertOptions) -> Any:
    torch = import_torch()
    cls = model_class(str(options.model_class))
    try:
        module = cls(**dict(options.model_args))
    except Exception as err:  # user code may raise anything
        raise ConfigError(f"{options.model_class}(**{dict(options.model_args)}) failed ({_first_line(err)})",
                          hint="check --model-args (a JSON object of the constructor's keyword arguments)") from err
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"--model-class {options.model_class} made a {type(module).__name__}, not a "
                          "torch.nn.Module", hint=_CLASS_HINT)
    return module


def _found_note(source: Path, chosen: _Candidate, fit: _Fit | None, candidates: list[_Candidate]) -> str:
    what = "a pickled module" if fit is None else f"{len(fit.state)} tensors"
    note = f"weights from {source.name}{chosen.where} ({what}"
    note += f", prefix {fit.prefix!r} stripped)" if fit is not None and fit.prefix else ")"
    if chosen.ema:
        note += "; EMA weights, the only ones that fit the class"
    unused_ema = [source.name + c.where for c in candidates if c.ema and c is not chosen]
    if unused_ema and not chosen.ema:
        note += f"; EMA weights at {', '.join(unused_ema)} not used (raw weights are preferred)"
    return note


def _from_checkpoint(source: Path, obj: Any, options: ConvertOptions) -> LoadedModel:
    """The model from whatever `torch.load` / safetensors gave: a module, a state dict, or a checkpoint dict that
    holds one (see _WEIGHT_KEYS); the candidate whose keys fit --model-class exactly (strict load) wins."""
    torch = import_torch()
    if isinstance(obj, torch.nn.Module):
        return LoadedModel(obj.eval(), (f"weights from {source.name} (a pickled module)",))
    candidates, opened = _candidates(obj)
    states = [c for c in candidates if not isinstance(c.value, torch.nn.Module)]
    if not options.model_class:
        module = next((c for c in candidates if isinstance(c.value, torch.nn.Module)), None)
        if module is not None:
            return LoadedModel(module.value.eval(), (_found_note(source, module, None, candidates),))
        if states:
            raise ConfigError(f"{source.name} holds a state dict (weights only, {len(states[0].value)} tensors at "
                              f"{source.name}{states[0].where}); rebuilding the model needs its class",
                              hint=f"pass --model-class and --model-args: {_CLASS_HINT}")
    if not candidates and isinstance(obj, Mapping) and not obj and options.model_class:
        empty = _instantiate(options)  # a module without parameters saves an empty state dict
        if not empty.state_dict():
            return LoadedModel(empty.eval(), (f"{source.name} is an empty state dict; {options.model_class} has "
                                              f"no parameters",))
    if not candidates:
        looked = f"; looked into {', '.join(source.name + w for w in opened)}" if opened else ""
        raise InputError(f"{source.name} holds no state dict of tensors ({_top_keys(obj)}{looked})",
                         hint="save model.state_dict() (or a checkpoint dict holding it under 'state_dict') or a "
                              "TorchScript / torch.export program")
    module = _instantiate(options)
    own = module.state_dict()
    expected = set(own)
    tried: list[tuple[_Candidate, _Fit, str]] = []
    for candidate in candidates:
        state = candidate.value.state_dict() if isinstance(candidate.value, torch.nn.Module) else candidate.value
        fit = _fit(expected, state)
        failure = ""
        if not fit.missing and not fit.unexpected:
            try:
                module.load_state_dict(fit.state, strict=True)
                return LoadedModel(module.eval(), (_found_note(source, candidate, fit, candidates),))
            except RuntimeError as err:  # the keys fit but shapes differ: another candidate may still fit
                failure = _shape_mismatches(fit.state, own) or " ".join(str(err).split())[:300]
        tried.append((candidate, fit, failure))
    # The closest: same keys (wrong shapes) first, then the most keys in common.
    candidate, fit, failure = max(tried, key=lambda t: (bool(t[2]), t[1].shared))
    listed = ", ".join(f"{source.name}{c.where} ({len(f.state)} tensors)" for c, f, _ in tried)
    closest = failure or fit.describe()
    raise ConfigError(f"{source.name} does not fit {options.model_class}(**{dict(options.model_args)}): "
                      f"{_top_keys(obj)}; state dicts tried: {listed}; "
                      f"closest, {source.name}{candidate.where}: {closest}",
                      hint="check --model-class and --model-args (the class and constructor arguments the checkpoint "
                           "was trained with)")


def _refused_global(err: BaseException) -> str:
    """The class torch's weights_only unpickler refused, e.g. `numpy._core.multiarray.scalar`."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
    return found.group(1) if found else "an object that is not a tensor"


def _torch_load(source: Path, options: ConvertOptions) -> Any:
    """torch.load with weights_only=True (tensors, numbers, strings, containers); anything else needs the opt-in."""
    torch = import_torch()
    try:
        return torch.load(str(source), map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only refuses pickled code with UnpicklingError
        if "weights_only" not in str(err) and "Unsupported global" not in str(err):
            raise _unreadable(source, "torch-save", err) from err
        if not options.trust_pickle:
            raise ConfigError(f"{source.name} holds pickled Python objects besides tensors (first refused: "
                              f"{_refused_global(err)}; a whole module, or optimizer/config objects of a "
                              f"checkpoint), and loading them runs code from the file",
                              hint="pass --trust-pickle if you trust this file, or save the weights alone "
                                   "(torch.save(model.state_dict(), PATH)) or TorchScript") from err
    try:
        return torch.load(str(source), map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError) as err:  # the pickled class's module is not importable here
        missing = err.name if isinstance(err, ModuleNotFoundError) and err.name else _first_line(err)
        raise InputError(f"{source.name} holds a pickled object whose class cannot be imported here ({missing}): "
                         "unpickling needs the code that defined it", hint="run mlpack where that module imports "
                         "(its folder on PYTHONPATH), or save the weights alone (torch.save(model.state_dict(), "
                         "PATH)) and pass --model-class FILE.py:Class") from err
    except Exception as err:
        raise _unreadable(source, "torch-save", err) from err


def load(source: Path, fmt: Format, options: ConvertOptions) -> LoadedModel:
    """The model as something callable: a ScriptModule, an ExportedProgram, or an nn.Module in eval mode."""
    torch = import_torch()
    if fmt == "torchscript":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript loading
                return LoadedModel(torch.jit.load(str(source), map_location="cpu").eval())
        except Exception as err:  # any failure to deserialize is an unreadable input file
            raise _unreadable(source, fmt, err) from err
    if fmt == "torch-export":
        try:
            return LoadedModel(torch.export.load(str(source)))
        except Exception as err:
            raise _unreadable(source, fmt, err) from err
    if fmt == "safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:
            raise missing_extra("safetensors", "torch", "reading .safetensors state dicts") from err
        try:
            state = load_file(str(source), device="cpu")
        except Exception as err:
            raise _unreadable(source, fmt, err) from err
        return _from_checkpoint(source, state, options)
    return _from_checkpoint(source, _torch_load(source, options), options)
