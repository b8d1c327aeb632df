"""onnxruntime's error messages on one line without the C++ place they come from: a Reshape's signature filled the
300 characters an error line keeps and pushed out the shapes that did not fit. The errors are onnxruntime's own."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from mlpk.packager.onnxrt import error_text, session_options


def test_an_onnxruntime_error_keeps_what_did_not_fit() -> None:
    import onnxruntime as ort

    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [helper.make_tensor("shape", TensorProto.INT64, [3], [4, 4, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception) as raised:  # noqa: PT011 - onnxruntime's untyped errors
        session.run(None, {"x": np.zeros((8, 32), np.float32)})
    assert ".h:" in str(raised.value) and "onnxruntime::" in str(raised.value)  # what it says as it comes
    text = error_text(raised.value)
    assert ".h:" not in text and "onnxruntime::" not in text and "\n" not in text
    assert "requested shape:{4,4,8}" in text[:300]
