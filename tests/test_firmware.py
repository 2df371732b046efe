"""Firmware: ONNX import, compiler and runtime against ONNX Runtime (golden backend), errors.

The numerical contract: against ONNX Runtime on the same int8 model and input, every
output element within one quantisation step, at least 99% identical, argmax agreeing
on at least 99% of samples. The RTL backend's bit-exactness is in test_rtl_firmware.py.
"""

import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnx_models as om
from npu.firmware.onnx_import import ModelError, NpuLayer, load_model
from npu.firmware.reference import agreement, ort_run, output_step
from npu.firmware.runtime import Device
from npu.generators.config import NPUConfig

logging.getLogger().setLevel(logging.ERROR)     # quantize_static's pre-processing advice

DEFAULT = NPUConfig()
CASES = [(name, fmt, act) for name in ("mlp", "cnn", "residual", "ragged_gemm") for fmt in ("QDQ", "QOperator")
         for act in ("int8", "uint8")]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Quantised models by (name, format, activation type), built once."""
    root = tmp_path_factory.mktemp("models")
    cache = {}

    def get(name, fmt="QDQ", act="int8", per_channel=True):
        key = (name, fmt, act, per_channel)
        if key not in cache:
            path = root / f"{name}_{fmt}_{act}_{'pc' if per_channel else 'pt'}.onnx"
            cache[key] = om.quantised(name, path, fmt, act, per_channel)[0]
        return cache[key]
    return get


def _batch(name, n):
    model, _ = om.BUILDERS[name](0)
    return om.sample_inputs(model, n if name != "ragged_gemm" else max(1, n // 16), seed=11)


def _contract(path, x, config=DEFAULT):
    graph = load_model(path)
    result = Device(config, "golden").run(graph, x)
    out = graph.outputs[0][0]
    ref = ort_run(path, x, graph)[out]
    stats = agreement(result.outputs[out], ref, output_step(graph, out), x.shape[0])
    return graph, result, stats


@pytest.mark.parametrize("name,fmt,act", CASES)
def test_matches_onnxruntime(models, name, fmt, act):
    path = models(name, fmt, act)
    x = _batch(name, 48)
    graph, result, stats = _contract(path, x)
    assert stats["within_one_step"] == 1.0, stats
    assert stats["identical"] >= 0.99, stats
    assert stats["argmax_agreement"] >= 0.99, stats
    # The convolutions and matrix products ran on the NPU, not on the host.
    npu = {s.name for s in result.layers if s.where == "npu"}
    host_mac_ops = [s.name for s in result.layers if s.where == "host" and s.op in ("Conv", "MatMul", "Gemm")]
    assert npu and not host_mac_ops, (npu, host_mac_ops)
    assert result.outputs[graph.outputs[0][0]].dtype == np.float32


def test_per_tensor_weights(models):
    path = models("cnn", "QDQ", "int8", per_channel=False)
    _, _, stats = _contract(path, _batch("cnn", 16))
    assert stats["identical"] >= 0.99 and stats["within_one_step"] == 1.0, stats


def test_layers_and_placement(models):
    graph = load_model(models("cnn"))
    layers = {n.name: n for n in graph.nodes if isinstance(n, NpuLayer)}
    assert set(layers) == {"conv1", "conv2_stride2", "depthwise", "pointwise", "fc"}
    assert layers["conv2_stride2"].conv["strides"] == [2, 2]
    assert len(set(layers["conv2_stride2"].scale)) == 16          # per-channel requantisation
    assert layers["conv1"].clamp[0] == layers["conv1"].y.zero_point   # ReLU fused as the clamp
    assert "Softmax" not in {n.op for n in graph.nodes}
    result = Device(DEFAULT, "golden").run(graph, _batch("cnn", 2))
    where = {s.name: s.where for s in result.layers}
    assert where["pool1"] == "host" and where["gap"] == "host" and where["depthwise"] == "npu"


def test_depthwise_packs_groups_across_columns(models):
    from npu.firmware.compiler import compile_model
    graph = load_model(models("cnn"))
    compiled = compile_model(graph, DEFAULT, {"x": (2, 3, 12, 12)})
    dw = compiled.layers["depthwise"]
    # 16 groups of one channel: 8 groups side by side per GEMM on an 8-column array.
    assert [len(p.groups) for p in dw.packs] == [8, 8]
    assert dw.macs == 2 * 3 * 3 * 9 * 16


def test_outputs_do_not_depend_on_the_configuration(models):
    """The same bytes on every array shape, bus and buffer size (tiling changes, results don't)."""
    path = models("residual", "QOperator", "uint8")
    x = _batch("residual", 6)
    want = Device(DEFAULT, "golden").run(path, x).outputs["y"]
    for config in (NPUConfig(rows=3, cols=5, act_depth=64, wgt_depth=64, acc_depth=64, param_depth=4),
                   NPUConfig(rows=4, cols=4, bus_width=64), NPUConfig(rows=2, cols=3, data_width=12, acc_width=40)):
        got = Device(config, "golden").run(path, x).outputs["y"]
        assert np.array_equal(got, want), config


def test_batch_equals_samples_one_at_a_time(models):
    path = models("mlp", "QOperator", "int8")
    x = _batch("mlp", 5)
    dev = Device(DEFAULT, "golden")
    together = dev.run(path, x).outputs["y"]
    alone = np.concatenate([dev.run(path, x[i:i + 1]).outputs["y"] for i in range(5)])
    assert together.shape == (5, 1, 12)
    assert np.array_equal(together, alone)


def test_short_batch_form(models):
    """(B, *shape[1:]) is accepted for a model whose first dimension is the batch."""
    path = models("mlp")
    x = _batch("mlp", 4)
    full = Device(DEFAULT, "golden").run(path, x).outputs["y"]
    short = Device(DEFAULT, "golden").run(path, x[:, 0]).outputs["y"]
    assert short.shape == (4, 12) and np.array_equal(short, full[:, 0])


def test_digits_model_accuracy():
    from npu.firmware.models.make_digits import MODEL, held_out
    x, labels = held_out()
    result = Device(DEFAULT, "golden").run(MODEL, x)
    predicted = result.outputs["logits"].reshape(len(labels), -1).argmax(axis=1)
    assert np.mean(predicted == labels) >= 0.9


# -- bad input ------------------------------------------------------------------------

def _float_model(tmp_path, op="Relu"):
    nodes = [helper.make_node(op, ["x"], ["y"], name=f"my_{op.lower()}")]
    graph = helper.make_graph(nodes, "f", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / f"{op}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_float_model_is_refused(tmp_path):
    with pytest.raises(ModelError, match="not quantised"):
        load_model(_float_model(tmp_path))
    float_mlp, _ = om.mlp()
    path = tmp_path / "float_mlp.onnx"
    onnx.save(float_mlp, path)
    with pytest.raises(ModelError, match="not quantised"):
        load_model(path)


def test_unsupported_op_names_the_node(tmp_path, models):
    model = onnx.load(models("mlp"))
    y = model.graph.output[0].name
    model.graph.node.append(helper.make_node("Erf", [y], ["erf_out"], name="strange_erf"))
    model.graph.output[0].name = "erf_out"
    path = tmp_path / "erf.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelError, match=r"node 'strange_erf' \(Erf\) is not supported"):
        load_model(path)


@pytest.mark.parametrize("content,match", [(None, "no such model file"), (b"\x00garbage\xff" * 10, "not a readable")])
def test_missing_or_corrupt_file(tmp_path, content, match):
    path = tmp_path / "m.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelError, match=match):
        load_model(path)


@pytest.mark.parametrize("x,match", [
    (np.zeros((2, 1, 21), np.float32), r"shape \(2, 1, 21\); the model takes \(N, 20\)"),
    (np.zeros((2, 1, 20), np.float64), "dtype float64; the model takes float32"),
    (np.zeros((0, 1, 20), np.float32), "no samples"),
])
def test_bad_inputs(models, x, match):
    with pytest.raises(ModelError, match=match):
        Device(DEFAULT, "golden").run(models("mlp"), x)


def test_narrow_data_width_refused(models):
    with pytest.raises(ModelError, match="data_width >= 8"):
        Device(NPUConfig(data_width=6), "golden").run(models("mlp"), _batch("mlp", 1))


# -- npu run --------------------------------------------------------------------------

def _cli(*args):
    from click.testing import CliRunner

    from npu.cli import main
    return CliRunner().invoke(main, [str(a) for a in args])


def test_npu_run_writes_outputs_and_report(tmp_path, models):
    import json
    path = models("cnn", "QOperator", "int8")
    x = _batch("cnn", 3)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "y.npy"
    result = _cli("run", path, "--input", tmp_path / "x.npy", "--output", out, "--backend", "golden",
                  "--report", tmp_path / "rep")
    assert result.exit_code == 0, result.output
    y = np.load(out)
    assert y.shape == (3, 1, 10) and y.dtype == np.float32
    assert np.array_equal(y, Device(DEFAULT, "golden").run(path, x).outputs["y"])
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    where = {(entry["op"], entry["where"]) for entry in report["layers"]}
    assert ("Conv", "npu") in where and ("MaxPool", "host") in where and ("Gemm", "npu") in where
    assert report["batch"] == 3 and report["total_macs"] > 0
    assert (tmp_path / "rep" / "report.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("case", ["float_model", "unsupported_op", "bad_shape", "bad_dtype", "corrupt_model",
                                  "missing_model", "corrupt_input"])
def test_npu_run_errors_are_one_line(tmp_path, models, case):
    model, x = models("mlp"), _batch("mlp", 2)
    if case == "float_model":
        model = _float_model(tmp_path)
    elif case == "unsupported_op":
        model = _float_model(tmp_path, "Erf")
    elif case == "bad_shape":
        x = x[:, :, :5]
    elif case == "bad_dtype":
        x = x.astype(np.float16)
    elif case == "corrupt_model":
        model = tmp_path / "bad.onnx"
        model.write_bytes(b"not an onnx file at all")
    elif case == "missing_model":
        model = tmp_path / "missing.onnx"
    np.save(tmp_path / "x.npy", x)
    if case == "corrupt_input":
        (tmp_path / "x.npy").write_bytes(b"\x93NUMPY garbage")
    out = tmp_path / "y.npy"
    result = _cli("run", model, "--input", tmp_path / "x.npy", "--output", out)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.output.strip().endswith(errors[0]), result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_npu_demo_golden(tmp_path):
    result = _cli("demo", "--backend", "golden", "--report", tmp_path)
    assert result.exit_code == 0, result.output
    accuracy = float(result.output.split("accuracy")[1].split("%")[0])
    assert accuracy >= 90.0
    assert "100.0% of 1000 outputs identical" in result.output
    assert (tmp_path / "report.json").exists()
