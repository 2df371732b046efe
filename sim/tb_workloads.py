"""cocotb workloads that measure the datapath: the demo GEMM and the streaming benchmark.

Run by ``npu demo`` and ``npu bench`` (through :func:`npu.sim.runner.run_cocotb`), which
read the JSON each writes. Each checks its result bit for bit against the golden model
before reporting a figure. Shapes come from ``NPU_GEMM`` (``"M,K,N"``).
"""

import os

import cocotb
import numpy as np

from ..firmware.program import ActWrite, Compute, Output, ParamWrite, WgtWrite, plan_gemm
from .golden import reference_gemm
from .tb_datapath import random_requant, start
from .testbench import write_result


def _gemm_operands(config):
    M, K, N = (int(v) for v in os.environ.get("NPU_GEMM", "64,64,32").split(","))
    rng = np.random.default_rng(int(os.environ.get("NPU_SEED", "1")))
    qmin, qmax = -(1 << (config.data_width - 1)), (1 << (config.data_width - 1)) - 1
    a = rng.integers(qmin, qmax + 1, (M, K))
    w = rng.integers(qmin, qmax + 1, (K, N))
    bias, mult, shift = random_requant(rng, config, K, N)
    return a, w, bias, mult, shift, qmin, qmax


def _split(program):
    loads = [op for op in program if isinstance(op, (ActWrite, WgtWrite, ParamWrite))]
    computes = [op for op in program if isinstance(op, Compute)]
    outputs = [op for op in program if isinstance(op, Output)]
    return loads, computes, outputs


@cocotb.test()
async def demo_gemm(dut):
    """A quantised GEMM through the buffer write ports, checked bit for bit, timed by phase."""
    tb, c = await start(dut)
    a, w, bias, mult, shift, qmin, qmax = _gemm_operands(c)
    (M, K), N = a.shape, w.shape[1]
    try:
        plan = plan_gemm(c, a, w, bias, mult, shift, 0, qmin, qmax, resident=True)
        phases = dict(zip(("load", "compute", "output"), _split(plan.program)))
    except ValueError:  # too large to be resident: tiles stream through the buffers in turn
        plan = plan_gemm(c, a, w, bias, mult, shift, 0, qmin, qmax)
        phases = {"whole": plan.program}
    rows, cycles, info = [], {}, {}
    for phase, program in phases.items():
        out, info = await tb.run(program)
        rows += out
        cycles[phase] = info["cycles"]
    result = plan.assemble(rows)
    reference = reference_gemm(a, w, bias, mult, shift, 0, qmin, qmax, acc_width=c.acc_width)
    mismatches = int((result != reference).sum())
    total = sum(cycles.values())
    write_result({
        "gemm": {"M": M, "K": K, "N": N}, "useful_macs": plan.macs, "cycles": total,
        "phase_cycles": cycles,
        "mac_utilisation": plan.macs / (c.rows * c.cols * total),
        "mac_utilisation_compute": plan.macs / (c.rows * c.cols * cycles["compute"]) if "compute" in cycles else None,
        "rows_issued": info["rows_issued"], "weight_stall_cycles": info["weight_stall_cycles"],
        "mismatches": mismatches, "elements": M * N,
    })
    assert mismatches == 0, f"{mismatches} of {M * N} results differ from the golden model"


@cocotb.test()
async def streaming_benchmark(dut):
    """Consecutive weight tiles of M rows each, buffers preloaded: the datapath's own rate."""
    tb, c = await start(dut)
    a, w, bias, mult, shift, qmin, qmax = _gemm_operands(c)
    M, K, N = a.shape[0], a.shape[1], w.shape[1]
    plan = plan_gemm(c, a, w, bias, mult, shift, 0, qmin, qmax, resident=True)
    loads, computes, outputs = _split(plan.program)
    rows, _ = await tb.run(loads)
    before = tb.perf()
    rows, info = await tb.run(computes)
    span = info["last_issue"] - info["first_issue"] + 1
    issued = info["rows_issued"] - before["rows_issued"]
    out_rows, out_info = await tb.run(outputs)
    result = plan.assemble(out_rows)
    reference = reference_gemm(a, w, bias, mult, shift, 0, qmin, qmax, acc_width=c.acc_width)
    mismatches = int((result != reference).sum())
    write_result({
        "config": c.to_dict(),
        "gemm": {"M": M, "K": K, "N": N, "weight_tiles": len(computes), "rows_per_tile": M},
        "useful_macs": plan.macs,
        "compute_cycles": info["cycles"],
        "issue_span_cycles": span,
        "rows_issued": issued,
        "stall_cycles_between_tiles": span - issued,
        "weight_stall_cycles": info["weight_stall_cycles"] - before["weight_stall_cycles"],
        "first_weight_load_cycles": info["first_issue"],
        "mac_utilisation_streaming": plan.macs / (c.rows * c.cols * span),
        "mac_utilisation_compute_phase": plan.macs / (c.rows * c.cols * info["cycles"]),
        "output_cycles": out_info["cycles"],
        "mismatches": mismatches,
    })
    program_rows = sum(op.count for op in computes)
    assert issued == program_rows, f"RTL issued {issued} rows, the program has {program_rows}"
    assert mismatches == 0, f"{mismatches} results differ from the golden model"
