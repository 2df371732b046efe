"""The board system (NPU + UART bridge + RAM, :class:`npu.boards.soc.BoardSoC`) under Icarus,
driven through its UART pins by the host code of the ``serial`` backend: a model runs bit
for bit like the golden backend, and bad frames are answered without hanging the link."""

import asyncio
import json
import os
import pickle
import tempfile

import numpy as np
import pytest

import onnx_models as om
from npu.firmware.onnx_import import load_model
from npu.firmware.runtime import Device, GoldenDriver, batch_inputs, execute
from npu.generators.config import NPUConfig
from npu.sim.runner import build_dir_for, run_cocotb

pytestmark = pytest.mark.rtl

CONFIG = NPUConfig(name="board", rows=4, cols=4, bus_width=64, act_depth=128, wgt_depth=64, acc_depth=128,
                   param_depth=8)
#: 10 MHz, 4 clock cycles per bit: fast to simulate, and the smallest divisor the UART takes.
#: The RAM in four banks, as the large ECP5 boards have it (answers four cycles after a request).
BOARD = {"ram_bytes": 16 * 1024, "clk_hz": 10_000_000, "baud": 2_500_000, "byte_timeout": 256,
         "ram_bank_bytes": 4096}


def simulate(testcase, *, env=None, result=False):
    return run_cocotb(CONFIG, "npu.sim.tb_board", top="soc", soc=BOARD, testcase=testcase,
                      build_dir=build_dir_for(CONFIG, tag=f"board-{testcase}"), quiet=True, result=result,
                      extra_env={"NPU_BOARD": json.dumps(BOARD), **(env or {})})


def test_model_over_uart_equals_golden(tmp_path):
    path = om.quantised("mlp", tmp_path / "mlp.onnx", "QDQ", "int8")[0]
    graph = load_model(path)
    x = om.sample_inputs(om.mlp()[0], 2, seed=3)
    feeds, _, _ = batch_inputs(graph, {graph.inputs[0][0]: x})
    compiled = Device(CONFIG).compile(graph, feeds)
    assert compiled.memory_size <= BOARD["ram_bytes"]
    golden_out, golden_stats = asyncio.run(execute(compiled, feeds, GoldenDriver(compiled)))
    run_cycles = max(20 * layer.instructions + 50 * layer.macs + 100_000 for layer in compiled.layers.values())

    fd, job = tempfile.mkstemp(suffix=".job", dir=tmp_path)
    os.close(fd)
    with open(job, "wb") as f:
        pickle.dump({"compiled": compiled, "feeds": feeds, "run_cycles": run_cycles}, f)
    simulate("run_model", env={"NPU_JOB": job, "NPU_JOB_OUT": job + ".out"})
    with open(job + ".out", "rb") as f:
        board = pickle.load(f)

    for name, want in golden_out.items():
        assert np.array_equal(board["outputs"][name], want), f"output {name} differs from the golden backend"
    npu_layers = [s for s in board["stats"] if s.where == "npu"]
    assert len(npu_layers) == 2 and all(s.cycles > 0 for s in npu_layers)
    for b, g in zip(board["stats"], golden_stats):
        assert (b.name, b.where) == (g.name, g.where)
        if b.where == "npu":
            for counter in ("macs", "instructions", "bytes_written", "bytes_read"):
                assert b.counters[counter] == g.counters[counter], (b.name, counter)
    # The host read RAM while the NPU used it: every read saw the right word.
    assert board["checks"] > 0 and board["mismatches"] == 0
    assert board["retried"] == 0 and board["framing_errors"] == 0
    assert board["ram_size"] == BOARD["ram_bytes"]


def test_bad_frames_are_answered_and_the_link_recovers():
    result = simulate("bad_frames", result=True)
    assert result["answered"] == {
        "bad CRC": "BAD_CRC", "truncated": "TIMEOUT", "unknown command": "UNKNOWN_COMMAND",
        "misaligned": "BAD_ADDRESS", "garbage": "BAD_SYNC", "too long": "TOO_LONG", "framing": "FRAMING",
        "out of range": "BUS_ERROR", "bus error": "BUS_ERROR"}
    assert result["retried"] == 1
