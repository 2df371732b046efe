"""N:M sparsity end to end: pruning ONNX models, compiling their layers as sparse tiles,
and running them (golden model; one model on the RTL) bit-exact against the dense NPU."""

import logging

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import onnx_models as om
from npu.cli import main
from npu.firmware.compiler import compile_model
from npu.firmware.onnx_import import NpuLayer, load_model
from npu.firmware.reference import agreement, ort_run, output_step
from npu.firmware.runtime import Device, batch_inputs, trace_shapes
from npu.firmware.sparse import SparsityError, fits_pattern, prune_model
from npu.generators.config import NPUConfig

logging.getLogger().setLevel(logging.ERROR)

DENSE = NPUConfig()
SPARSE_24 = NPUConfig(sparsity="2:4")


def _pruned(tmp_path, name, fmt="QDQ", n=2, m=4, keep_dense=()):
    """A quantised model pruned to n:m; weights listed in ``keep_dense`` (by index in the
    pruning order) get their original values back, so those layers stay dense."""
    path = om.quantised(name, tmp_path / f"{name}_{fmt}.onnx", fmt)[0]
    proto = onnx.load(str(path))
    original = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    pruned = prune_model(proto, n, m)
    for i in keep_dense:
        w_name = pruned[i][0]
        for init in proto.graph.initializer:
            if init.name == w_name:
                init.CopyFrom(numpy_helper.from_array(original[w_name], w_name))
    out = tmp_path / f"{name}_{fmt}_{n}of{m}.onnx"
    onnx.save(proto, str(out))
    return out, pruned


def _x(name, batch):
    model, _ = om.BUILDERS[name](0)
    return om.sample_inputs(model, batch, seed=7)


def _layer_kn(layer):
    w = layer.weight
    return w.reshape(w.shape[0], -1).T if layer.op == "Conv" else w


@pytest.mark.parametrize("name,fmt", [("mlp", "QDQ"), ("mlp", "QOperator"), ("cnn", "QDQ"), ("ragged_gemm", "QDQ")])
def test_pruned_model_runs_sparse_and_equals_dense_npu(tmp_path, name, fmt):
    path, pruned = _pruned(tmp_path, name, fmt)
    # at most 2 of every 4 along K (a short last group keeps at most its length or 2)
    assert pruned and all(kept <= (2 * (K // 4) + min(2, K % 4)) / K + 1e-9 for _, K, _, kept in pruned)
    graph = load_model(path)
    layers = [node for node in graph.nodes if isinstance(node, NpuLayer)]
    assert all(fits_pattern(_layer_kn(layer), 2, 4) for layer in layers)
    x = _x(name, 3 if name != "ragged_gemm" else 1)
    sparse = Device(SPARSE_24, "golden").run(graph, x)
    dense = Device(DENSE, "golden").run(graph, x)
    out = graph.outputs[0][0]
    assert np.array_equal(sparse.outputs[out], dense.outputs[out])
    # Every NPU layer ran as sparse tiles on the 2:4 NPU, none on the dense one; except
    # grouped convolutions whose groups' K (9 for a 3x3 depthwise) is not a multiple of
    # 4: packed side by side, their groups straddle the 4-groups of K, so they run dense.
    grouped = {n.name for n in layers if n.op == "Conv" and (n.conv or {}).get("group", 1) > 1}
    npu = [s for s in sparse.layers if s.where == "npu"]
    assert npu and all("2:4 sparse tiles" in s.note for s in npu if s.name not in grouped)
    assert not any("sparse" in s.note for s in dense.layers)
    # ... and the pruned model still meets the numerical contract against ONNX Runtime.
    ref = ort_run(path, x, graph)[out]
    stats = agreement(sparse.outputs[out], ref, output_step(graph, out), x.shape[0])
    assert stats["within_one_step"] == 1.0 and stats["identical"] >= 0.99


def test_sparse_layers_take_fewer_array_macs(tmp_path):
    """The compiled program of a 2:4 layer spends half the MAC slots of the dense one."""
    path, _ = _pruned(tmp_path, "mlp")
    graph = load_model(path)
    feeds, _, _ = batch_inputs(graph, {graph.inputs[0][0]: _x("mlp", 16)})
    shapes = {k: v.shape for k, v in feeds.items()}
    trace = trace_shapes(graph, shapes)
    slots = {}
    for label, config in (("dense", DENSE), ("sparse", SPARSE_24)):
        compiled = compile_model(graph, config, shapes, trace=trace)
        slots[label] = sum(p.plan.array_macs for plan in compiled.layers.values() for p in plan.packs)
    # Half, up to the zero padding of K and N to whole tiles (K = 20 and 37 here).
    assert slots["sparse"] < 0.7 * slots["dense"], slots


def test_unpruned_and_mixed_layers(tmp_path):
    """Weights that break the pattern run as dense tiles on the sparse NPU, next to sparse
    layers of the same model, with the dense NPU's results."""
    path, pruned = _pruned(tmp_path, "mlp", keep_dense=(0,))
    graph = load_model(path)
    x = _x("mlp", 4)
    result = Device(SPARSE_24, "golden").run(graph, x)
    notes = [s.note for s in result.layers if s.where == "npu"]
    assert len(notes) >= 2 and "sparse" not in notes[0] and any("sparse" in n for n in notes[1:]), notes
    out = graph.outputs[0][0]
    assert np.array_equal(result.outputs[out], Device(DENSE, "golden").run(graph, x).outputs[out])


def test_prune_model_refuses_models_without_weights(tmp_path):
    model, _ = om.BUILDERS["mlp"](0)        # float: no quantised weights
    with pytest.raises(SparsityError, match="no quantised Conv/MatMul/Gemm weights"):
        prune_model(model, 2, 4)


def test_npu_prune_cli(tmp_path):
    src = om.quantised("cnn", tmp_path / "cnn.onnx")[0]
    out = tmp_path / "cnn_1of4.onnx"
    result = CliRunner().invoke(main, ["prune", str(src), "--sparsity", "1:4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "to 1:4" in result.output and out.exists()
    graph = load_model(out)
    assert all(fits_pattern(_layer_kn(n), 1, 4) for n in graph.nodes if isinstance(n, NpuLayer))
    for args, message in (
            (["--sparsity", "4:4"], "error: --sparsity '4:4' is invalid"),
            (["--sparsity", "dense"], "give an N:M pattern such as 2:4"),
    ):
        bad = CliRunner().invoke(main, ["prune", str(src), *args, "--out", str(tmp_path / "x.onnx")])
        assert bad.exit_code == 2 and message in bad.output, bad.output
        assert len(bad.output.strip().splitlines()) == 1
    missing = CliRunner().invoke(main, ["prune", str(tmp_path / "none.onnx"), "--sparsity", "2:4",
                                        "--out", str(tmp_path / "x.onnx")])
    assert missing.exit_code == 2 and "no such file" in missing.output


@pytest.mark.rtl
def test_pruned_model_on_rtl_equals_golden(tmp_path):
    """A model with a dense and a sparse layer on the generated 2:4 NPU: the rtl backend's
    bytes equal the golden backend's, and so do the NPU's counters."""
    path, _ = _pruned(tmp_path, "mlp", keep_dense=(0,))
    x = _x("mlp", 3)
    golden = Device(SPARSE_24, "golden").run(path, x)
    rtl = Device(SPARSE_24, "rtl", work_dir=tmp_path / "sim").run(path, x)
    for out, want in golden.outputs.items():
        assert np.array_equal(rtl.outputs[out], want), f"output {out} differs between rtl and golden"
    for r, g in zip(rtl.layers, golden.layers):
        if r.where == "npu":
            for name in ("macs", "instructions", "bytes_read", "bytes_written"):
                assert r.counters[name] == g.counters[name], (r.name, name)
