"""cocotb tests of the generated datapath against the golden model.

Run through pytest (``tests/test_rtl_datapath.py``), which generates each configuration
and passes it in ``NPU_CONFIG``. Each test builds a program, predicts its output with
:class:`npu.sim.golden.DatapathModel`, runs it on the RTL and ends by asserting zero
mismatching rows.
"""

import os
import random

import cocotb
import numpy as np

from ..firmware.program import ActWrite, Barrier, Compute, Output, ParamWrite, WgtWrite, plan_gemm
from ..firmware.quant import quantize_multiplier
from .golden import DatapathModel, reference_gemm
from .testbench import DatapathTB, config_from_env


def _seed():
    return int(os.environ.get("NPU_SEED", "1"))


def random_requant(rng, config, k, n_cols):
    """Per-column bias/mult/shift that spread the outputs over the int8 range."""
    qmax = (1 << (config.data_width - 1)) - 1
    typical = max(1.0, (qmax + 1) ** 2 * np.sqrt(k) / 2)
    bias = rng.integers(-int(typical), int(typical) + 1, n_cols)
    scales = rng.uniform(0.5, 2.0, n_cols) * qmax / typical
    mult, shift = zip(*(quantize_multiplier(float(s)) for s in scales))
    return bias, np.array(mult, dtype=object), np.array(shift, dtype=object)


def compare(expected, actual, what):
    """Assert that two lists of rows are identical; report the first differences."""
    mismatches = [i for i, (e, a) in enumerate(zip(expected, actual)) if list(e) != list(a)]
    assert len(expected) == len(actual), f"{what}: expected {len(expected)} rows, RTL gave {len(actual)}"
    detail = "; ".join(f"row {i}: expected {expected[i]}, got {actual[i]}" for i in mismatches[:3])
    assert not mismatches, f"{what}: {len(mismatches)} of {len(expected)} rows differ: {detail}"


async def start(dut):
    config = config_from_env()
    tb = DatapathTB(dut, config, seed=_seed())
    await tb.reset()
    return tb, config


@cocotb.test()
async def random_gemms(dut):
    """Random GEMMs with ragged M, K, N (K accumulation, N tiling), under back-pressure."""
    tb, c = await start(dut)
    rng = np.random.default_rng(_seed())
    shapes = [(1, 1, 1), (c.rows * 2 + 1, c.rows * 3 + 1, c.cols + 1),
              (7, c.rows + 1, 2 * c.cols - 1 if c.cols > 1 else 2), (13, 5, 3),
              tuple(int(v) for v in rng.integers(1, (40, 4 * c.rows + 4, 3 * c.cols + 3)))]
    for (M, K, N), ready in zip(shapes, (1.0, 0.5, 0.25, 0.8, 0.6)):
        qmin, qmax = -(1 << (c.data_width - 1)), (1 << (c.data_width - 1)) - 1
        a = rng.integers(qmin, qmax + 1, (M, K))
        w = rng.integers(qmin, qmax + 1, (K, N))
        bias, mult, shift = random_requant(rng, c, K, N)
        zp = int(rng.integers(-10, 11))
        plan = plan_gemm(c, a, w, bias, mult, shift, zp, qmin, qmax, max_tile_rows=max(1, M // 2))
        expected = DatapathModel(c).run(plan.program)
        rows, info = await tb.run(plan.program, ready_probability=ready)
        compare(expected, rows, f"GEMM {M}x{K}x{N} (ready {ready})")
        result = plan.assemble(rows)
        reference = reference_gemm(a, w, bias, mult, shift, zp, qmin, qmax, acc_width=c.acc_width)
        assert (result == reference).all(), f"GEMM {M}x{K}x{N}: tiled result differs from reference"
        distinct = len(np.unique(result))
        assert M * N < 16 or distinct > 8, f"GEMM {M}x{K}x{N}: outputs barely vary ({distinct} values)"


@cocotb.test()
async def back_to_back_tiles(dut):
    """Short COMPUTE commands back to back: weight banks swap every few rows."""
    tb, c = await start(dut)
    rng = random.Random(_seed())
    qmin, qmax = -(1 << (c.data_width - 1)), (1 << (c.data_width - 1)) - 1
    depth = min(c.act_depth, c.acc_depth, 24)
    tiles = min(c.wgt_depth // c.rows, 6)
    program = []
    for m in range(depth):
        program.append(ActWrite(m, tuple(rng.randint(qmin, qmax) for _ in range(c.rows)), (1 << c.rows) - 1))
    for r in range(tiles * c.rows):
        program.append(WgtWrite(r, tuple(rng.randint(qmin, qmax) for _ in range(c.cols)), (1 << c.cols) - 1))
    program.append(ParamWrite(0, (0,) * c.cols, (1 << 30,) * c.cols, (30 + c.rows.bit_length() + 8,) * c.cols,
                              (1 << c.cols) - 1))
    # Pin every accumulator row down with an overwrite, then random tiles.
    program.append(Compute(act_addr=0, wgt_addr=0, acc_addr=0, count=depth, accumulate=False))
    for _ in range(24):
        count = rng.choice([1, 1, 2, 3, 5, depth // 2])
        start_row = rng.randint(0, depth - count)
        program.append(Compute(act_addr=start_row, wgt_addr=rng.randrange(tiles) * c.rows,
                               acc_addr=rng.randint(0, depth - count), count=count,
                               accumulate=rng.random() < 0.6))
    program.append(Output(acc_addr=0, count=depth, param_addr=0, zero_point=0, clamp_lo=qmin, clamp_hi=qmax))
    expected = DatapathModel(c).run(program)
    rows, info = await tb.run(program, ready_probability=0.7)
    compare(expected, rows, "back-to-back tiles")


@cocotb.test()
async def requantisation_edges(dut):
    """Rounding ties, saturation, clamps (ReLU, ReLU6-like, lo > hi) and -128 x -128."""
    tb, c = await start(dut)
    qmin, qmax = -(1 << (c.data_width - 1)), (1 << (c.data_width - 1)) - 1
    full = (1 << c.cols) - 1
    program = []
    # Row m: activation m - 8 in bank 0, weight row 0 is all ones, so acc = m - 8.
    for m in range(17):
        program.append(ActWrite(m, (m - 8,) + (0,) * (c.rows - 1), (1 << c.rows) - 1))
    program.append(WgtWrite(0, (1,) * c.cols, full))
    for r in range(1, c.rows):
        program.append(WgtWrite(r, (0,) * c.cols, full))
    # Extreme operands: every activation and weight -128 (the most negative value).
    for m in range(17, 20):
        program.append(ActWrite(m, (qmin,) * c.rows, (1 << c.rows) - 1))
    for r in range(c.rows):
        program.append(WgtWrite(c.rows + r, (qmin,) * c.cols, full))
    lanes = lambda *v: tuple((list(v) * c.cols)[:c.cols])  # noqa: E731
    bias_max = (1 << (c.acc_width - 1)) - 1
    params = [
        (lanes(0, 1, -1, 3), lanes(1, 1, 1, 1), lanes(1, 2, 1, 3)),                    # ties at /2, /4, /8
        (lanes(0, 0, 0, 0), lanes((1 << 31) - 1, 1 << 30, 3, 0), lanes(0, 0, 1, 0)),   # saturate, zero mult
        (lanes(5, -5, 0, 7), lanes(1 << 30, 1 << 30, 1 << 30, 1 << 30), lanes(31, 32, 33, 63)),
        # Extreme biases: acc + bias wraps at acc_width; the scale shows the top bits.
        (lanes(bias_max, -bias_max - 1, bias_max, 1), lanes(1 << 30, 1 << 30, 1 << 30, 1 << 30),
         lanes(*(30 + c.acc_width - c.data_width,) * 4)),
    ]
    assert c.param_depth >= len(params), f"test needs param_depth >= {len(params)}"
    for p, (bias, mult, shift) in enumerate(params):
        program.append(ParamWrite(p, bias, mult, shift, full))
    program += [Compute(act_addr=0, wgt_addr=0, acc_addr=0, count=17, accumulate=False),
                Compute(act_addr=17, wgt_addr=c.rows, acc_addr=17, count=3, accumulate=False)]
    clamps = [(qmin, qmax, 0), (0, qmax, 0), (0, 6, 0), (5, -5, 0), (qmin, qmax, 7), (-3, qmax, -3)]
    for p in range(len(params)):
        for lo, hi, zp in clamps:
            program.append(Output(acc_addr=0, count=20, param_addr=p, zero_point=zp,
                                  clamp_lo=lo, clamp_hi=hi))
    model = DatapathModel(c)
    expected = model.run(program)
    rows, _ = await tb.run(program, ready_probability=0.6)
    compare(expected, rows, "requantisation edges")
    # The extreme rows must have reached the accumulator exactly: R * (-128)^2 per column.
    assert all(int(v) == c.rows * qmin * qmin for v in model.acc[17]), "extreme products not exact"


@cocotb.test()
async def random_programs(dut):
    """Random mixes of buffer writes, COMPUTE, OUTPUT and barriers."""
    tb, c = await start(dut)
    rng = random.Random(_seed() + 7)
    qmin, qmax = -(1 << (c.data_width - 1)), (1 << (c.data_width - 1)) - 1
    depth = min(c.act_depth, c.acc_depth, 16)
    program = [Compute(act_addr=0, wgt_addr=0, acc_addr=0, count=depth, accumulate=False)]
    for _ in range(300):
        kind = rng.choices(["act", "wgt", "param", "compute", "output", "barrier"], [6, 4, 1, 4, 2, 1])[0]
        if kind == "act":
            program.append(ActWrite(rng.randrange(depth), tuple(rng.randint(qmin, qmax) for _ in range(c.rows)),
                                    rng.randrange(1 << c.rows)))
        elif kind == "wgt":
            program.append(WgtWrite(rng.randrange(min(c.wgt_depth, 3 * c.rows)),
                                    tuple(rng.randint(qmin, qmax) for _ in range(c.cols)), rng.randrange(1 << c.cols)))
        elif kind == "param":
            program.append(ParamWrite(rng.randrange(c.param_depth),
                                      tuple(rng.randint(-5000, 5000) for _ in range(c.cols)),
                                      tuple(rng.randint(1 << 29, (1 << 31) - 1) for _ in range(c.cols)),
                                      tuple(rng.randint(34, 40) for _ in range(c.cols)), rng.randrange(1 << c.cols)))
        elif kind == "compute":
            count = rng.randint(0, depth)
            program.append(Compute(act_addr=rng.randint(0, depth - count),
                                   wgt_addr=rng.randint(0, min(c.wgt_depth, 3 * c.rows) - c.rows),
                                   acc_addr=rng.randint(0, depth - count), count=count,
                                   accumulate=rng.random() < 0.5))
        elif kind == "output":
            count = rng.randint(0, depth)
            lo = rng.randint(qmin, 0)
            program.append(Output(acc_addr=rng.randint(0, depth - count), count=count,
                                  param_addr=rng.randrange(c.param_depth), zero_point=rng.randint(-8, 8),
                                  clamp_lo=lo, clamp_hi=rng.randint(lo, qmax)))
        else:
            program.append(Barrier())
        # Buffer writes must not race commands still reading the buffers.
        if kind in ("act", "wgt", "param") and not isinstance(program[-2], (ActWrite, WgtWrite, ParamWrite)):
            program.insert(len(program) - 1, Barrier())
    model = DatapathModel(c)
    expected = model.run(program)
    rows, info = await tb.run(program, ready_probability=0.5)
    compare(expected, rows, "random program")
    assert info["rows_issued"] == model.rows_issued, \
        f"perf_rows_issued {info['rows_issued']} != {model.rows_issued} rows the program issues"
