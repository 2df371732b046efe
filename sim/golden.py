"""NumPy golden model: the datapath's documented semantics in executable form.

Written from ``docs/architecture.md`` (never fitted to RTL output). Everything is exact
integer arithmetic; the RTL must agree bit for bit.

* :func:`requantize`: bias add, fixed-point multiply, rounding shift, zero point, clamp.
* :func:`reference_gemm`: the mathematical result of a quantised GEMM, untiled.
* :class:`DatapathModel`: executes the datapath's buffer writes and tile commands
  (:mod:`npu.firmware.program`), including tiling and K accumulation.
* :class:`NPUModel`: the instruction set (``docs/isa.md``): command ring, DMA window,
  LOAD/COMPUTE/STORE/FENCE/END, errors and performance counters.
"""

import numpy as np

from ..firmware.isa import Compute as IsaCompute
from ..firmware.isa import DecodeError, End, Fence, Load, Store, decode, unpack_idx
from ..firmware.program import ActWrite, Barrier, Compute, Output, ParamWrite, WgtWrite
from ..generators.config import REQUANT_MULT_WIDTH, REQUANT_SHIFT_WIDTH
from ..hdl.isa import BUFFER_KINDS, INSTRUCTION_BYTES, Buffer, ErrorCode, row_format, row_words

__all__ = ["wrap", "requantize", "reference_gemm", "DatapathModel", "ModelError", "NPUModel"]


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


# ---------------------------------------------------------------------------------------
# The instruction set: NPUModel executes command programs from a memory image.
# Written from docs/isa.md.
# ---------------------------------------------------------------------------------------

_ADDR_MASK = (1 << 32) - 1


class _Fault(Exception):
    """Stops execution with an error code; :meth:`NPUModel.run` turns it into status "error"."""

    def __init__(self, code, addr=0):
        super().__init__(code, addr)
        self.code = ErrorCode(code)
        self.addr = addr


def _sign_extend64(values, width):
    """The low ``width`` bits of uint64 ``values``, sign-extended, as int64 (exact up to 64)."""
    shift = np.uint64(64 - width)
    return (values.astype(np.uint64) << shift).view(np.int64) >> shift.astype(np.int64)


def _wrap64(values, width):
    """Two's-complement wrap of int64/uint64 ``values`` (taken modulo 2**64) to ``width`` bits."""
    return _sign_extend64(np.asarray(values).view(np.uint64), width)


def _requantize_int64(x, mult, shift, zero_point, clamp_lo, clamp_hi):
    """:func:`requantize` steps 2-4 in int64, for already wrapped ``x`` of at most 32 bits.

    ``|x * mult| <= 2**31 * (2**31 - 1) < 2**62``, so every step below is exact in int64.
    """
    p = x * mult
    shift = np.broadcast_to(shift, p.shape)
    floor = p >> shift
    remainder = p & ((np.int64(1) << shift) - 1)
    half = np.where(shift > 0, np.int64(1) << np.maximum(shift - 1, 0), 0)
    round_up = (shift > 0) & ((remainder > half) | ((remainder == half) & ((floor & 1) == 1)))
    y = floor + round_up + zero_point
    return np.minimum(np.maximum(y, clamp_lo), clamp_hi)


class _RowCodec:
    """Vectorised conversion between rows of one kind (``row_format``) and integers."""

    def __init__(self, config, kind):
        self.words = row_words(config, kind)
        self.size = self.words * config.bus_bytes       # bytes including padding
        self.groups = {}                                  # name -> (offsets, size, width, signed)
        for f in row_format(config, kind):
            offsets, size, width, signed = self.groups.get(f.name, ([], f.size, f.width, f.signed))
            assert (size, width, signed) == (f.size, f.width, f.signed)
            offsets.append(f.offset)
            self.groups[f.name] = (offsets, size, width, signed)
        self.groups = {name: (np.array(o), s, w, sg) for name, (o, s, w, sg) in self.groups.items()}
        self.data_bytes = max(int(o.max()) + s for o, s, _, _ in self.groups.values())

    def decode(self, raw):
        """``{name: int64 array (n, lanes)}`` from ``raw`` (n, size) uint8, as LOAD reads."""
        out = {}
        for name, (offsets, size, width, signed) in self.groups.items():
            b = raw[:, offsets[:, None] + np.arange(size)].astype(np.uint64)   # n, lanes, size
            v = (b << (np.arange(size, dtype=np.uint64) * np.uint64(8))).sum(axis=2, dtype=np.uint64)
            if signed:
                out[name] = _sign_extend64(v, width)
            else:
                out[name] = (v & np.uint64((1 << width) - 1)).astype(np.int64)
        return out

    def encode(self, name, values):
        """``data_bytes``-wide uint8 rows holding int64 ``values`` (n, lanes), sign-extended."""
        offsets, size, _, _ = self.groups[name]
        raw = np.zeros((values.shape[0], self.data_bytes), dtype=np.uint8)
        b = (values.astype(np.int64).view(np.uint64)[:, :, None]
             >> (np.arange(size, dtype=np.uint64) * np.uint64(8))) & np.uint64(0xFF)
        raw[:, offsets[:, None] + np.arange(size)] = b.astype(np.uint8)
        return raw


class NPUModel:
    """The NPU's instruction set in executable form (``docs/isa.md``).

    Executes command programs from a ring in ``memory`` (a
    :class:`~npu.sim.memory.MemoryImage`), moving data between memory and the buffers
    exactly as the specification says, in program order.

    Host-visible registers (plain attributes, set them before :meth:`run`):
    ``ring_base``, ``ring_size``, ``head``, ``tail``, ``window_base``, ``window_limit``.

    Buffers (zero after construction, like the RTL's memories), int64 arrays:

    * ``act``: ``act_depth x rows``; ``wgt``: ``wgt_depth x cols``; ``acc``: ``acc_depth x cols``
    * ``bias``, ``mult``, ``shift``: ``param_depth x cols``;
      ``zero_point``, ``clamp_lo``, ``clamp_hi``: ``param_depth``

    After :meth:`run` returns ``"error"``: ``error_code`` (:class:`ErrorCode`),
    ``error_addr`` (byte address for MISALIGNED and WINDOW, else 0) and ``error_cmd``
    (the ring slot). ``counters`` accumulate over runs like the hardware's performance
    counters (:meth:`clear_counters` is ``CTRL.PERF_CLEAR``):

    * ``instructions``: instructions dispatched (END included, a faulting one not);
    * ``macs``: ``rows * cols`` per activation row a COMPUTE streams;
    * ``bytes_read``: 16 per dispatched instruction, plus every bus word a LOAD read
      (padding included, also the words of a row cut short by a WINDOW error);
    * ``bytes_written``: the data bytes STORE wrote (byte selects; never padding).

    Only the documented semantics are modelled: no timing, no prefetch, no BUS_ERROR
    (the memory image never answers ERR).

    A memory access inside the DMA window to an address the memory image does not hold
    is a bug in the test, not in the program: it raises :class:`ModelError`.
    """

    def __init__(self, config, memory):
        self.config = c = config
        self.memory = memory
        self.ring_base = 0
        self.ring_size = 0
        self.head = 0
        self.tail = 0
        self.window_base = 0
        self.window_limit = 0
        self.act = np.zeros((c.act_depth, c.act_lanes), dtype=np.int64)
        self.wgt = np.zeros((c.wgt_depth, c.cols), dtype=np.int64)
        self.idx = np.zeros((c.idx_depth, c.rows, c.cols), dtype=np.int64)
        self.acc = np.zeros((c.acc_depth, c.cols), dtype=np.int64)
        self.bias = np.zeros((c.param_depth, c.cols), dtype=np.int64)
        self.mult = np.zeros((c.param_depth, c.cols), dtype=np.int64)
        self.shift = np.zeros((c.param_depth, c.cols), dtype=np.int64)
        self.zero_point = np.zeros(c.param_depth, dtype=np.int64)
        self.clamp_lo = np.zeros(c.param_depth, dtype=np.int64)
        self.clamp_hi = np.zeros(c.param_depth, dtype=np.int64)
        self.error_code = ErrorCode.NONE
        self.error_addr = 0
        self.error_cmd = 0
        self.counters = {}
        self.clear_counters()
        self._codecs = {kind: _RowCodec(c, kind) for kind in ("act", "wgt", "param", "out")}
        self._depths = {Buffer.ACT: c.act_depth, Buffer.WGT: c.wgt_depth, Buffer.PARAM: c.param_depth,
                        Buffer.IDX: c.idx_depth}

    def clear_counters(self):
        """Zero every performance counter (``CTRL.PERF_CLEAR``)."""
        self.counters = {"macs": 0, "bytes_read": 0, "bytes_written": 0, "instructions": 0}

    def counter(self, name):
        """Counter ``name`` as its ``PERF_*`` registers read: it wraps at ``perf_counter_bits``,
        and reads 0 when the configuration does not build it (``perf_counters``)."""
        if not self.config.builds_counter(name):
            return 0
        return self.counters[name] % (1 << self.config.perf_counter_bits)

    def soft_reset(self):
        """``CTRL.SOFT_RESET``: registers (ring, window, error, counters) to their reset values.

        Buffer contents are kept (the specification does not define them after a soft reset).
        """
        self.ring_base = self.ring_size = self.head = self.tail = 0
        self.window_base = self.window_limit = 0
        self.error_code, self.error_addr, self.error_cmd = ErrorCode.NONE, 0, 0
        self.clear_counters()

    # -- running -------------------------------------------------------------------------

    def run(self, max_instructions=1_000_000):
        """Execute from ``head`` as ``CTRL.START`` does.

        Returns ``"done"`` (an END executed; ``head`` is the slot after it), ``"waiting"``
        (``head`` caught up with ``tail``) or ``"error"`` (``head`` is the faulting slot).
        While an error is pending (until :meth:`soft_reset`) START is ignored and this
        returns ``"error"`` at once. Raises :class:`ModelError` if more than
        ``max_instructions`` would be dispatched.
        """
        if self.error_code != ErrorCode.NONE:
            return "error"
        if (self.ring_size == 0 or self.ring_size > 1 << self.config.ring_bits or self.ring_base % INSTRUCTION_BYTES
                or not 0 <= self.head < self.ring_size or not 0 <= self.tail < self.ring_size):
            return self._fail(ErrorCode.BAD_RING, 0)
        executed = 0
        while self.head != self.tail:
            if executed >= max_instructions:
                raise ModelError(f"more than {max_instructions} instructions without END")
            try:
                insn = self._fetch(self.head)
                self._check(insn)
                self._execute(insn)
            except _Fault as e:
                return self._fail(e.code, e.addr)
            executed += 1
            self.counters["instructions"] += 1
            self.counters["bytes_read"] += INSTRUCTION_BYTES
            self.head = (self.head + 1) % self.ring_size
            if isinstance(insn, End):
                return "done"
        return "waiting"

    def _fail(self, code, addr):
        self.error_code, self.error_addr, self.error_cmd = ErrorCode(code), addr, self.head
        return "error"

    # -- memory access ---------------------------------------------------------------------

    def _accesses(self, base, stride, rows, words):
        """Byte addresses of the bus words of ``rows`` rows, ``rows x words``, in access order."""
        bb = self.config.bus_bytes
        starts = (base + np.arange(rows, dtype=np.int64) * stride) & _ADDR_MASK
        return (starts[:, None] + np.arange(words, dtype=np.int64) * bb) & _ADDR_MASK

    def _allowed(self, addrs):
        """How many of ``addrs`` (access order) are made before the first refused one, and
        the WINDOW error for that one (None if every access is inside the window)."""
        flat = addrs.ravel()
        inside = (flat >= self.window_base) & (flat + self.config.bus_bytes <= self.window_limit)
        if inside.all():
            n, error = flat.size, None
        else:
            n = int(np.argmin(inside))
            error = _Fault(ErrorCode.WINDOW, int(flat[n]))
        made = flat[:n]
        m = self.memory
        if made.size and ((made < m.base).any() or (made + self.config.bus_bytes > m.base + m.size).any()):
            bad = int(made[(made < m.base) | (made + self.config.bus_bytes > m.base + m.size)][0])
            raise ModelError(f"access at {bad:#x} is inside the DMA window but outside the memory image "
                             f"{m.base:#x}..{m.base + m.size - 1:#x}")
        return n, error

    def _bytes(self):
        return np.frombuffer(self.memory.data, dtype=np.uint8)

    def _fetch(self, slot):
        addr = (self.ring_base + INSTRUCTION_BYTES * slot) & _ADDR_MASK
        addrs = self._accesses(addr, 0, 1, INSTRUCTION_BYTES // self.config.bus_bytes)
        _, error = self._allowed(addrs)
        if error is not None:
            raise error
        word = int.from_bytes(self.memory.read(addr, INSTRUCTION_BYTES), "little")
        try:
            return decode(word)
        except DecodeError:
            raise _Fault(ErrorCode.ILLEGAL_INSTRUCTION) from None

    # -- checks at dispatch ------------------------------------------------------------------

    def _check(self, insn):
        c = self.config
        if not c.sparse and ((isinstance(insn, Load) and insn.buffer == Buffer.IDX) or (
                isinstance(insn, IsaCompute) and (insn.sparse or insn.part or insn.idx_addr))):
            raise _Fault(ErrorCode.ILLEGAL_INSTRUCTION)
        if isinstance(insn, Load):
            bad = insn.rows == 0 or insn.buf_addr + insn.rows > self._depths[Buffer(insn.buffer)]
        elif isinstance(insn, IsaCompute):
            bad = (insn.count == 0 or insn.act_addr + insn.count > c.act_depth
                   or insn.wgt_addr + c.rows > c.wgt_depth or insn.acc_addr + insn.count > c.acc_depth
                   or (insn.sparse and (insn.part != 0 or insn.idx_addr >= c.idx_depth))
                   or (not insn.sparse and (insn.part >= c.dense_parts or insn.idx_addr != 0)))
        elif isinstance(insn, Store):
            bad = (insn.count == 0 or insn.acc_addr + insn.count > c.acc_depth
                   or insn.param_addr >= c.param_depth)
        else:
            bad = False
        if bad:
            raise _Fault(ErrorCode.BAD_OPERAND)
        if isinstance(insn, (Load, Store)) and (insn.mem_addr % c.bus_bytes or insn.stride % c.bus_bytes):
            raise _Fault(ErrorCode.MISALIGNED, insn.mem_addr)

    # -- execution ---------------------------------------------------------------------------

    def _execute(self, insn):
        if isinstance(insn, Load):
            self._load(insn)
        elif isinstance(insn, IsaCompute):
            self._compute(insn)
        elif isinstance(insn, Store):
            self._store(insn)
        else:
            assert isinstance(insn, (Fence, End))     # sequential model: nothing to wait for

    def _load(self, insn):
        c = self.config
        kind = BUFFER_KINDS[Buffer(insn.buffer)]
        words = row_words(c, kind)
        addrs = self._accesses(insn.mem_addr, insn.stride, insn.rows, words)
        made, error = self._allowed(addrs)
        self.counters["bytes_read"] += made * c.bus_bytes
        rows = made // words                        # an entry is written once its row is read
        if rows:
            offsets = addrs[:rows, 0] - self.memory.base
            entries = slice(insn.buf_addr, insn.buf_addr + rows)
            if kind == "idx":
                raw = self._bytes()[offsets[:, None] + np.arange(words * c.bus_bytes)]
                self.idx[entries] = unpack_idx(c, raw.tobytes(), rows)
            else:
                self._write_entries(kind, entries, offsets)
        if error is not None:
            raise error

    def _write_entries(self, kind, entries, offsets):
        """Buffer entries ``entries`` from the act/wgt/param rows at memory ``offsets``."""
        codec = self._codecs[kind]
        raw = self._bytes()[offsets[:, None] + np.arange(codec.data_bytes)]
        values = codec.decode(raw)
        if kind == "act":
            self.act[entries] = values["data"]
        elif kind == "wgt":
            self.wgt[entries] = values["data"]
        else:
            for name in ("bias", "mult", "shift"):
                getattr(self, name)[entries] = values[name]
            for name in ("zero_point", "clamp_lo", "clamp_hi"):
                getattr(self, name)[entries] = values[name][:, 0]

    def _compute(self, insn):
        c = self.config
        act = self.act[insn.act_addr:insn.act_addr + insn.count]          # count x act_lanes
        w = self.wgt[insn.wgt_addr:insn.wgt_addr + c.rows]                # R x C
        # Exact in int64: |products| <= 2**30 and R <= 64 of them. The sum with the old
        # accumulator is taken modulo 2**64, which the wrap to acc_width <= 64 bits absorbs.
        if insn.sparse:
            # PE (r, n) meets activation element (r // N)*M + idx[r][n] of each row.
            n_, m_ = c.sparse_nm
            lane = (np.arange(c.rows) // n_ * m_)[:, None] + self.idx[insn.idx_addr]      # R x C
            total = np.einsum("mrc,rc->mc", act[:, lane], w).view(np.uint64)
        else:
            a = act[:, insn.part * c.rows:(insn.part + 1) * c.rows]         # count x R
            total = (a @ w).view(np.uint64)
        rows = slice(insn.acc_addr, insn.acc_addr + insn.count)
        if insn.accumulate:
            total = total + self.acc[rows].view(np.uint64)
        self.acc[rows] = _wrap64(total, c.acc_width)
        self.counters["macs"] += insn.count * c.rows * c.cols

    def _requantize(self, acc, p):
        c = self.config
        if c.acc_width <= 32:
            x = _wrap64(acc.view(np.uint64) + self.bias[p].view(np.uint64), c.acc_width)
            return _requantize_int64(x, self.mult[p], self.shift[p], self.zero_point[p],
                                     self.clamp_lo[p], self.clamp_hi[p])
        shape = acc.shape
        return requantize(acc.astype(object), np.broadcast_to(self.bias[p].astype(object), shape),
                          np.broadcast_to(self.mult[p].astype(object), shape),
                          np.broadcast_to(self.shift[p].astype(object), shape),
                          int(self.zero_point[p]), int(self.clamp_lo[p]), int(self.clamp_hi[p]),
                          acc_width=c.acc_width)

    def _store(self, insn):
        c = self.config
        codec = self._codecs["out"]
        bb = c.bus_bytes
        addrs = self._accesses(insn.mem_addr, insn.stride, insn.count, codec.words)
        made, error = self._allowed(addrs)
        rows, words = divmod(made, codec.words)
        partial = words * bb        # the row cut by the error: its words before the refused one
        n = rows + (partial > 0)
        if n:
            acc = self.acc[insn.acc_addr:insn.acc_addr + n]
            raw = codec.encode("data", self._requantize(acc, insn.param_addr))
            memory = self._bytes()
            starts = addrs[:n, 0] - self.memory.base
            span = codec.size
            distinct = n == 1 or np.diff(np.sort(starts)).min() >= span
            if distinct and not partial:
                memory[starts[:, None] + np.arange(codec.data_bytes)] = raw
            else:                                   # overlapping rows: the later row wins
                for i in range(n):
                    length = partial if i == rows else codec.data_bytes
                    memory[starts[i]:starts[i] + length] = raw[i, :length]
            self.counters["bytes_written"] += rows * codec.data_bytes + partial
        if error is not None:
            raise error
