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
from npu.hdl.ppu import SERIAL_MULT_STEPS, PostProcessor
from npu.hdl.systolic_array import SystolicArray
from npu.sim.amaranth_driver import run_program
from npu.sim.golden import DatapathModel, reference_gemm, requantize, wrap


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


@pytest.mark.parametrize("rows, cols, pe_pipeline, broadcast, weight_chain",
                         [(1, 1, 1, False, 0), (2, 3, 1, False, 0), (4, 2, 1, False, 0), (3, 3, 1, False, 0),
                          (1, 1, 3, False, 0), (2, 3, 3, False, 0), (3, 3, 3, False, 0), (2, 3, 5, False, 0),
                          (3, 2, 5, False, 0), (4, 4, 1, True, 0), (2, 3, 3, True, 0), (3, 1, 1, True, 0),
                          (1, 1, 3, False, 1), (3, 3, 3, False, 1), (4, 2, 3, True, 1), (5, 9, 3, False, 1)])
def test_array_latency_and_bank_switch(rows, cols, pe_pipeline, broadcast, weight_chain):
    rng = np.random.default_rng(rows * 7 + cols)
    array = SystolicArray(rows=rows, cols=cols, data_width=8, psum_width=8 * 2 + 2, pe_pipeline=pe_pipeline,
                          broadcast=broadcast, weight_chain=bool(weight_chain))
    # Broadcast activations reach every column together: no column skew, no de-skew.
    assert array.latency == rows + pe_pipeline + (1 if broadcast else cols)
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


def run_ppu(config, acc, params, commands, rng, *, max_cycles, scratch_entry=None):
    """Drive a PostProcessor in the simulator; return the rows it delivers and whether it
    went idle within ``max_cycles``.

    ``params[p][n]`` is column n's (bias, mult, shift) of entry p; ``commands`` are
    (acc_addr, count, param_addr, zero_point, clamp_lo, clamp_hi). ``out`` is back-pressured
    at random. The accumulator answers a read in the next cycle only: other cycles show
    garbage. With ``scratch_entry``, that parameter entry is rewritten while commands run
    (no command may use it).
    """
    ppu = PostProcessor(config)
    lo, hi = -2**(config.acc_width - 1), 2**(config.acc_width - 1) - 1
    rows, finished = [], []

    def set_param_entry(ctx, p, entry):
        ctx.set(ppu.param_wr.payload.addr, p), ctx.set(ppu.param_wr.payload.mask, (1 << config.cols) - 1)
        for n, (b, m, s) in enumerate(entry):
            lane = ppu.param_wr.payload.data[n]
            ctx.set(lane.bias, b), ctx.set(lane.mult, m), ctx.set(lane.shift, s)

    async def testbench(ctx):
        for p, entry in enumerate(params):
            ctx.set(ppu.param_wr.valid, 1)
            set_param_entry(ctx, p, entry)
            while not ctx.get(ppu.param_wr.ready):      # the serial lanes take a group per cycle
                await ctx.tick()
            await ctx.tick()
        ctx.set(ppu.param_wr.valid, 0)
        pending = list(commands)
        read = None
        for _ in range(max_cycles):
            if pending:
                addr, count, p, zp, clamp_lo, clamp_hi = pending[0]
                ctx.set(ppu.cmd.valid, 1)
                payload = ppu.cmd.payload
                ctx.set(payload.acc_addr, addr), ctx.set(payload.count, count), ctx.set(payload.param_addr, p)
                ctx.set(payload.zero_point, zp), ctx.set(payload.clamp_lo, clamp_lo)
                ctx.set(payload.clamp_hi, clamp_hi)
            else:
                ctx.set(ppu.cmd.valid, 0)
            if scratch_entry is not None:
                ctx.set(ppu.param_wr.valid, rng.random() < 0.5)
                set_param_entry(ctx, scratch_entry, [(rng.randint(lo, hi), rng.randint(0, 2**31 - 1),
                                                      rng.randint(0, 63)) for _ in range(config.cols)])
            ready = rng.random() < 0.6
            ctx.set(ppu.out.ready, ready)
            for n in range(config.cols):          # the accumulator memory: one-cycle read latency
                ctx.set(ppu.acc_rd_data[n], acc[read][n] if read is not None else rng.randint(lo, hi))
            if ready and ctx.get(ppu.out.valid):
                rows.append([ctx.get(ppu.out.payload[n]) for n in range(config.cols)])
            if pending and ctx.get(ppu.cmd.ready):
                pending.pop(0)
            read = ctx.get(ppu.acc_rd_addr) if ctx.get(ppu.acc_rd_en) else None
            await ctx.tick()
            if not pending and ctx.get(ppu.idle):
                finished.append(True)
                break

    simulate(ppu, testbench)
    return rows, bool(finished)


def golden_rows(config, acc, params, commands, *, round_ties_up=False):
    """The rows ``commands`` should deliver, from the golden model. ``round_ties_up``
    instead rounds exact ties upwards: what a lane with the wrong tie rule would give."""
    expected = []
    for addr, count, p, zp, lo, hi in commands:
        bias, mult, shift = zip(*params[p])
        for m in range(addr, addr + count):
            x = [wrap(a + b, config.acc_width) for a, b in zip(acc[m], bias)]
            if round_ties_up:
                # floor(p / 2**s + 1/2) for s > 0; clamp as the golden model does.
                row = [(((v * k) + (1 << s >> 1)) >> s) + zp for v, k, s in zip(x, mult, shift)]
                expected.append([min(max(y, lo), hi) for y in row])
            else:
                expected.append(list(requantize(np.array(acc[m]), bias, mult, shift, zp, lo, hi,
                                                acc_width=config.acc_width)))
    return expected


def cycle_budget(config, rows):
    """Cycles for ``rows`` rows through the PPU, with room for back-pressure: the pipelined
    requantiser takes a row per cycle, the serial one 18 to 26 cycles per column group."""
    if config.requantiser == "pipelined":
        return 2000
    return 500 + rows * config.requant_passes * (SERIAL_MULT_STEPS + 16)


@pytest.mark.parametrize("requantiser", ["pipelined", "serial"])
@pytest.mark.parametrize("data_width, acc_width, lanes", [(8, 32, 0), (6, 20, 0), (16, 40, 0), (8, 32, 1), (6, 20, 1),
                                                          (16, 40, 1)])
def test_ppu_matches_golden_requantisation(data_width, acc_width, lanes, requantiser):
    # Narrow accumulators make products narrower than large shifts: negative products
    # must still round correctly (the remainder needs the sign extension).
    # lanes = 1: one requantisation lane serves the three columns in turn.
    config = NPUConfig(rows=2, cols=3, data_width=data_width, acc_width=acc_width, acc_depth=64, param_depth=4,
                       ppu_lanes=lanes, requantiser=requantiser)
    rng = random.Random(5)
    lo, hi = -2**(acc_width - 1), 2**(acc_width - 1) - 1
    acc = [[rng.choice([rng.randint(lo, hi), rng.randint(-300, 300), lo, hi, 0])
            for _ in range(config.cols)] for _ in range(40)]
    params = [[(rng.randint(lo, hi) if p == 3 else rng.randint(-1000, 1000),
                rng.choice([1, 1 << 30, rng.randint(0, 2**31 - 1)]), rng.choice([0, 1, 2, 31, 40, 63]))
               for _ in range(config.cols)] for p in range(config.param_depth)]
    qmin, qmax = -2**(data_width - 1), 2**(data_width - 1) - 1
    commands = [(0, 40, 0, 0, qmin, qmax), (5, 20, 1, 7, qmin, qmax), (0, 40, 2, -3, -3, 6),
                (10, 30, 3, 0, 25, -25), (3, 0, 1, 0, qmin, qmax), (0, 40, 2, 1, qmin, qmax)]
    total = sum(count for _, count, *_ in commands)
    rows, finished = run_ppu(config, acc, params, commands, rng, max_cycles=cycle_budget(config, total))
    assert finished
    assert rows == golden_rows(config, acc, params, commands)


@pytest.mark.parametrize("requantiser, data_width, acc_width, lanes", [
    ("pipelined", 8, 32, 0), ("serial", 8, 32, 0), ("serial", 8, 32, 1), ("serial", 16, 64, 0),
    ("serial", 5, 19, 1), ("serial", 2, 20, 0)])
def test_ppu_requantisation_edge_cases(requantiser, data_width, acc_width, lanes):
    """Shifts 0, 1, 63; multipliers 0, 1, 2**31-1; the most negative accumulator; exact
    ties with even and odd floors; clamp_lo > clamp_hi; parameter writes meanwhile."""
    config = NPUConfig(rows=2, cols=3, data_width=data_width, acc_width=acc_width, acc_depth=64, param_depth=5,
                       ppu_lanes=lanes, requantiser=requantiser)
    rng = random.Random(acc_width * 17 + data_width)
    lo, hi = -2**(acc_width - 1), 2**(acc_width - 1) - 1
    top = 2**31 - 1
    params = [
        [(0, 1 << 30, 31), (0, 1, 1), (0, 1, 0)],           # x/2: ties for odd x; shift 0 is x itself
        [(0, top, 63), (0, 0, 17), (0, top, 0)],             # x*(2**31-1) without rounding saturates
        [(-1, 3 << 28, 30), (hi, 1, 62), (1, top, 32)],
        [(0, 1 << 29, 31), (0, 5, 3), (lo, 1 << 20, 21)],    # x/4: ties for x = 2 mod 4; 5x/8: x = 4 mod 8
        [(0, 0, 0)] * 3,                                     # rewritten while commands run
    ]
    small = [0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6, 7, -7, 12, -12, 20, -20, 2**data_width + 1]
    # Beyond the saturation width with small low bits: y must saturate, not wrap.
    small += [(1 << (data_width + 6)) + 3, (1 << (acc_width - 3)) + 5]
    acc = [[v, -v, v + 4] for v in small]
    acc += [[lo, lo, lo], [hi, hi, hi], [lo + 1, hi - 1, lo], [lo, 0, hi]]
    acc += [[rng.randint(lo, hi) for _ in range(3)] for _ in range(64 - len(acc))]
    qmin, qmax = -2**(data_width - 1), 2**(data_width - 1) - 1
    zp_odd = 1 if qmax >= 1 else 0
    commands = [(0, 30, p, 0, qmin, qmax) for p in range(4)]
    commands += [(0, 24, 0, zp_odd, qmin, qmax), (0, 24, 3, -1, qmin + 1, qmax), (10, 20, 2, 0, qmax, qmin),
                 (20, 40, 1, zp_odd, qmin, qmax), (40, 24, 2, 0, qmin, qmax)]
    # The data must hit the cases named above, or the test proves nothing about them.
    used = [(acc[m][n], *params[p][n]) for a, count, p, *_ in commands for m in range(a, a + count) for n in range(3)]
    ties = set()
    for v, b, k, s in used:
        product = wrap(v + b, acc_width) * k
        if s and product % (1 << s) == 1 << (s - 1):
            ties.add((product >> s) % 2)
    assert ties == {0, 1}
    assert {0, 1, 63} <= {s for *_, s in used} and {0, 1, top} <= {k for _, _, k, _ in used}
    assert any(v == lo and b == 0 and k for v, b, k, _ in used)
    assert any(clamp_lo > clamp_hi for *_, clamp_lo, clamp_hi in commands)
    expected = golden_rows(config, acc, params, commands)
    assert expected != golden_rows(config, acc, params, commands, round_ties_up=True)

    total = sum(count for _, count, *_ in commands)
    rows, finished = run_ppu(config, acc, params, commands, rng, scratch_entry=4,
                             max_cycles=cycle_budget(config, total))
    assert finished
    assert rows == expected


@pytest.mark.parametrize("rows, cols, ready, requantiser, lanes", [
    (2, 3, 0.4, "pipelined", 0), (3, 2, 1.0, "pipelined", 0), (1, 4, 0.7, "pipelined", 0),
    (2, 3, 0.4, "serial", 1), (1, 4, 0.7, "serial", 0)])
def test_datapath_gemm_in_amaranth_sim(rows, cols, ready, requantiser, lanes):
    config = NPUConfig(rows=rows, cols=cols, act_depth=32, acc_depth=16, wgt_depth=8 * rows, ppu_lanes=lanes,
                       requantiser=requantiser)
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


@pytest.mark.parametrize("register_slices", [True, False])
@pytest.mark.parametrize("rows, cols", [(3, 2), (4, 4)])
def test_a_row_accumulated_right_after_it_is_written(rows, cols, register_slices):
    """Each tile starts on the row the tile before it ended on, and issues right behind it
    (tiles of min_stall_free_tile_rows): that row is read back a cycle after its write
    (with register slices, before the write lands: the sum being written is forwarded)."""
    config = NPUConfig(rows=rows, cols=cols, act_depth=64, acc_depth=64, wgt_depth=8 * rows,
                       register_slices=register_slices)
    datapath = Datapath(config)
    datapath._MustUse__silence = True
    latencies = datapath.latencies
    count = latencies["min_stall_free_tile_rows"]
    tiles = 4
    rng = np.random.default_rng(rows)
    program = [ActWrite(m, tuple(int(v) for v in rng.integers(-128, 128, rows)), (1 << rows) - 1)
               for m in range(count)]
    program += [WgtWrite(r, tuple(int(v) for v in rng.integers(-128, 128, cols)), (1 << cols) - 1)
                for r in range(tiles * rows)]
    program += [Compute(0, rows * t, t * (count - 1), count, t > 0) for t in range(tiles)]
    span = tiles * (count - 1) + 1
    program += [ParamWrite(0, (0,) * cols, (1 << 30,) * cols, (38,) * cols, (1 << cols) - 1),
                Output(0, span, 0, 0, -128, 127)]
    out, perf = run_program(config, program)
    assert perf["weight_stall_cycles"] == latencies["first_tile_weight_stall"]    # no gap between tiles
    assert out == DatapathModel(config).run(program)
    shared = [t * (count - 1) for t in range(1, tiles)]
    assert len({tuple(out[r]) for r in shared}) > 1     # the shared rows' sums are not all alike
