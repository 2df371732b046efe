"""Small float ONNX models for the firmware tests, quantised by ONNX Runtime.

Each builder returns a float ``onnx.ModelProto`` with random (seeded) weights and a
dynamic batch dimension; :func:`quantised` calibrates it on random data and writes
the int8 model with ``quantize_static`` in the format asked for.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from npu.firmware.models.make_digits import quantize


def _model(nodes, inputs, outputs, inits, name):
    graph = helper.make_graph(nodes, name, inputs, outputs,
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="npu-gen tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _io(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def mlp(seed=0):
    """20 -> Gemm 37 (ReLU) -> MatMul 12 (a Gemm with transB, and a MatMul)."""
    rng = np.random.default_rng(seed)
    inits = {"w1": rng.normal(0, 0.3, (37, 20)), "b1": rng.normal(0, 0.1, 37),
             "w2": rng.normal(0, 0.3, (37, 12))}
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
             helper.make_node("Relu", ["h"], ["hr"], name="relu1"),
             helper.make_node("MatMul", ["hr", "w2"], ["y"], name="fc2")]
    return _model(nodes, [_io("x", ["N", 20])], [_io("y", ["N", 12])], inits, "mlp"), (20,)


def cnn(seed=0):
    """Conv 3x3 (3->8) ReLU, MaxPool 2, Conv 3x3 stride 2 (8->16) ReLU, depthwise Conv 3x3
    (16 groups) ReLU, Conv 1x1 (16->16), GlobalAveragePool, Flatten, Gemm 16->10."""
    rng = np.random.default_rng(seed)
    inits = {"c1w": rng.normal(0, 0.3, (8, 3, 3, 3)), "c1b": rng.normal(0, 0.1, 8),
             "c2w": rng.normal(0, 0.2, (16, 8, 3, 3)), "c2b": rng.normal(0, 0.1, 16),
             "dww": rng.normal(0, 0.4, (16, 1, 3, 3)), "dwb": rng.normal(0, 0.1, 16),
             "pww": rng.normal(0, 0.3, (16, 16, 1, 1)), "pwb": rng.normal(0, 0.1, 16),
             "fcw": rng.normal(0, 0.3, (16, 10)), "fcb": rng.normal(0, 0.1, 10)}
    # Per-channel weight ranges that differ a lot, so per-channel scales matter.
    inits["c2w"] *= np.linspace(0.2, 2.0, 16).reshape(16, 1, 1, 1)
    nodes = [
        helper.make_node("Conv", ["x", "c1w", "c1b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "c2w", "c2b"], ["c2"], name="conv2_stride2", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "dww", "dwb"], ["dw"], name="depthwise", pads=[1, 1, 1, 1], group=16),
        helper.make_node("Relu", ["dw"], ["r3"], name="relu3"),
        helper.make_node("Conv", ["r3", "pww", "pwb"], ["pw"], name="pointwise"),
        helper.make_node("GlobalAveragePool", ["pw"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fcw", "fcb"], ["y"], name="fc"),
    ]
    return _model(nodes, [_io("x", ["N", 3, 12, 12])], [_io("y", ["N", 10])], inits, "cnn"), (3, 12, 12)


def residual(seed=0):
    """Conv 3x3 ReLU, Conv 3x3, Add (the block's input), ReLU, GlobalAveragePool, Gemm."""
    rng = np.random.default_rng(seed)
    inits = {"c0w": rng.normal(0, 0.3, (8, 4, 1, 1)), "c0b": rng.normal(0, 0.1, 8),
             "c1w": rng.normal(0, 0.15, (8, 8, 3, 3)), "c1b": rng.normal(0, 0.1, 8),
             "c2w": rng.normal(0, 0.15, (8, 8, 3, 3)), "c2b": rng.normal(0, 0.1, 8),
             "fcw": rng.normal(0, 0.3, (8, 5)), "fcb": rng.normal(0, 0.1, 5)}
    nodes = [
        helper.make_node("Conv", ["x", "c0w", "c0b"], ["c0"], name="stem"),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("Conv", ["r0", "c1w", "c1b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "c2w", "c2b"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r0"], ["sum"], name="residual_add"),
        helper.make_node("Relu", ["sum"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fcw", "fcb"], ["y"], name="fc"),
    ]
    return _model(nodes, [_io("x", ["N", 4, 6, 6])], [_io("y", ["N", 5])], inits, "residual"), (4, 6, 6)


def ragged_gemm(seed=0):
    """One 37x50 by 50x19 Gemm with bias: a single GEMM of ragged size (input fixed at 37 rows)."""
    rng = np.random.default_rng(seed)
    inits = {"w": rng.normal(0, 0.2, (50, 19)), "b": rng.normal(0, 0.5, 19)}
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="gemm")]
    return _model(nodes, [_io("x", [37, 50])], [_io("y", [37, 19])], inits, "ragged_gemm"), None


BUILDERS = {"mlp": mlp, "cnn": cnn, "residual": residual, "ragged_gemm": ragged_gemm}


def sample_inputs(model, batch, seed=1):
    """Random float32 inputs (B, *input shape) for a model from :data:`BUILDERS`."""
    rng = np.random.default_rng(seed)
    shape = [d.dim_value if d.HasField("dim_value") else 1 for d in
             model.graph.input[0].type.tensor_type.shape.dim]
    return rng.normal(0, 1, (batch, *shape)).astype(np.float32)


def quantised(name, path, quant_format="QDQ", activation_type="int8", per_channel=True, seed=0):
    """Build model ``name``, quantise it to ``path``; return (path, float model)."""
    model, _ = BUILDERS[name](seed)
    calibration = sample_inputs(model, 32, seed=seed + 100)
    quantize(model, calibration, path, quant_format=quant_format, per_channel=per_channel,
             activation_type=activation_type)
    return path, model
