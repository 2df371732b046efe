"""The Wishbone bus models (npu.sim.wishbone) on a small copy engine, under Icarus.

Each (data width, test) pair builds and simulates in its own directory under
``build/sim/wishbone_model``, so pairs run in parallel.
"""

import shutil

import pytest

from npu.sim.runner import repo_root
from npu.sim.wb_selftest import convert

TESTS = ["copy_zero_wait", "copy_random_waits", "byte_select", "error_injection", "abandon_on_abort",
         "violation_detected", "csr_pipelined", "csr_classic"]
CASES = [(32, t) for t in TESTS] + [(64, "copy_zero_wait"), (64, "copy_random_waits"), (64, "byte_select"),
                                    (16, "copy_random_waits")]


def run_selftest(data_width, testcase, seed=1):
    from cocotb_tools.runner import get_results, get_runner

    if shutil.which("iverilog") is None:
        pytest.skip("Icarus Verilog (iverilog) is not installed")
    build_dir = repo_root() / "build" / "sim" / "wishbone_model" / f"dw{data_width}_{testcase}"
    build_dir.mkdir(parents=True, exist_ok=True)
    source = build_dir / "wb_selftest.v"
    source.write_text(convert(data_width=data_width))
    runner = get_runner("icarus")
    runner.build(sources=[source], hdl_toplevel="wb_selftest", build_dir=build_dir, timescale=("1ns", "1ps"),
                 always=True, build_args=["-g2005"])
    results = runner.test(test_module="npu.sim.tb_wb_selftest", hdl_toplevel="wb_selftest", testcase=testcase,
                          build_dir=build_dir, timescale=("1ns", "1ps"), log_file=build_dir / "sim.log",
                          extra_env={"WB_DATA_WIDTH": str(data_width), "WB_SEED": str(seed)})
    tests, failed = get_results(results)
    assert tests == 1 and not failed, f"cocotb test {testcase} failed (log: {build_dir / 'sim.log'})"


@pytest.mark.rtl
@pytest.mark.parametrize("data_width, testcase", CASES, ids=[f"dw{w}-{t}" for w, t in CASES])
def test_wishbone_model(data_width, testcase):
    run_selftest(data_width, testcase)
