"""NumPy golden model: the datapath's documented semantics in executable form.

Written from ``docs/architecture.md`` (never fitted to RTL output). Everything is exact
integer arithmetic; the RTL must agree bit for bit.

* :func:`requantize`: bias add, fixed-point multiply, rounding shift, zero point, clamp.
* :func:`reference_gemm`: the mathematical result of a quantised GEMM, untiled.
* :class:`DatapathModel`: executes the datapath's buffer writes and tile commands
  (:mod:`npu.firmware.program`), including tiling and K accumulation.
"""

import numpy as np

from ..firmware.program import ActWrite, Barrier, Compute, Output, ParamWrite, WgtWrite
from ..generators.config import REQUANT_MULT_WIDTH, REQUANT_SHIFT_WIDTH

__all__ = ["wrap", "requantize", "reference_gemm", "DatapathModel", "ModelError"]


class ModelError(ValueError):
    """A program asks for something the datapath does not define (e.g. an address out of range)."""


def wrap(x, bits):
    """Two's-complement wrap of integers ``x`` to ``bits`` bits (Python ints or int arrays)."""
    x = np.asarray(x, dtype=object)
    mod = 1 << bits
    half = 1 << (bits - 1)
    return (((x + half) % mod) - half)


def _as_int_array(x):
    return np.asarray(x, dtype=object)


def requantize(acc, bias, mult, shift, zero_point, clamp_lo, clamp_hi, *, acc_width):
    """Requantise accumulators to output integers (element-wise, broadcasting).

    1. ``x = wrap(acc + bias, acc_width)``: the bias add wraps like the accumulator.
    2. ``p = x * mult``: exact; ``0 <= mult < 2**31``.
    3. ``q = p / 2**shift`` rounded to the nearest integer, ties to even
       (the rounding of ONNX ``QuantizeLinear``); ``0 <= shift < 64``.
    4. ``y = min(max(q + zero_point, clamp_lo), clamp_hi)``.

    The effective scale is ``mult / 2**shift``. Returns an int64 array.
    """
    acc, bias, mult, shift = map(_as_int_array, (acc, bias, mult, shift))
    if np.any(mult < 0) or np.any(mult >= 1 << REQUANT_MULT_WIDTH):
        raise ModelError(f"requantisation multiplier out of range 0 .. 2**{REQUANT_MULT_WIDTH}-1")
    if np.any(shift < 0) or np.any(shift >= 1 << REQUANT_SHIFT_WIDTH):
        raise ModelError(f"requantisation shift out of range 0 .. {(1 << REQUANT_SHIFT_WIDTH) - 1}")
    x = wrap(acc + bias, acc_width)
    p = x * mult
    floor = np.vectorize(lambda v, s: v >> s, otypes=[object])(p, shift)
    remainder = p - np.vectorize(lambda v, s: v << s, otypes=[object])(floor, shift)
    half = np.vectorize(lambda s: (1 << s) >> 1, otypes=[object])(shift)
    round_up = (shift > 0) & ((remainder > half) | ((remainder == half) & (floor % 2 == 1)))
    q = floor + round_up.astype(object)
    y = q + int(zero_point)
    y = np.where(y < clamp_lo, clamp_lo, y)
    y = np.where(y > clamp_hi, clamp_hi, y)
    return y.astype(np.int64)


def reference_gemm(a, w, bias, mult, shift, zero_point, clamp_lo, clamp_hi, *, acc_width):
    """The quantised GEMM ``requantize(a @ w + bias)`` computed directly, without tiling.

    ``a`` is M x K, ``w`` is K x N, ``bias``/``mult``/``shift`` have N entries. The sum is
    exact, then wrapped to ``acc_width`` (wrapping per tile, as the hardware does, gives
    the same result because wrapping commutes with addition).
    """
    acc = wrap(_as_int_array(a) @ _as_int_array(w), acc_width)
    return requantize(acc, np.broadcast_to(_as_int_array(bias), acc.shape),
                      np.broadcast_to(_as_int_array(mult), acc.shape),
                      np.broadcast_to(_as_int_array(shift), acc.shape),
                      zero_point, clamp_lo, clamp_hi, acc_width=acc_width)


class DatapathModel:
    """Functional model of the datapath: buffers plus in-order tile commands.

    Buffers start at zero, like the RTL's memories after configuration.
    """

    def __init__(self, config):
        self.config = c = config
        self.act = np.zeros((c.rows, c.act_depth), dtype=np.int64)      # bank k, entry m
        self.wgt = np.zeros((c.wgt_depth, c.cols), dtype=np.int64)
        self.acc = np.zeros((c.acc_depth, c.cols), dtype=object)
        self.bias = np.zeros((c.param_depth, c.cols), dtype=object)
        self.mult = np.zeros((c.param_depth, c.cols), dtype=object)
        self.shift = np.zeros((c.param_depth, c.cols), dtype=object)
        self.rows_issued = 0

    def _check(self, what, start, count, depth):
        if start < 0 or count < 0 or start + count > depth:
            raise ModelError(f"{what} rows {start}..{start + count - 1} outside 0..{depth - 1}")

    def _check_lanes(self, what, values, lanes, width, signed=True):
        values = list(values)
        if len(values) != lanes:
            raise ModelError(f"{what}: {len(values)} values, expected {lanes}")
        lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
        for v in values:
            if not lo <= int(v) <= hi:
                raise ModelError(f"{what}: value {v} outside {lo}..{hi}")
        return values

    def execute(self, op):
        """Apply one program operation; return the output rows it produces (a list)."""
        c = self.config
        if isinstance(op, ActWrite):
            self._check("activation write", op.addr, 1, c.act_depth)
            values = self._check_lanes("activation write", op.data, c.rows, c.data_width)
            for k in range(c.rows):
                if op.mask >> k & 1:
                    self.act[k, op.addr] = values[k]
        elif isinstance(op, WgtWrite):
            self._check("weight write", op.addr, 1, c.wgt_depth)
            values = self._check_lanes("weight write", op.data, c.cols, c.data_width)
            for n in range(c.cols):
                if op.mask >> n & 1:
                    self.wgt[op.addr, n] = values[n]
        elif isinstance(op, ParamWrite):
            self._check("parameter write", op.addr, 1, c.param_depth)
            bias = self._check_lanes("bias", op.bias, c.cols, c.acc_width)
            mult = self._check_lanes("multiplier", op.mult, c.cols, REQUANT_MULT_WIDTH, signed=False)
            shift = self._check_lanes("shift", op.shift, c.cols, REQUANT_SHIFT_WIDTH, signed=False)
            for n in range(c.cols):
                if op.mask >> n & 1:
                    self.bias[op.addr, n], self.mult[op.addr, n], self.shift[op.addr, n] = \
                        int(bias[n]), int(mult[n]), int(shift[n])
        elif isinstance(op, Compute):
            self._check("COMPUTE activation", op.act_addr, op.count, c.act_depth)
            self._check("COMPUTE weight", op.wgt_addr, c.rows, c.wgt_depth)
            self._check("COMPUTE accumulator", op.acc_addr, op.count, c.acc_depth)
            a = self.act[:, op.act_addr:op.act_addr + op.count].T.astype(object)     # count x rows
            w = self.wgt[op.wgt_addr:op.wgt_addr + c.rows].astype(object)            # rows x cols
            rows = slice(op.acc_addr, op.acc_addr + op.count)
            previous = self.acc[rows] if op.accumulate else 0
            self.acc[rows] = wrap(previous + a @ w, c.acc_width)
            self.rows_issued += op.count
        elif isinstance(op, Output):
            self._check("OUTPUT accumulator", op.acc_addr, op.count, c.acc_depth)
            self._check("OUTPUT parameter", op.param_addr, 1, c.param_depth)
            rows = self.acc[op.acc_addr:op.acc_addr + op.count]
            p = op.param_addr
            out = requantize(rows, self.bias[p], self.mult[p], self.shift[p], op.zero_point,
                             op.clamp_lo, op.clamp_hi, acc_width=c.acc_width)
            return [list(map(int, row)) for row in out]
        elif isinstance(op, Barrier):
            pass
        else:
            raise ModelError(f"unknown program operation {op!r}")
        return []

    def run(self, program):
        """Execute every operation of ``program``; return all output rows in order."""
        out = []
        for op in program:
            out.extend(self.execute(op))
        return out
