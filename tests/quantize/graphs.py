"""Small ONNX graphs in the shapes that broke FP16 conversion on third-party models (generated, never committed).

Each builder writes one model with random float weights and returns its path; `data` writes matching inputs.
- `output_from_blocked`: the graph output comes straight from an op the converter keeps in float (TopK values,
  Resize, a Cast at the output, an ai.onnx.ml Normalizer), so keep_io_types' output Cast meets a float tensor;
- `subgraphs`: an If whose branches compute in float, and a Loop that applies an outer-scope weight each turn;
- `no_fp16_kernel`: float math around an op onnxruntime's CPU provider has no float16 kernel for;
- `shape_arithmetic`: int64 shape arithmetic (Shape -> Gather -> Concat -> Reshape) mixed with float math, and the
  attention-style Cast of a dimension to float (scale = 1 / sqrt(d));
- `light_model`: a model of the ONNX project's "light" ImageNet set (IR 3, initializers listed as graph inputs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(7)
OPSET = 17
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def _weight(name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.normal(0, scale, shape).astype(np.float32), name)


def _const(name: str, values: list[int] | list[float], dtype: type = np.int64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype), name)


def _save(path: Path, nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
          outputs: list[onnx.ValueInfoProto], initializers: list[onnx.TensorProto],
          extra_opsets: tuple[tuple[str, int], ...] = ()) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializers)
    opsets = [helper.make_opsetid("", OPSET), *(helper.make_opsetid(d, v) for d, v in extra_opsets)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _float(name: str, *shape: int | str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def output_from_blocked(path: Path, head: str) -> Path:
    """x[n, 16] -> MatMul -> Relu -> HEAD -> y, where HEAD is topk | resize | cast | normalizer."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="dense"),
             helper.make_node("Relu", ["h"], ["r"], name="relu")]
    inits = [_weight("w", 16, 16)]
    outputs = [_float("y", "n", 16)]
    extra: tuple[tuple[str, int], ...] = ()
    if head == "topk":
        inits.append(_const("k", [4]))
        nodes.append(helper.make_node("TopK", ["r", "k"], ["y", "idx"], name="topk"))
        outputs = [_float("y", "n", 4), helper.make_tensor_value_info("idx", TensorProto.INT64, ["n", 4])]
    elif head == "resize":
        inits.append(_const("scales", [1.0, 2.0], np.float32))
        nodes.append(helper.make_node("Resize", ["r", "", "scales"], ["y"], name="upsample", mode="linear"))
        outputs = [_float("y", "n", 32)]
    elif head == "cast":
        nodes.append(helper.make_node("Cast", ["r"], ["y"], name="to_float", to=TensorProto.FLOAT))
    elif head == "normalizer":
        nodes.append(helper.make_node("Normalizer", ["r"], ["y"], name="l2", domain="ai.onnx.ml", norm="L2"))
        extra = (("ai.onnx.ml", 3),)
    else:
        raise ValueError(head)
    return _save(path, nodes, [_float("x", "n", 16)], outputs, inits, extra)


def subgraphs(path: Path, turns: int = 3) -> Path:
    """y = If(sum(x) > 0, then: relu(x @ w), else: -x), then a Loop of `turns`: y = tanh(y @ v) (v from outside)."""
    then_graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["t0"]), helper.make_node("Relu", ["t0"], ["then_out"])],
        "then", [], [_float("then_out", "n", 16)])
    else_graph = helper.make_graph([helper.make_node("Neg", ["x"], ["else_out"])], "else", [],
                                   [_float("else_out", "n", 16)])
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("MatMul", ["state_in", "v"], ["m"]), helper.make_node("Tanh", ["m"], ["state_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []), _float("state_in", "n", 16)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), _float("state_out", "n", 16)])
    nodes = [helper.make_node("ReduceSum", ["x"], ["total"], name="total", keepdims=0),
             helper.make_node("Greater", ["total", "zero"], ["positive"], name="positive"),
             helper.make_node("If", ["positive"], ["branch"], name="branch", then_branch=then_graph,
                              else_branch=else_graph),
             helper.make_node("Loop", ["turns", "", "branch"], ["y"], name="loop", body=body)]
    inits = [_weight("w", 16, 16), _weight("v", 16, 16), _const("zero", 0.0, np.float32), _const("turns", turns)]
    return _save(path, nodes, [_float("x", "n", 16)], [_float("y", "n", 16)], inits)


def no_fp16_kernel(path: Path, op: str = "Celu") -> Path:
    """x[n, 16] -> MatMul -> OP -> Relu -> MatMul -> y, OP having no float16 form in onnxruntime on CPU: Celu (its
    ONNX schema is float-only) or a seeded RandomUniform noise term (no float16 CPU kernel: NOT_IMPLEMENTED)."""
    inits = [_weight("w1", 16, 16), _weight("w2", 16, 8)]
    if op == "Celu":
        middle = [helper.make_node("Celu", ["h"], ["e"], name="celu", alpha=1.0)]
    elif op == "RandomUniform":
        middle = [helper.make_node("RandomUniform", [], ["noise"], name="noise", shape=[1, 16], low=0.0, high=1e-3,
                                   seed=1.0),
                  helper.make_node("Add", ["h", "noise"], ["e"], name="add_noise")]
    else:
        raise ValueError(op)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="dense1"), *middle,
             helper.make_node("Relu", ["e"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="dense2")]
    return _save(path, nodes, [_float("x", "n", 16)], [_float("y", "n", 8)], inits)


def loop_with(path: Path, op: str = "Celu", turns: int = 2) -> Path:
    """A Loop whose body applies OP (float-only in ONNX: Celu) to state * w, w read from the outer scope."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("MatMul", ["state_in", "w"], ["m"], name="body_dense"),
         helper.make_node(op, ["m"], ["state_out"], name="body_op")],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []), _float("state_in", "n", 16)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), _float("state_out", "n", 16)])
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h"], name="dense"),
             helper.make_node("Loop", ["turns", "", "h"], ["y"], name="loop", body=body)]
    inits = [_weight("w0", 16, 16), _weight("w", 16, 16), _const("turns", turns)]
    return _save(path, nodes, [_float("x", "n", 16)], [_float("y", "n", 16)], inits)


def shape_arithmetic(path: Path) -> Path:
    """x[n, 4, 8]: attention-like scores q k^T / sqrt(d) with d read from the shape and cast to float, and the
    result flattened with a shape built from Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    names = ("q", "k")
    inits = [_weight(f"w{n}", 8, 8) for n in names] + [
        _const("last", [2]), _const("zero", [0]), _const("minus_one", [-1]), _const("axes0", [0])]
    nodes = [helper.make_node("MatMul", ["x", f"w{n}"], [n], name=f"proj_{n}") for n in names] + [
        helper.make_node("Transpose", ["k"], ["kt"], name="kt", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"], name="scores"),
        helper.make_node("Shape", ["q"], ["q_shape"], name="q_shape"),
        helper.make_node("Gather", ["q_shape", "last"], ["d"], name="d", axis=0),
        helper.make_node("Cast", ["d"], ["d_float"], name="d_float", to=TensorProto.FLOAT),
        helper.make_node("Sqrt", ["d_float"], ["sqrt_d"], name="sqrt_d"),
        helper.make_node("Div", ["scores", "sqrt_d"], ["scaled"], name="scale"),
        helper.make_node("Softmax", ["scaled"], ["attn"], name="softmax", axis=-1),
        helper.make_node("Shape", ["x"], ["x_shape"], name="x_shape"),
        helper.make_node("Gather", ["x_shape", "zero"], ["batch"], name="batch", axis=0),
        helper.make_node("Concat", ["batch", "minus_one"], ["flat_shape"], name="flat_shape", axis=0),
        helper.make_node("Reshape", ["attn", "flat_shape"], ["y"], name="flatten")]
    return _save(path, nodes, [_float("x", "n", 4, 8)], [_float("y", "n", 16)], inits)


def two_heads(path: Path) -> Path:
    """x[n, 4, 16] -> MatMul -> Tanh -> two regression heads `score` and `offset` [n, 4, 1] (gated by cosine)."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="dense"),
             helper.make_node("Tanh", ["h"], ["t"], name="tanh"),
             helper.make_node("MatMul", ["t", "ws"], ["score"], name="score"),
             helper.make_node("MatMul", ["t", "wo"], ["offset"], name="offset")]
    inits = [_weight("w", 16, 16), _weight("ws", 16, 1), _weight("wo", 16, 1)]
    heads = [_float("score", "n", 4, 1), _float("offset", "n", 4, 1)]
    return _save(path, nodes, [_float("x", "n", 4, 16)], heads, inits)


def data(path: Path, model: Path, samples: int = 32) -> Path:
    """Random inputs for every float input of `model` (free dimensions after the first become their fixed size)."""
    graph = onnx.load(str(model)).graph
    initializers = {t.name for t in graph.initializer}
    arrays = {}
    for value in graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_value or 1 for d in value.type.tensor_type.shape.dim[1:]]
        arrays[value.name] = RNG.standard_normal((samples, *dims)).astype(np.float32)
    np.savez(path, **arrays)
    return path


def light_model(name: str) -> Path:
    """The path of a light model shipped in the onnx wheel (onnx/backend/test/data/light/light_NAME.onnx)."""
    return LIGHT / f"light_{name}.onnx"


def image_data(path: Path, model: Path, samples: int = 10) -> Path:
    """Image-like inputs for a model with one fixed NCHW input: values in [0, 1], like a normalised photo."""
    graph = onnx.load(str(model)).graph
    initializers = {t.name for t in graph.initializer}
    (value,) = [v for v in graph.input if v.name not in initializers]
    dims = [d.dim_value for d in value.type.tensor_type.shape.dim[1:]]
    np.savez(path, **{value.name: RNG.uniform(0, 1, (samples, *dims)).astype(np.float32)})
    return path
