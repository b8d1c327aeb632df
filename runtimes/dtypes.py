"""Tensor datatypes in the three vocabularies the runtime meets: Open Inference Protocol v2 names (`FP32`),
onnxruntime type strings (`tensor(float)`) and numpy dtypes.

The v2 names and the BYTES wire format (each element a 4-byte little-endian length, then its bytes) follow the
KServe v2 protocol's "Tensor Data Types" and "Binary Tensor Data Extension" sections, as tritonclient implements them.
"""

from __future__ import annotations

import struct

import numpy as np

# v2 datatype -> numpy dtype (BYTES is carried as numpy object arrays of str/bytes, as onnxruntime expects).
V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}

# onnxruntime NodeArg.type -> v2 datatype.
ORT_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

_LENGTH = struct.Struct("<I")


def numpy_to_v2(dtype: np.dtype) -> str:
    """The v2 datatype of a numpy array's dtype (str/bytes/object arrays are BYTES)."""
    if dtype.kind in "OSU":
        return "BYTES"
    for name, candidate in V2_TO_NUMPY.items():
        if candidate == dtype:
            return name
    raise ValueError(f"numpy dtype {dtype} has no Open Inference Protocol v2 datatype")


def encode_bytes(array: np.ndarray) -> bytes:
    """A BYTES tensor in the binary extension's layout: for each element, its length (uint32 LE) then its bytes."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        raw = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(_LENGTH.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def decode_bytes(raw: bytes | memoryview, count: int) -> list[str]:
    """The inverse of `encode_bytes`, for `count` elements; raises ValueError when `raw` does not hold exactly that.

    Elements are decoded as UTF-8 text (onnxruntime string tensors hold text); invalid UTF-8 is an error."""
    view = memoryview(raw)
    items: list[str] = []
    offset = 0
    for index in range(count):
        if offset + 4 > len(view):
            raise ValueError(f"binary BYTES data ends inside the length of element {index} of {count}")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise ValueError(f"binary BYTES element {index} claims {length} bytes but only {len(view) - offset} remain")
        items.append(bytes(view[offset:offset + length]).decode("utf-8"))
        offset += length
    if offset != len(view):
        raise ValueError(f"binary BYTES data has {len(view) - offset} bytes after its {count} elements")
    return items
