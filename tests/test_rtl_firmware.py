"""The runtime's ``rtl`` backend: int8 ONNX models on the generated Verilog (Icarus), driven
through the NPU's registers, give exactly the bytes of the ``golden`` backend; the NPU's
own counters agree with the golden model's per layer."""

import logging

import numpy as np
import pytest

import onnx_models as om
from npu.firmware.runtime import Device
from npu.boards.platforms import board_config
from npu.generators.config import NPUConfig

pytestmark = pytest.mark.rtl
logging.getLogger().setLevel(logging.ERROR)

SMALL = NPUConfig(rows=4, cols=4, bus_width=64, act_depth=128, wgt_depth=64, acc_depth=128, param_depth=8)
#: The iCEBreaker's NPU: sequential dispatch, streamed parameters, serial requantiser.
ICEBREAKER = board_config("icebreaker")


@pytest.mark.parametrize("name,fmt,act,batch,config", [
    ("mlp", "QDQ", "int8", 4, NPUConfig()),
    ("mlp", "QOperator", "uint8", 3, NPUConfig()),
    ("cnn", "QDQ", "int8", 2, NPUConfig()),
    ("cnn", "QOperator", "uint8", 1, SMALL),
    ("residual", "QOperator", "int8", 2, NPUConfig()),
    ("ragged_gemm", "QDQ", "int8", 1, NPUConfig()),
    ("mlp", "QDQ", "int8", 2, ICEBREAKER),
    ("cnn", "QDQ", "int8", 1, ICEBREAKER),
], ids=["mlp-qdq", "mlp-qop-uint8", "cnn-qdq", "cnn-qop-4x4", "residual-qop", "gemm-37x50x19", "mlp-icebreaker",
        "cnn-icebreaker"])
def test_rtl_equals_golden(tmp_path, name, fmt, act, batch, config):
    path = om.quantised(name, tmp_path / f"{name}.onnx", fmt, act)[0]
    model, _ = om.BUILDERS[name](0)
    x = om.sample_inputs(model, batch, seed=5)
    golden = Device(config, "golden").run(path, x)
    rtl = Device(config, "rtl", work_dir=tmp_path / "sim").run(path, x)
    for out, want in golden.outputs.items():
        assert np.array_equal(rtl.outputs[out], want), f"output {out} differs between rtl and golden"
    npu_layers = [s for s in rtl.layers if s.where == "npu"]
    assert npu_layers and all(s.cycles > 0 for s in npu_layers)
    for r, g in zip(rtl.layers, golden.layers):
        assert (r.name, r.where) == (g.name, g.where)
        if r.where == "npu":
            for counter in ("macs", "instructions", "bytes_written", "bytes_read"):
                if config.builds_counter(counter):      # (the iCEBreaker's NPU counts cycles only)
                    assert r.counters[counter] == g.counters[counter], (r.name, counter)
            # cycles >= the array's minimum for the MACs the layer streams
            assert r.cycles * config.macs_per_cycle >= g.counters["macs"] > 0
    util = rtl.utilisation()
    assert 0 < util <= 1


class _CorruptRing(Device):
    """Compiles normally, then overwrites the second layer's first instruction with an illegal
    word (opcode 0): the NPU must stop with an error status, and the run fail in one line."""

    def compile(self, model, feeds):
        compiled = super().compile(model, feeds)
        second = sorted(compiled.layers.values(), key=lambda layer: layer.first_slot)[1]
        ring = dict(compiled.image)[compiled.ring_base]
        slot = second.first_slot * 16
        patched = ring[:slot] + bytes(16) + ring[slot + 16:]
        compiled.image = [(a, patched if a == compiled.ring_base else d) for a, d in compiled.image]
        return compiled


@pytest.mark.parametrize("backend", ["golden", "rtl"])
def test_hardware_error_is_reported_not_hung(tmp_path, backend):
    from npu.firmware.runtime import DeviceError
    path = om.quantised("mlp", tmp_path / "mlp.onnx")[0]
    x = om.sample_inputs(om.mlp()[0], 2)
    with pytest.raises(DeviceError, match=r"error ILLEGAL_INSTRUCTION \(code 1\) at ring slot") as info:
        _CorruptRing(NPUConfig(), backend, work_dir=tmp_path / "sim").run(path, x)
    assert "\n" not in str(info.value)
