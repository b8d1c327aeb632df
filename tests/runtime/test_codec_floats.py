"""codec.from_json reads a flat list of floats through struct.pack or array('d') (_flat_floats, by its length)
instead of np.asarray: the same array, or the same refusal in the same words, for every kind of list a client may
send, in every float datatype (integers past int64 beside floats included: numbers, read as floats both ways)."""

from __future__ import annotations

from typing import Any

import pytest

from mlpk.runtimes import codec
from mlpk.runtimes.errors import ClientError
from mlpk.runtimes.model import TensorSpec

LISTS: list[Any] = [
    [0.1, -2.5, 3e38, 1e-45],
    [1.5, 2, True, False],  # ints and bools beside floats: numbers, as np.asarray reads them
    [1.5, 2**70, -(2**64)],  # integers past int64 beside floats: numbers all the same, read as floats
    [[1.5, 2**70], [2.5, 3.5]],  # the same, nested (np.asarray's reading in both runs)
    [1.5, 10**400],  # past float64's range: refused as mixed values
    [1.5, "2.5"],  # a string is not a number, even one that reads as one
    [1.5, None],
    [1.5, [2.5]],  # ragged
    [1.5, {"a": 1}],
    [1e300, 1.0],  # past float32's range (and float16's)
    [65504.0, 65520.0],
    [0.5] * 600,
    [0.25],
    [0.5] * (codec.STRUCT_ITEMS + 1),  # past struct.pack's share: array('d') reads it
    [0.5] * codec.STRUCT_ITEMS + ["x"],
    [0.5] * codec.STRUCT_ITEMS + [2**70, 10**400],
]


def _outcome(value: Any, spec: TensorSpec) -> tuple[str, Any]:
    try:
        array = codec.from_json(value, spec, 100_000)
    except ClientError as err:
        return "refused", err.message
    return "array", (array.dtype, array.shape, array.tobytes())


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
@pytest.mark.parametrize("value", LISTS, ids=[repr(v)[:30] for v in LISTS])
def test_flat_floats_read_as_np_asarray_reads_them(monkeypatch: pytest.MonkeyPatch, value: Any, datatype: str) -> None:
    spec = TensorSpec("x", datatype, (None,))
    fast = _outcome(value, spec)
    monkeypatch.setattr(codec, "_flat_floats", lambda _: None)  # np.asarray's reading
    assert fast == _outcome(value, spec)


def test_the_fast_reading_is_taken_for_a_list_of_floats_only() -> None:
    assert codec._flat_floats([0.5, 1, True]) is not None
    for value in ([1, 0.5], [True, 0.5], [0.5, "1"], [[0.5]], [], "0.5", (0.5,)):
        assert codec._flat_floats(value) is None, value
