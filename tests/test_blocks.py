"""Single blocks in Amaranth's simulator: fast, and independent of the Verilog path."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from npu.firmware.program import ActWrite, Compute, Output, ParamWrite, WgtWrite, plan_gemm
from npu.firmware.quant import quantize_multiplier
from npu.generators.config import NPUConfig
from npu.hdl.datapath import Datapath
from npu.hdl.pe import ProcessingElement
from npu.hdl.ppu import PostProcessor
from npu.hdl.systolic_array import SystolicArray
from npu.sim.amaranth_driver import run_program
from npu.sim.golden import DatapathModel, reference_gemm, requantize


def simulate(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


def test_pe_double_buffered_weights():
    pe = ProcessingElement(data_width=8, psum_width=20)
    seen = []

    async def testbench(ctx):
        for bank, w in ((0, 3), (1, -5)):
            ctx.set(pe.w_load, 1), ctx.set(pe.w_bank, bank), ctx.set(pe.w_data, w)
            await ctx.tick()
        ctx.set(pe.w_load, 0)
        steps = ((7, 0, 100, None), (7, 1, 100, (0, 11)), (-128, 0, 0, None), (2, 1, -1, None), (0, 0, 0, None))
        previous_psum = 0
        for a, sel, psum, load in steps:
            # The partial sum for an activation arrives a cycle after it (the cell above
            # also registers its product first).
            ctx.set(pe.a_in, a), ctx.set(pe.sel_in, sel), ctx.set(pe.psum_in, previous_psum)
            previous_psum = psum
            # Rewriting bank 0 while bank 1 computes must not disturb this cycle's result.
            ctx.set(pe.w_load, load is not None)
            if load:
                ctx.set(pe.w_bank, load[0]), ctx.set(pe.w_data, load[1])
            await ctx.tick()
            seen.append((ctx.get(pe.psum_out), ctx.get(pe.a_out), ctx.get(pe.sel_out)))

    simulate(pe, testbench)
    sums, passed = [s for s, _, _ in seen[1:]], [(a, sel) for _, a, sel in seen[:4]]
    assert sums == [121, 65, -1408, -11]
    assert passed == [(7, 0), (7, 1), (-128, 0), (2, 1)]


@pytest.mark.parametrize("rows, cols", [(1, 1), (2, 3), (4, 2), (3, 3)])
def test_array_latency_and_bank_switch(rows, cols):
    rng = np.random.default_rng(rows * 7 + cols)
    array = SystolicArray(rows=rows, cols=cols, data_width=8, psum_width=8 * 2 + 2)
    weights = [rng.integers(-128, 128, (rows, cols)) for _ in range(2)]
    acts = rng.integers(-128, 128, (12, rows))
    sels = [0] * 5 + [1] * 4 + [0] * 3          # the bank changes mid-stream, row by row
    out = {}

    async def testbench(ctx):
        for bank in (0, 1):
            for k in range(rows):
                ctx.set(array.w_load, 1), ctx.set(array.w_row, k), ctx.set(array.w_bank, bank)
                for n in range(cols):
                    ctx.set(array.w_data[n], int(weights[bank][k, n]))
                await ctx.tick()
        ctx.set(array.w_load, 0)
        for cycle in range(len(acts) + array.latency + 2):
            if cycle < len(acts):
                ctx.set(array.valid, 1), ctx.set(array.sel, sels[cycle])
                for k in range(rows):
                    ctx.set(array.a_in[k], int(acts[cycle, k]))
            else:
                ctx.set(array.valid, 0)
            if ctx.get(array.valid_out):
                out[cycle] = [ctx.get(array.psum_out[n]) for n in range(cols)]
            await ctx.tick()

    simulate(array, testbench)
    assert sorted(out) == [m + array.latency for m in range(len(acts))]
    for m in range(len(acts)):
        assert out[m + array.latency] == list(acts[m] @ weights[sels[m]])


@pytest.mark.parametrize("data_width, acc_width, lanes", [(8, 32, 0), (6, 20, 0), (16, 40, 0), (8, 32, 1), (6, 20, 1)])
def test_ppu_matches_golden_requantisation(data_width, acc_width, lanes):
    # Narrow accumulators make products narrower than large shifts: negative products
    # must still round correctly (the remainder needs the sign extension).
    # lanes = 1: one requantisation lane serves the three columns in turn.
    config = NPUConfig(rows=2, cols=3, data_width=data_width, acc_width=acc_width, acc_depth=64, param_depth=4,
                       ppu_lanes=lanes)
    ppu = PostProcessor(config)
    rng = random.Random(5)
    lo, hi = -2**(acc_width - 1), 2**(acc_width - 1) - 1
    acc = [[rng.choice([rng.randint(lo, hi), rng.randint(-300, 300), lo, hi, 0])
            for _ in range(config.cols)] for _ in range(40)]
    params = [(rng.randint(lo, hi) if p == 3 else rng.randint(-1000, 1000),
               rng.choice([1, 1 << 30, rng.randint(0, 2**31 - 1)]), rng.choice([0, 1, 2, 31, 40, 63]))
              for p in range(config.param_depth * config.cols)]
    qmin, qmax = -2**(data_width - 1), 2**(data_width - 1) - 1
    commands = [(0, 40, 0, 0, qmin, qmax), (5, 20, 1, 7, qmin, qmax), (0, 40, 2, -3, -3, 6),
                (10, 30, 3, 0, 25, -25), (3, 0, 1, 0, qmin, qmax), (0, 40, 2, 1, qmin, qmax)]
    rows = []

    async def testbench(ctx):
        for p in range(config.param_depth):
            ctx.set(ppu.param_wr.valid, 1)
            ctx.set(ppu.param_wr.payload.addr, p), ctx.set(ppu.param_wr.payload.mask, 0b111)
            for n in range(config.cols):
                b, m, s = params[p * config.cols + n]
                lane = ppu.param_wr.payload.data[n]
                ctx.set(lane.bias, b), ctx.set(lane.mult, m), ctx.set(lane.shift, s)
            await ctx.tick()
        ctx.set(ppu.param_wr.valid, 0)
        pending = list(commands)
        read = None
        for _ in range(2000):
            if pending:
                addr, count, p, zp, lo, hi = pending[0]
                ctx.set(ppu.cmd.valid, 1)
                payload = ppu.cmd.payload
                ctx.set(payload.acc_addr, addr), ctx.set(payload.count, count), ctx.set(payload.param_addr, p)
                ctx.set(payload.zero_point, zp), ctx.set(payload.clamp_lo, lo), ctx.set(payload.clamp_hi, hi)
            else:
                ctx.set(ppu.cmd.valid, 0)
            ready = rng.random() < 0.6
            ctx.set(ppu.out.ready, ready)
            if read is not None:                  # the accumulator memory: one-cycle read latency
                for n in range(config.cols):
                    ctx.set(ppu.acc_rd_data[n], acc[read][n])
            if ready and ctx.get(ppu.out.valid):
                rows.append([ctx.get(ppu.out.payload[n]) for n in range(config.cols)])
            if pending and ctx.get(ppu.cmd.ready):
                pending.pop(0)
            read = ctx.get(ppu.acc_rd_addr) if ctx.get(ppu.acc_rd_en) else None
            await ctx.tick()
            if not pending and ctx.get(ppu.idle):
                break

    simulate(ppu, testbench)
    expected = []
    for addr, count, p, zp, lo, hi in commands:
        lane = params[p * config.cols:(p + 1) * config.cols]
        for m in range(addr, addr + count):
            expected.append(list(requantize(np.array(acc[m]), [b for b, _, _ in lane], [x for _, x, _ in lane],
                                            [s for _, _, s in lane], zp, lo, hi, acc_width=acc_width)))
    assert rows == expected


@pytest.mark.parametrize("rows, cols, ready", [(2, 3, 0.4), (3, 2, 1.0), (1, 4, 0.7)])
def test_datapath_gemm_in_amaranth_sim(rows, cols, ready):
    config = NPUConfig(rows=rows, cols=cols, act_depth=32, acc_depth=16, wgt_depth=8 * rows)
    rng = np.random.default_rng(rows + cols)
    a, w = rng.integers(-128, 128, (21, 2 * rows + 1)), rng.integers(-128, 128, (2 * rows + 1, cols + 2))
    bias = rng.integers(-3000, 3000, cols + 2)
    mult, shift = zip(*(quantize_multiplier(s) for s in rng.uniform(2e-4, 2e-3, cols + 2)))
    plan = plan_gemm(config, a, w, bias, mult, shift, -2, -128, 127)
    out, perf = run_program(config, plan.program, ready_probability=ready, seed=rows)
    assert out == DatapathModel(config).run(plan.program)
    assert (plan.assemble(out) == reference_gemm(a, w, bias, mult, shift, -2, -128, 127, acc_width=32)).all()
    assert perf["rows_issued"] == sum(op.count for op in plan.program if isinstance(op, Compute))


@pytest.mark.parametrize("rows, cols", [(3, 2), (1, 1), (2, 5), (4, 4)])
def test_stall_free_threshold_is_exact(rows, cols):
    """At min_stall_free_tile_rows per tile only the first tile waits; one row fewer stalls."""
    config = NPUConfig(rows=rows, cols=cols, act_depth=64, acc_depth=64, wgt_depth=8 * rows)
    datapath = Datapath(config)
    datapath._MustUse__silence = True
    latencies = datapath.latencies
    threshold = latencies["min_stall_free_tile_rows"]
    waits = {}
    for count in (threshold, threshold - 1):
        program = [ActWrite(m, tuple(range(1, rows + 1)), (1 << rows) - 1) for m in range(count)]
        program += [WgtWrite(r, tuple((r + n) % 7 - 3 for n in range(cols)), (1 << cols) - 1)
                    for r in range(8 * rows)]
        program += [Compute(0, rows * (t % 8), 0, count, t > 0) for t in range(8)]
        program += [ParamWrite(0, (0,) * cols, (1,) * cols, (0,) * cols, (1 << cols) - 1),
                    Output(0, count, 0, 0, -128, 127)]
        out, perf = run_program(config, program)
        assert out == DatapathModel(config).run(program)
        assert perf["rows_issued"] == 8 * count
        waits[count] = perf["weight_stall_cycles"]
    assert waits[threshold] == latencies["first_tile_weight_stall"] == rows + 3
    assert waits[threshold - 1] > waits[threshold]
