"""Open Inference Protocol v2 inference requests and responses: JSON tensors and the binary tensor extension.

Spec: KServe "Open Inference Protocol (V2)", sections "Inference Request JSON Object", "Tensor Data" and the Triton
"Binary Tensor Data Extension": with the `Inference-Header-Content-Length` header, the body is a JSON header of that
many bytes followed by the raw tensors, in input order, for each input with `parameters.binary_data_size`. The same
layout is used for outputs asked for with `parameters.binary_data` (or request-level `binary_data_output`).
Every check raises a ClientError that names the tensor and what the model expects.

A non-tensor output (a ZipMap's class probabilities) is a BYTES tensor of JSON texts, one per row: in JSON answers
its `data` holds those texts (`"{\"0\": 0.9, \"1\": 0.1}"`); asked for as binary, it is sent as the extension
sends any BYTES tensor (each JSON text length-prefixed), so `binary_data` is honoured for it like for any output.

JSON is strict (RFC 8259), both ways. Requests holding `NaN` / `Infinity` literals are refused, naming the input;
nesting deeper than the parser's stack is refused as too deep. A NaN or infinite output value is answered in JSON as
the string "NaN", "Infinity" or "-Infinity", as the protobuf JSON mapping writes non-finite floats (and so KServe's
gRPC/JSON gateway): the body stays valid JSON, and `np.array(data, dtype=np.float32)` (what tritonclient.http's
`as_numpy` does) reads those strings back as the same values. Binary outputs carry them exactly, as ever.
Parameters are strictly typed: `binary_data_output` and `binary_data` must be JSON booleans.

JSON is parsed and written by orjson (a strict RFC 8259 parser in Rust, and a writer that takes numpy arrays as
they are): at the sizes requests come in, it is several times faster than the standard library, which was a large
share of a request's time. A body orjson refuses is parsed again by the standard library, whose errors (and
NonFinite literals) say where it broke and which input holds what; a body that may hold more numbers than the model
takes is parsed by the standard library only, counting as it goes. Outputs are written as the standard library
wrote them: floats of every width as the shortest text of their float64 value.
"""

from __future__ import annotations

import array as pyarray
import json
import math
import re
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from mlpk.runtimes import budget
from mlpk.runtimes.budget import Hold
from mlpk.runtimes.scheduler import timeout_parameter
from mlpk.runtimes.dtypes import decode_bytes, encode_bytes
from mlpk.runtimes.errors import ClientError
from mlpk.runtimes.model import Model, TensorSpec

# numpy kinds a JSON array may arrive as, per v2 datatype family (an int literal is a fine FP32 value; a float is
# not an INT64; a bool is only a BOOL).
_JSON_KINDS = {"BOOL": "b", "INT": "iu", "UINT": "iu", "FP": "iuf"}
MAX_DIMS = 64  # numpy's limit on the rank of an array


@dataclass(frozen=True, slots=True)
class InferRequest:
    """A decoded request: the feeds, the outputs to return, and which of them go back as binary."""

    id: str | None
    feeds: dict[str, np.ndarray]
    outputs: tuple[str, ...]
    binary: frozenset[str]
    timeout_us: int | None = None  # the request's `timeout` parameter (scheduler.py)


class NonFinite:
    """A `NaN`, `Infinity` or `-Infinity` literal of a request: not JSON; kept so the error can name its input."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def loads(raw: bytes | str, model: Model, what: str = "inference request", *,
          hold: Hold | None = None, max_numbers: int | None = None) -> Any:
    """Parse JSON, or raise a ClientError that says where it broke and what the model expects.

    `hold(size, what)` is called first with the most memory the parsed values can take (budget.json_cost), so the
    server's budget refuses a body of millions of numbers before parsing it. When the body may hold more than
    `max_numbers` numbers (max_numbers()), they are counted as they are parsed and the parse stops past it."""
    data = raw.encode() if isinstance(raw, str) else raw
    bound = budget.json_values_bound(data)
    if hold is not None:
        hold(budget.PER_JSON_VALUE * bound,
             lambda: f"parsing the {what} JSON ({len(data)} bytes, up to {bound} values)")
    parse_int: Callable[[str], Any] = int
    parse_float: Callable[[str], Any] = float
    if max_numbers is not None and bound > max_numbers:
        parse_int, parse_float = _counting_hooks(max_numbers, model, what)
    else:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # the standard library's parse below refuses it in its words, or reads what orjson does not
    try:
        parsed = json.loads(data, parse_constant=NonFinite, parse_int=parse_int, parse_float=parse_float)
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError; an integer past Python's 4300 digits
        raise ClientError(f"malformed JSON in the {what}: {str(err)[:200]}; the model '{model.name}' expects inputs "
                          f"{model.signature()}") from err
    except RecursionError:  # the C scanner recurses once per nesting level
        raise ClientError(f"the {what} JSON is nested too deep to parse (over {sys.getrecursionlimit()} levels); "
                          f"tensors need no more than {MAX_DIMS} levels") from None
    if _SURROGATE.search(data) and _has_lone_surrogate(parsed):  # orjson refuses these; the standard library not
        raise ClientError(f"the {what} holds a UTF-16 surrogate (\\ud800-\\udfff) that pairs with nothing, which is "
                          "not Unicode text; send strings as UTF-8 or as escapes of whole characters")
    return parsed


# A surrogate escape, or a surrogate's bytes in UTF-8 (which the standard library's parser reads with surrogatepass).
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


# Numbers a request holds besides tensor data: shape dimensions, binary_data_size and other parameters.
_NUMBERS_PER_TENSOR = MAX_DIMS + 16
_NUMBERS_BESIDES = 1024


def max_numbers(model: Model, max_elements: int) -> int:
    """The most numbers a valid request for `model` holds: every input at its fixed size (or at `max_elements`
    where an axis is dynamic), and the numbers of shapes and parameters."""
    known = model.memo.get(("max_numbers", max_elements))
    if known is not None:
        return int(known)
    data = sum(math.prod(dim or 0 for dim in spec.shape) if all(dim is not None for dim in spec.shape)
               else max_elements for spec in model.inputs)
    total = data + _NUMBERS_PER_TENSOR * (len(model.inputs) + len(model.outputs)) + _NUMBERS_BESIDES
    model.memo[("max_numbers", max_elements)] = total
    return total


def _counting_hooks(limit: int, model: Model, what: str) -> tuple[Callable[[str], Any], Callable[[str], Any]]:
    """json.loads hooks that convert numbers as the parser would, refusing the body past `limit` of them."""
    count = 0

    def counted(convert: Callable[[str], Any]) -> Callable[[str], Any]:
        def hook(text: str) -> Any:
            nonlocal count
            count += 1
            if count > limit:
                raise ClientError(f"the {what} holds more than {limit} numbers, more than the model '{model.name}' "
                                  f"takes (inputs {model.signature()}; at most MLPACK_MAX_TENSOR_ELEMENTS values "
                                  "for an input with a dynamic axis)")
            return convert(text)

        return hook

    return counted(int), counted(float)


_FAMILIES: dict[str, str] = {}


def _family(datatype: str) -> str:
    family = _FAMILIES.get(datatype)
    if family is None:
        family = _FAMILIES[datatype] = next(prefix for prefix in ("BOOL", "UINT", "INT", "FP", "BYTES")
                                            if datatype.startswith(prefix))
    return family


def from_json(value: Any, spec: TensorSpec, limit: int, *, finite: bool = True, bools: bool = True) -> np.ndarray:
    """A JSON value (nested lists or a flat list) as an array of `spec`'s dtype, with its own natural shape.

    Values are checked, not coerced: strings in a numeric tensor, floats in an integer tensor and integers outside
    the datatype's range are client errors, and so is a float past the datatype's range, and true/false among
    numbers. `finite=False` is for gRPC's typed contents, whose floats may be NaN or infinite as raw bytes may (JSON
    has neither). `bools=False` says the value holds no true/false (a body without those words, typed contents),
    which spares numeric tensors the search for them."""
    family = _family(spec.datatype)
    if bools and family != "BOOL" and family != "BYTES" and _holds_bool(value):
        raise ClientError(f"input '{spec.name}' holds true/false among numbers; the model expects "
                          f"{spec.describe()} (only a BOOL input takes true/false)")
    try:
        if family == "BYTES":
            array = np.array(value, dtype=object)
            _refuse_non_finite(array, spec)
            if not all(isinstance(item, str) for item in array.reshape(-1)):
                raise ClientError(f"input '{spec.name}' is BYTES and must hold strings; the model expects "
                                  f"{spec.describe()}")
            return array
        floats = _flat_floats(value) if family == "FP" else None
        array = np.asarray(value) if floats is None else floats
        if array.dtype == object:
            _refuse_non_finite(array, spec)
            if family == "FP":
                array = _numbers_as_floats(array)
        if family in ("INT", "UINT") and array.dtype.kind in "fO":
            array = _big_integers(value, spec)
    except ValueError as err:  # ragged nesting
        raise ClientError(f"input '{spec.name}' data is not a rectangular array ({err}); the model expects "
                          f"{spec.describe()}") from err
    if array.size > limit:
        raise ClientError(f"input '{spec.name}' has {array.size} elements, over the limit of {limit} "
                          "(MLPACK_MAX_TENSOR_ELEMENTS)")
    if array.size and array.dtype.kind not in _JSON_KINDS[family]:
        raise ClientError(f"input '{spec.name}' data holds {array.dtype.kind!r}-kind values ({_kind_name(array)}), "
                          f"but the model expects datatype {spec.datatype} with shape {spec.v2_shape}")
    if array.size and family in ("INT", "UINT"):
        info = np.iinfo(spec.dtype)
        if array.min() < info.min or array.max() > info.max:
            raise ClientError(f"input '{spec.name}' has values outside the range of {spec.datatype} "
                              f"[{info.min}, {info.max}]; the model expects {spec.describe()}")
    converted = array.astype(spec.dtype, copy=False)
    if finite and array.size and family == "FP" and not np.isfinite(converted).all():  # past the type's range
        value = array.reshape(-1)[np.argmin(np.isfinite(converted).reshape(-1))]
        limit_value = np.finfo(spec.dtype).max
        raise ClientError(f"input '{spec.name}' has value {value} outside the range of {spec.datatype} "
                          f"[{-limit_value}, {limit_value}]; the model expects {spec.describe()}")
    return converted


def _holds_bool(value: Any) -> bool:
    """Whether a JSON value holds true or false anywhere in its nested lists."""
    pending = [value]
    while pending:
        item = pending.pop()
        if type(item) is bool:
            return True
        if type(item) is list:
            pending.extend(item)
    return False


def _flat_floats(value: Any) -> np.ndarray | None:
    """A flat list that starts with a float, as float64, when every item is a number (what np.asarray would make
    of it, in a third less time: the usual JSON tensor); None for anything else (nested, strings, None, an integer
    past float64's range), which np.asarray then reads and the checks refuse as before. struct.pack and array('d')
    take floats, ints and bools and raise for anything else; neither reads strings as numbers, as np.array(dtype=)
    does. struct.pack converts a list of up to STRUCT_ITEMS in 40-60 % less time than array('d') (which parses each
    item with PyArg_Parse: 5.8 us against 2.7 us for the 512 floats of bench/overload.py's request, 21.6 against 8.7
    for 2,048); past that its argument tuple costs more than it saves (17.8 ms against 10.3 for a million)."""
    if type(value) is not list or not value or type(value[0]) is not float:
        return None
    try:
        if len(value) <= STRUCT_ITEMS:
            return np.frombuffer(struct.pack(f"{len(value)}d", *value), np.float64)
        return np.frombuffer(pyarray.array("d", value), np.float64)
    except (TypeError, OverflowError, struct.error):
        return None


STRUCT_ITEMS = 16384


def _numbers_as_floats(array: np.ndarray) -> np.ndarray:
    """An object array numpy made of numbers alone (an integer past int64 beside floats: 1e21 written as an integer)
    as float64, as _flat_floats reads the same list; kept as it is when any item is not a number or is past float64's
    range, for the kind check to refuse."""
    items = array.reshape(-1)
    if not all(type(item) in (float, int, bool) for item in items):
        return array
    try:
        return np.array([float(item) for item in items], np.float64).reshape(array.shape)
    except OverflowError:
        return array


def _refuse_non_finite(array: np.ndarray, spec: TensorSpec) -> None:
    found = next((item for item in array.reshape(-1) if isinstance(item, NonFinite)), None)
    if found is not None:
        raise ClientError(f"input '{spec.name}' holds {found.text}, which is not JSON (RFC 8259 has no NaN or "
                          f"Infinity); send finite numbers, or binary data; the model expects {spec.describe()}")


def _big_integers(value: Any, spec: TensorSpec) -> np.ndarray:
    """Integers numpy's inference widened to float or object (a list mixing values above 2**63 with small ones):
    kept exact when every element is a Python int in the datatype's range."""
    items = np.array(value, dtype=object)
    if not all(type(item) is int for item in items.reshape(-1)):
        return np.asarray(value)  # not all integers: the kind check reports it
    info = np.iinfo(spec.dtype)
    if any(not info.min <= item <= info.max for item in items.reshape(-1)):
        raise ClientError(f"input '{spec.name}' has values outside the range of {spec.datatype} "
                          f"[{info.min}, {info.max}]; the model expects {spec.describe()}")
    return items.astype(spec.dtype)


def _kind_name(array: np.ndarray) -> str:
    return {"U": "strings", "f": "floats", "i": "integers", "b": "booleans", "O": "mixed values"}.get(
        array.dtype.kind, str(array.dtype))


def _field(entry: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = entry.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ClientError(f"{where} needs '{key}' as {getattr(kind, '__name__', 'a value')}, got {value!r:.80}")
    return value


def input_spec(model: Model, name: str, datatype: str, shape: Any, max_elements: int) -> tuple[TensorSpec, int]:
    """The spec of input `name` and its element count, once its datatype, shape and size are what the model takes
    (the checks every transport makes: HTTP's JSON header and gRPC's message alike)."""
    spec = model.input(name)
    if spec is None:
        raise ClientError(f"unknown input '{name}'; the model '{model.name}' expects inputs {model.signature()}")
    if datatype != spec.datatype:
        raise ClientError(f"input '{name}' has datatype {datatype}, but the model expects datatype "
                          f"{spec.datatype} with shape {spec.v2_shape}")
    if type(shape) is not list or any(type(d) is not int or d < 0 for d in shape):
        raise ClientError(f"input '{spec.name}' needs 'shape' as a list of non-negative integers, got {shape!r:.80}; "
                          f"the model expects shape {spec.v2_shape} with datatype {spec.datatype}")
    spec.check_shape(shape)
    count = math.prod(shape)
    if count > max_elements:
        raise ClientError(f"input '{name}' has {count} elements (shape {shape}), over the limit of "
                          f"{max_elements} (MLPACK_MAX_TENSOR_ELEMENTS)")
    if shape and max(shape) > max_elements:  # no elements (a 0 beside it), but no array numpy can make either
        raise ClientError(f"input '{name}' has a dimension of {max(shape)} (shape {shape}), over the limit of "
                          f"{max_elements} elements (MLPACK_MAX_TENSOR_ELEMENTS)")
    return spec, count


def output_spec(model: Model, name: Any) -> TensorSpec:
    """The spec of a requested output; an unknown name is a ClientError listing the model's outputs."""
    spec = model.output(name) if isinstance(name, str) else None
    if spec is None:
        raise ClientError(f"unknown output {name!r}; the model '{model.name}' has outputs "
                          f"{', '.join(spec.describe() for spec in model.outputs)}")
    return spec


def raw_output(spec: TensorSpec, array: np.ndarray) -> tuple[list[int], bytes]:
    """An output's shape and its bytes in the binary tensor layout (BYTES length-prefixed, JSON outputs as texts)."""
    if spec.is_json:
        array = json_texts(array)
    raw = encode_bytes(array) if spec.datatype == "BYTES" else np.ascontiguousarray(array).tobytes()
    return list(array.shape), raw


def parse_request(model: Model, body: bytes, header_length: int | None, max_elements: int,
                  hold: Hold | None = None) -> InferRequest:
    """Decode a v2 inference request for `model` (see the module docstring for the layout); `hold` as loads()."""
    if header_length is None:
        header_raw, binary = body, memoryview(b"")
    else:
        if not 0 <= header_length <= len(body):
            raise ClientError(f"Inference-Header-Content-Length is {header_length}, but the body has {len(body)} "
                              "bytes; it must be the length of the JSON header that starts the body")
        header_raw, binary = body[:header_length], memoryview(body)[header_length:]
    request = loads(header_raw, model, hold=hold, max_numbers=max_numbers(model, max_elements))
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise ClientError(f"an inference request is a JSON object with an 'inputs' list; the model '{model.name}' "
                          f"expects inputs {model.signature()}")
    feeds: dict[str, np.ndarray] = {}
    offset = 0
    # Whether an input may hold true/false: a body without an 'r' or an 'l' holds neither word (the usual numeric
    # request, whose keys have neither letter), which memchr tells in a fraction of a microsecond; the words
    # themselves take about 6 us each to look for in a 10 KB body.
    bools = (b"r" in header_raw or b"l" in header_raw) and (b"true" in header_raw or b"false" in header_raw)
    for entry in request["inputs"]:
        if not isinstance(entry, dict):
            raise ClientError(f"each item of 'inputs' is an object with name, datatype, shape and data; got "
                              f"{entry!r:.80}")
        name = _field(entry, "name", str, "an input")
        if name in feeds:
            raise ClientError(f"input '{name}' appears twice in the request")
        datatype = _field(entry, "datatype", str, f"input '{name}'")
        spec, count = input_spec(model, name, datatype, entry.get("shape"), max_elements)
        shape = entry["shape"]
        parameters = entry.get("parameters") or {}
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is not None:
            if (header_length is None or not isinstance(size, int) or isinstance(size, bool) or size < 0
                    or offset + size > len(binary)):
                raise ClientError(f"input '{name}' declares binary_data_size {size!r}, but the request carries "
                                  f"{len(binary) - offset} binary bytes for it (binary data needs the "
                                  "Inference-Header-Content-Length header)")
            chunk = binary[offset:offset + size]
            offset += size
            feeds[name] = from_binary(chunk, spec, shape, count)
        else:
            if "data" not in entry:
                raise ClientError(f"input '{name}' has neither 'data' nor parameters.binary_data_size")
            array = from_json(entry["data"], spec, max_elements, bools=bools)
            if array.size != count:
                raise ClientError(f"input '{name}' has {array.size} values in 'data' but shape {shape} needs "
                                  f"{count}; the model expects {spec.describe()}")
            feeds[name] = array.reshape(shape)
    if offset != len(binary):
        raise ClientError(f"the request carries {len(binary) - offset} binary bytes that no input's "
                          "binary_data_size accounts for")
    check_complete(model, feeds)
    outputs, binary_outputs = _requested_outputs(model, request)
    request_id = request.get("id")
    return InferRequest(request_id if isinstance(request_id, str) else None, feeds, outputs, binary_outputs,
                        timeout_parameter(request.get("parameters")))


def check_complete(model: Model, feeds: Mapping[str, np.ndarray]) -> None:
    """Refuse a request that lacks an input the model takes."""
    missing = [spec for spec in model.inputs if spec.name not in feeds]
    if missing:
        raise ClientError(f"missing input {', '.join(spec.describe() for spec in missing)}; the request has "
                          f"{', '.join(repr(name) for name in feeds) or 'no inputs'}")


def from_binary(chunk: memoryview | bytes, spec: TensorSpec, shape: list[int], count: int) -> np.ndarray:
    """An input tensor from its bytes in the binary tensor layout (the extension's, and gRPC's raw contents)."""
    if spec.datatype == "BYTES":
        try:
            items = decode_bytes(chunk, count)
        except (ValueError, UnicodeDecodeError) as err:
            raise ClientError(f"input '{spec.name}' binary BYTES data is malformed: {err}") from err
        return np.array(items, dtype=object).reshape(shape)
    expected = count * spec.dtype.itemsize
    if len(chunk) != expected:
        raise ClientError(f"input '{spec.name}' has {len(chunk)} binary bytes, but shape {shape} of "
                          f"{spec.datatype} needs {expected}")
    return np.frombuffer(chunk, dtype=spec.dtype).reshape(shape)


def _requested_outputs(model: Model, request: Mapping[str, Any]) -> tuple[tuple[str, ...], frozenset[str]]:
    parameters = request.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise ClientError(f"request 'parameters' must be an object, got {parameters!r:.80}")
    all_binary = _flag(parameters or {}, "binary_data_output", "request parameter") or False
    wanted = request.get("outputs")
    if wanted is None:
        names = tuple(spec.name for spec in model.outputs)
        return names, frozenset(names if all_binary else ())
    if not isinstance(wanted, list):
        raise ClientError("'outputs' must be a list of objects with a 'name'")
    names_list: list[str] = []
    binary: set[str] = set()
    for entry in wanted:
        name = output_spec(model, entry.get("name") if isinstance(entry, dict) else None).name
        names_list.append(name)
        params = entry.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise ClientError(f"output '{name}' 'parameters' must be an object, got {params!r:.80}")
        flag = _flag(params or {}, "binary_data", f"output '{name}' parameter")
        if flag if flag is not None else all_binary:
            binary.add(name)
    return tuple(dict.fromkeys(names_list)), frozenset(binary)


def _flag(parameters: Mapping[str, Any], key: str, where: str) -> bool | None:
    """A boolean parameter, None when absent; a string "false" is refused rather than read as true."""
    value = parameters.get(key)
    if value is not None and not isinstance(value, bool):
        raise ClientError(f"{where} '{key}' must be a JSON boolean (true or false), got {value!r:.80}")
    return value


def _json_item(item: Any) -> Any:
    if isinstance(item, bytes):
        return item.decode("utf-8", "replace")
    if isinstance(item, (dict, list)):  # a non-tensor output's plain JSON value (model.plain): kept as JSON
        return item
    return str(item)


def _plain_json(value: Any) -> Any:
    """What orjson leaves to its caller: numpy values of types it does not take (a `longlong` array or scalar,
    as onnxruntime hands out int64, a non-contiguous array) as Python's."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    """`value` as compact JSON, numpy arrays (json_ready's) included. orjson writes a non-finite float of an array
    as null, which no answer holds otherwise: an answer with a null in it is written again with those floats as the
    module docstring's strings (json_ready leaves that check to this one search of the text)."""
    text = orjson.dumps(value, default=_plain_json, option=orjson.OPT_SERIALIZE_NUMPY)
    if b"null" not in text:
        return text
    return orjson.dumps(_finite(value), default=_plain_json, option=orjson.OPT_SERIALIZE_NUMPY)


def _finite(value: Any) -> Any:
    """`value` with every float array holding NaN or an infinity as nested lists of numbers and those strings."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all():
        items = value.astype(object)
        flat = items.reshape(-1)
        source = value.reshape(-1)
        for index in np.flatnonzero(~np.isfinite(source)):
            flat[index] = "NaN" if np.isnan(source[index]) else "Infinity" if source[index] > 0 else "-Infinity"
        return items.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    return value


def json_ready(array: np.ndarray) -> list[Any] | np.ndarray:
    """An output as dumps() writes it: a C-contiguous numeric array (floats as float64, so their text is the
    shortest of their float64 value, as the standard library writes it), else nested Python lists (bytes elements
    decoded as UTF-8, replacing invalid bytes; the JSON values of a non-tensor output, such as a ZipMap row's
    `{"0": 0.9, "1": 0.1}`, as themselves). Non-finite floats become the strings of the module docstring when
    dumps() writes the answer."""
    if array.dtype.kind == "S" or array.dtype == object:
        if not array.size:
            return array.tolist()
        items = np.empty(array.size, dtype=object)
        for index, item in enumerate(array.reshape(-1)):  # one by one: numpy would broadcast list elements
            items[index] = _json_item(item)
        return items.reshape(array.shape).tolist()
    if array.ndim == 0 or array.dtype.kind not in "biuf":
        return _finite(array.tolist())
    if array.dtype.kind == "f" and array.dtype != np.float64:
        array = array.astype(np.float64)
    elif array.dtype.char in "qQ":  # onnxruntime's int64 is numpy's `longlong`, which orjson does not take as is
        array = array.view(np.int64 if array.dtype.char == "q" else np.uint64)
    return np.ascontiguousarray(array)


def json_texts(array: np.ndarray) -> np.ndarray:
    """A non-tensor output's JSON values as JSON texts, the elements of its BYTES tensor."""
    texts = np.empty(array.shape, dtype=object)
    texts.reshape(-1)[:] = [json.dumps(item, separators=(",", ":")) for item in array.reshape(-1)]
    return texts


def encode_response(model: Model, request: InferRequest, results: Sequence[np.ndarray]) -> tuple[bytes, int | None]:
    """The response body and, when some output is binary, the JSON header's length (for the header field)."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, array in zip(request.outputs, results, strict=True):
        spec = output_spec(model, name)
        if name in request.binary:
            shape, raw = raw_output(spec, array)
            outputs.append({"name": name, "datatype": spec.datatype, "shape": shape,
                            "parameters": {"binary_data_size": len(raw)}})
            blobs.append(raw)
            continue
        if spec.is_json:
            array = json_texts(array)
        outputs.append({"name": name, "datatype": spec.datatype, "shape": list(array.shape),
                        "data": json_ready(array.reshape(-1))})
    header: dict[str, Any] = {"model_name": model.name, "model_version": model.version, "outputs": outputs}
    if request.id is not None:
        header["id"] = request.id
    text = dumps(header)
    if not blobs:
        return text, None
    return b"".join([text, *blobs]), len(text)
