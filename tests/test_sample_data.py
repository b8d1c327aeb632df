"""Example inputs for converters before a graph exists (sample_data.generate): deterministic and typed."""

from __future__ import annotations

import numpy as np
import pytest

from mlpk.packager.card import TensorSpec
from mlpk.packager.errors import InputError
from mlpk.packager.sample_data import generate


def test_generated_inputs_are_deterministic_and_typed() -> None:
    specs = [TensorSpec("f", "float32", ("batch", 3)), TensorSpec("i", "int64", ("batch", "seq")),
             TensorSpec("b", "bool", (2,)), TensorSpec("s", "str", (None, 1))]
    first, second = generate(specs), generate(specs)
    for name in ("f", "i", "b", "s"):
        np.testing.assert_array_equal(first.inputs[name], second.inputs[name])
    assert first.inputs["f"].shape == (8, 3) and first.inputs["f"].dtype == np.float32
    assert first.inputs["i"].shape == (8, 4) and first.inputs["i"].min() >= 0
    assert first.inputs["b"].shape == (2,) and first.inputs["b"].dtype == bool
    assert first.inputs["s"].shape == (8, 1) and first.inputs["s"].dtype.kind == "U"
    assert first.synthetic and len(first) == 8


def test_an_input_of_unknown_rank_names_the_flags() -> None:
    with pytest.raises(InputError, match="input 'x' has an unknown rank") as err:
        generate([TensorSpec("x", "float32", None)])
    assert err.value.hint is not None and "--sample-data" in err.value.hint
    # shared by convert, export and bench (which takes no data flags): the hint says which commands take them
    assert "of mlpack convert or mlpack export" in err.value.hint
