"""cocotb on the generated NPU (Icarus): programs from memory against the golden model.

Each (configuration, test, bus behaviour) runs from reset in its own build directory.
"""

import pytest

from npu.generators.config import NPUConfig
from npu.sim.runner import build_dir_for, run_cocotb

CONFIGS = {
    "8x8": NPUConfig(),
    # The small-FPGA profile (the iCEBreaker's control path): one serial requantisation lane
    # for five columns, broadcast activations, sequential dispatch, only the cycle counter
    # (32 bits), 13-bit ring slots, no register slices.
    "3x5-int6": NPUConfig(rows=3, cols=5, data_width=6, acc_width=20, act_depth=64, wgt_depth=24,
                          acc_depth=64, param_depth=4, ppu_lanes=1, requantiser="serial", activations="broadcast",
                          dispatch="sequential",
                          perf_counter_bits=32, perf_counters="cycles", ring_bits=13, register_slices=False),
    "4x4-bus64": NPUConfig(rows=4, cols=4, act_depth=128, wgt_depth=64, acc_depth=128, param_depth=8, ppu_lanes=2,
                           bus_width=64),
    # The shortest queues (full queues, scoreboard stalls), without register slices.
    "2x3-int12": NPUConfig(rows=2, cols=3, data_width=12, acc_width=40, act_depth=64, wgt_depth=16,
                           acc_depth=64, param_depth=4, compute_queue=2, dma_queue=2, register_slices=False),
    # The sparse front end: every run also mixes dense tiles (each part) with sparse ones.
    "8x8-2of4": NPUConfig(sparsity="2:4"),
    "8x8-1of4": NPUConfig(sparsity="1:4"),
    "4x6-2of8-bus64": NPUConfig(rows=4, cols=6, act_depth=128, wgt_depth=64, acc_depth=128, param_depth=8,
                                bus_width=64, sparsity="2:8"),
}
# (test, seed, wait states, stall probability)
RUNS = [
    ("gemm", 1, "0,0", 0.0),
    ("gemm", 2, "0,15", 0.3),
    # Long DMA bursts (up to the 64-request limit, then the fetcher's turn) under heavy
    # stalls: a stalled request must stay presented whatever the master wants next.
    ("gemm", 3, "0,3", 0.5),
    ("random_programs", 1, "0,0", 0.0),
    ("random_programs", 2, "0,15", 0.3),
    ("random_programs", 3, "0,3", 0.1),
    ("errors_and_recovery", 1, "0,2", 0.1),
    ("soft_reset_mid_program", 1, "0,4", 0.2),
    ("registers", 1, "0,0", 0.0),
]


SPARSE = [name for name, config in CONFIGS.items() if config.sparse]
# (config, test, seed, wait states, stall probability, M,K,N): sparse GEMMs with random
# N:M weights (all-zero groups, edge non-zeros, K % M != 0), and mixed programs.
SPARSE_RUNS = [(name, "gemm", 4, "0,0", 0.0, "37,50,19") for name in SPARSE] + [
    (name, "mixed_sparse_dense", 5, "0,6", 0.2, None) for name in SPARSE] + [
    ("8x8-2of4", "gemm", 6, "0,15", 0.3, "70,103,29"),
]


@pytest.mark.rtl
@pytest.mark.parametrize("name, test, seed, waits, stall, shape", SPARSE_RUNS,
                         ids=[f"{n}-{t}-{s}" for n, t, s, *_ in SPARSE_RUNS])
def test_sparse_rtl(name, test, seed, waits, stall, shape):
    config = CONFIGS[name]
    run_cocotb(config, "npu.sim.tb_npu", testcase=test,
               build_dir=build_dir_for(config, f"npu-{test}-{seed}-{waits.replace(',', '_')}"),
               extra_env={"NPU_SEED": str(seed), "NPU_WAITS": waits, "NPU_STALL": str(stall), "NPU_SPARSE": "1",
                          **({"NPU_GEMM": shape} if shape else {})})


@pytest.mark.rtl
@pytest.mark.parametrize("test, seed, waits, stall", RUNS,
                         ids=[f"{t}-{s}-w{w.replace(',', '_')}" for t, s, w, _ in RUNS])
@pytest.mark.parametrize("name", CONFIGS)
def test_npu_rtl(name, test, seed, waits, stall):
    config = CONFIGS[name]
    run_cocotb(config, "npu.sim.tb_npu", testcase=test,
               build_dir=build_dir_for(config, f"npu-{test}-{seed}-{waits.replace(',', '_')}"),
               extra_env={"NPU_SEED": str(seed), "NPU_WAITS": waits, "NPU_STALL": str(stall),
                          **({"NPU_GEMM": "128,64,64"} if seed == 3 else {})})


class _ECP5Cells:
    """Elaborate as for the ECP5: registered MULT18X18D cells, flip-flop instances for the
    copies kept apart (queue entries' live bits, array rows' valid, parameter banks)."""
    npu_registered_dsp = True


@pytest.mark.rtl
@pytest.mark.parametrize("test, seed, waits, stall", [("random_programs", 4, "0,6", 0.2), ("gemm", 5, "0,3", 0.2)])
def test_npu_rtl_on_ecp5_cells(test, seed, waits, stall):
    """The whole NPU as built for an ECP5 (two requantiser lanes for four columns, as on the
    ULX3S-85F), under Icarus with our models of MULT18X18D and TRELLIS_FF: the same results
    as the golden model, with the ECP5-only copies really in the netlist."""
    from pathlib import Path

    import npu.sim
    config = CONFIGS["4x4-bus64"]
    build = build_dir_for(config, f"npu-ecp5-{test}-{seed}")
    run_cocotb(config, "npu.sim.tb_npu", testcase=test, build_dir=build, platform=_ECP5Cells(),
               extra_env={"NPU_SEED": str(seed), "NPU_WAITS": waits, "NPU_STALL": str(stall)},
               extra_sources=[Path(npu.sim.__file__).parent / name for name in ("MULT18X18D.v", "TRELLIS_FF.v")])
    verilog = (build / "npu.v").read_text()
    assert "cq0_live0_ff0" in verilog and "dq0_live0_ff0" in verilog      # queue entries' live-bit copies
    assert "row_valid_row_copy0_ff0" in verilog                            # array rows' valid copies
    assert "param_rd_addr1_ff0" in verilog                                 # a second parameter bank
    assert verilog.count("wanting_addr_ff_ff0") == 2                       # the DMA's and fetcher's accept copies
