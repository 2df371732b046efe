"""The golden model against hand-computed values and independent arithmetic."""

import numpy as np
import pytest

from npu.firmware.program import ActWrite, Compute, Output, ParamWrite, WgtWrite, plan_gemm
from npu.firmware.quant import quantize_multiplier
from npu.generators.config import NPUConfig
from npu.sim.golden import DatapathModel, ModelError, reference_gemm, requantize, wrap


def rq(acc, bias=0, mult=1, shift=0, zp=0, lo=-128, hi=127, acc_width=32):
    return int(requantize(np.array([acc]), [bias], [mult], [shift], zp, lo, hi, acc_width=acc_width)[0])


@pytest.mark.parametrize("acc, shift, expected", [
    (1, 1, 0), (3, 1, 2), (5, 1, 2), (7, 1, 4),          # x.5 rounds to the even neighbour
    (-1, 1, 0), (-3, 1, -2), (-5, 1, -2), (-7, 1, -4),
    (6, 2, 2), (10, 2, 2), (-6, 2, -2), (-10, 2, -2),    # quarter ties (x.5 after /4)
    (5, 2, 1), (7, 2, 2), (-5, 2, -1), (-7, 2, -2),      # not ties: nearest
    (9, 0, 9), (-9, 0, -9),                              # shift 0: exact
])
def test_rounding_is_half_to_even(acc, shift, expected):
    assert rq(acc, shift=shift) == expected


def test_scale_bias_zero_point_clamp():
    # 1000 * 0.75 = 750 -> saturates at 127; with zero point and clamps.
    mult, shift = quantize_multiplier(0.75)
    assert rq(100, mult=mult, shift=shift) == 75
    assert rq(100, bias=-100, mult=mult, shift=shift) == 0
    assert rq(1000, mult=mult, shift=shift) == 127
    assert rq(-1000, mult=mult, shift=shift) == -128
    assert rq(100, mult=mult, shift=shift, zp=10) == 85
    assert rq(-50, mult=mult, shift=shift, zp=3, lo=3) == 3            # ReLU with zero point 3
    assert rq(100, mult=mult, shift=shift, lo=0, hi=6) == 6              # ReLU6-style upper clamp
    assert rq(0, lo=5, hi=-5) == -5                                      # upper bound wins


def test_bias_add_wraps_at_acc_width():
    assert rq((1 << 31) - 1, bias=1, mult=1, shift=31) == -1             # wraps to -2**31, /2**31 = -1
    assert int(wrap(1 << 23, 24)) == -(1 << 23)


def test_extreme_products_are_exact():
    a = np.full((3, 64), -128)
    w = np.full((64, 2), -128)
    acc = reference_gemm(a, w, 0, 1, 0, 0, -2**31, 2**31 - 1, acc_width=32)
    assert (acc == 64 * 16384).all()


def test_quantize_multiplier_accuracy():
    for scale in [1.0, 0.5, 0.3, 1e-3, 7.7e-6, 123.4]:
        mult, shift = quantize_multiplier(scale)
        assert (1 << 30) <= mult < (1 << 31)
        assert abs(mult / 2**shift - scale) <= scale * 2**-30
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(2.0**-70) == (0, 0)
    assert quantize_multiplier(3 * 2.0**-62) == (6, 63)
    assert quantize_multiplier(2.0**31 - 1) == ((1 << 31) - 1, 0)
    with pytest.raises(ValueError, match="too large"):
        quantize_multiplier(2.0**31)
    with pytest.raises(ValueError, match="invalid"):
        quantize_multiplier(float("nan"))


def test_requantisation_matches_float_rounding():
    # mult/2**shift == scale exactly here, so the result equals numpy's round-half-even.
    rng = np.random.default_rng(0)
    acc = rng.integers(-2**20, 2**20, 2000)
    mult, shift = 3 << 28, 40                                           # scale 0.75 * 2**-10
    expected = np.clip(np.round(acc * (mult / 2**shift)), -128, 127)
    assert (requantize(acc, 0, mult, shift, 0, -128, 127, acc_width=32) == expected).all()


@pytest.mark.parametrize("rows, cols", [(1, 1), (2, 3), (3, 5), (8, 8), (5, 2)])
def test_tiled_program_equals_reference(rows, cols):
    config = NPUConfig(rows=rows, cols=cols, act_depth=40, acc_depth=24, wgt_depth=4 * rows)
    rng = np.random.default_rng(rows * 10 + cols)
    for M, K, N in [(37, 50, 19), (1, 1, 1), (24, 2 * rows + 1, cols)]:
        a = rng.integers(-128, 128, (M, K))
        w = rng.integers(-128, 128, (K, N))
        bias = rng.integers(-5000, 5000, N)
        mult, shift = zip(*(quantize_multiplier(s) for s in rng.uniform(1e-4, 1e-2, N)))
        plan = plan_gemm(config, a, w, bias, mult, shift, 4, -100, 100)
        result = plan.assemble(DatapathModel(config).run(plan.program))
        expected = reference_gemm(a, w, bias, mult, shift, 4, -100, 100, acc_width=32)
        assert (result == expected).all()
        assert len(np.unique(result)) > min(10, M * N // 2)


def test_resident_plan_and_its_limits():
    config = NPUConfig(rows=2, cols=2, act_depth=64, acc_depth=64, wgt_depth=16)
    rng = np.random.default_rng(3)
    a, w = rng.integers(-128, 128, (10, 5)), rng.integers(-128, 128, (5, 3))
    plan = plan_gemm(config, a, w, 0, 1 << 30, 36, resident=True)
    assert (plan.assemble(DatapathModel(config).run(plan.program))
            == reference_gemm(a, w, 0, 1 << 30, 36, 0, -128, 127, acc_width=32)).all()
    with pytest.raises(ValueError, match="needs wgt_depth >= 24"):
        plan_gemm(config, rng.integers(-1, 1, (4, 11)), rng.integers(-1, 1, (11, 4)), 0, 1, 0, resident=True)


def test_accumulate_and_overwrite():
    c = NPUConfig(rows=2, cols=2, act_depth=8, acc_depth=8, wgt_depth=4)
    model = DatapathModel(c)
    program = [ActWrite(0, (1, 2), 3), WgtWrite(0, (1, 10), 3), WgtWrite(1, (3, -7), 3),
               Compute(0, 0, 0, 1, False), Compute(0, 0, 0, 1, True),
               ParamWrite(0, (0, 0), (1, 1), (0, 0), 3), Output(0, 1, 0, 0, -128, 127)]
    model.run(program)
    assert list(model.acc[0]) == [2 * (1 + 6), 2 * (10 - 14)]
    model.execute(Compute(0, 0, 0, 1, False))
    assert list(model.acc[0]) == [7, -4]


def test_out_of_range_operands_are_errors():
    model = DatapathModel(NPUConfig(rows=2, cols=2, act_depth=8, acc_depth=8, wgt_depth=4))
    with pytest.raises(ModelError, match="COMPUTE activation rows 6..8 outside 0..7"):
        model.execute(Compute(6, 0, 0, 3, False))
    with pytest.raises(ModelError, match="COMPUTE weight"):
        model.execute(Compute(0, 3, 0, 1, False))
    with pytest.raises(ModelError, match="value 200 outside -128..127"):
        model.execute(ActWrite(0, (200, 0), 3))
