"""Datapath programs: buffer writes and tile commands, and a GEMM tiler that makes them.

A program is a list of operations executed in order. The golden model
(:class:`npu.sim.golden.DatapathModel`) and the RTL testbench run the same list;
:func:`pack` turns an operation into the bits of the corresponding Verilog port, using
the layouts of :mod:`npu.hdl.layouts` (the one definition of every field).
"""

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ActWrite", "WgtWrite", "ParamWrite", "Compute", "Output", "Barrier",
           "GemmPlan", "plan_gemm", "pack"]


@dataclass(frozen=True)
class ActWrite:
    """Write activation row ``addr``: ``data[k]`` into bank k where ``mask`` bit k is set."""
    addr: int
    data: tuple
    mask: int


@dataclass(frozen=True)
class WgtWrite:
    """Write weight-buffer row ``addr``: ``data[n]`` into lane n where ``mask`` bit n is set."""
    addr: int
    data: tuple
    mask: int


@dataclass(frozen=True)
class ParamWrite:
    """Write post-processing parameter entry ``addr`` (per-column bias, mult, shift)."""
    addr: int
    bias: tuple
    mult: tuple
    shift: tuple
    mask: int


@dataclass(frozen=True)
class Compute:
    """Run one weight tile over ``count`` activation rows into the accumulators."""
    act_addr: int
    wgt_addr: int
    acc_addr: int
    count: int
    accumulate: bool


@dataclass(frozen=True)
class Output:
    """Requantise ``count`` accumulator rows with parameter entry ``param_addr``."""
    acc_addr: int
    count: int
    param_addr: int
    zero_point: int
    clamp_lo: int
    clamp_hi: int


@dataclass(frozen=True)
class Barrier:
    """Wait until the datapath is idle (every earlier command finished) before going on.

    Needed before a buffer write that overwrites data an earlier command still reads.
    """


@dataclass
class GemmPlan:
    """A tiled GEMM: the program and how its output rows map back to the result matrix."""
    program: list
    #: One (m0, m1, n0, n1) per OUTPUT command, in order: its rows are result[m0:m1, n0:n1]
    #: (the first n1-n0 lanes of each row).
    output_tiles: list = field(default_factory=list)
    shape: tuple = (0, 0)
    #: Useful multiply-accumulates of the GEMM (M*K*N).
    macs: int = 0

    def assemble(self, rows):
        """Reassemble output rows (from the model or the RTL) into the M x N result."""
        result = np.zeros(self.shape, dtype=np.int64)
        i = 0
        for m0, m1, n0, n1 in self.output_tiles:
            for m in range(m0, m1):
                result[m, n0:n1] = rows[i][:n1 - n0]
                i += 1
        if i != len(rows):
            raise ValueError(f"expected {i} output rows, got {len(rows)}")
        return result


def _act_writes(c, a, ms, k0, k1, base):
    """Activation rows ``a[ms, k0:k1]`` to entries ``base, base+1, ...``; only real K lanes written."""
    writes = []
    for i, m in enumerate(ms):
        row = [0] * c.rows
        row[:k1 - k0] = a[m, k0:k1].tolist()
        writes.append(ActWrite(base + i, tuple(row), (1 << (k1 - k0)) - 1))
    return writes


def _weight_tile(c, w, k0, k1, n0, n1, base):
    """Weight tile ``w[k0:k1, n0:n1]``, zero padded to rows x cols, at rows ``base ..``."""
    writes = []
    for k in range(c.rows):
        row = [0] * c.cols
        if k0 + k < k1:
            row[:n1 - n0] = w[k0 + k, n0:n1].tolist()
        writes.append(WgtWrite(base + k, tuple(row), (1 << c.cols) - 1))
    return writes


def _param_write(c, addr, bias, mult, shift, n0, n1):
    """Parameters of columns ``n0 .. n1-1`` into entry ``addr``; padding lanes are zero."""
    pad = (0,) * (c.cols - (n1 - n0))
    lanes = (tuple(int(v) for v in values[n0:n1]) + pad for values in (bias, mult, shift))
    return ParamWrite(addr, *lanes, (1 << c.cols) - 1)


def plan_gemm(config, a, w, bias, mult, shift, zero_point=0, clamp_lo=None, clamp_hi=None, *,
              max_tile_rows=None, resident=False):
    """Tile the quantised GEMM ``requantize(a @ w + bias)`` onto the datapath.

    N is split into tiles of ``cols`` columns and K into tiles of ``rows`` (both zero
    padded); M into tiles that fit the accumulator and activation buffers. For each
    (M, N) tile the K tiles accumulate into the same accumulator rows, then one OUTPUT
    post-processes them. Consecutive COMPUTE commands use consecutive weight tiles, so
    the array's weight double-buffering hides every load but the first.

    With ``resident=True`` every operand gets its own buffer space (all activations,
    all weight tiles, one accumulator region and parameter entry per N tile) and the
    program is all buffer writes, then all COMPUTEs, then all OUTPUTs, with no
    barriers: the datapath's own throughput, as a benchmark wants. ``ValueError`` if
    the GEMM does not fit the buffers.
    """
    c = config
    a = np.asarray(a, dtype=np.int64)
    w = np.asarray(w, dtype=np.int64)
    M, K = a.shape
    K2, N = w.shape
    if K != K2:
        raise ValueError(f"inner dimensions differ: a is {M}x{K}, w is {K2}x{N}")
    qmin, qmax = -(1 << (c.data_width - 1)), (1 << (c.data_width - 1)) - 1
    clamp_lo = qmin if clamp_lo is None else clamp_lo
    clamp_hi = qmax if clamp_hi is None else clamp_hi
    bias, mult, shift = (np.broadcast_to(np.asarray(v, dtype=object), (N,)) for v in (bias, mult, shift))

    k_tiles = -(-K // c.rows)
    n_tiles = -(-N // c.cols)
    if resident:
        return _plan_resident(c, a, w, bias, mult, shift, zero_point, clamp_lo, clamp_hi, k_tiles, n_tiles)
    tile_m = min(M, c.acc_depth, c.act_depth, max_tile_rows or M)
    # K tiles whose activations and weights are resident at once.
    k_chunk = max(1, min(k_tiles, c.wgt_depth // c.rows, c.act_depth // tile_m))

    program, tiles = [], []
    for m0 in range(0, M, tile_m):
        m1 = min(M, m0 + tile_m)
        for nt in range(n_tiles):
            n0, n1 = nt * c.cols, min(N, (nt + 1) * c.cols)
            for kc0 in range(0, k_tiles, k_chunk):
                kts = range(kc0, min(k_tiles, kc0 + k_chunk))
                if program:
                    program.append(Barrier())
                for slot, kt in enumerate(kts):
                    k0, k1 = kt * c.rows, min(K, (kt + 1) * c.rows)
                    program += _act_writes(c, a, range(m0, m1), k0, k1, slot * tile_m)
                    program += _weight_tile(c, w, k0, k1, n0, n1, slot * c.rows)
                if kc0 == 0:
                    program.append(_param_write(c, 0, bias, mult, shift, n0, n1))
                for slot, kt in enumerate(kts):
                    program.append(Compute(act_addr=slot * tile_m, wgt_addr=slot * c.rows, acc_addr=0,
                                           count=m1 - m0, accumulate=kt > 0))
            program.append(Output(acc_addr=0, count=m1 - m0, param_addr=0, zero_point=zero_point,
                                  clamp_lo=clamp_lo, clamp_hi=clamp_hi))
            tiles.append((m0, m1, n0, n1))
    return GemmPlan(program, tiles, (M, N), M * K * N)


def _plan_resident(c, a, w, bias, mult, shift, zero_point, clamp_lo, clamp_hi, k_tiles, n_tiles):
    (M, K), N = a.shape, w.shape[1]
    needs = {"act_depth": k_tiles * M, "wgt_depth": k_tiles * n_tiles * c.rows,
             "acc_depth": n_tiles * M, "param_depth": n_tiles}
    for buffer, need in needs.items():
        if need > getattr(c, buffer):
            raise ValueError(f"a resident {M}x{K}x{N} GEMM needs {buffer} >= {need}, "
                             f"the configuration has {getattr(c, buffer)}")
    program, computes, outputs, tiles = [], [], [], []
    for kt in range(k_tiles):
        program += _act_writes(c, a, range(M), kt * c.rows, min(K, (kt + 1) * c.rows), kt * M)
    for nt in range(n_tiles):
        n0, n1 = nt * c.cols, min(N, (nt + 1) * c.cols)
        program.append(_param_write(c, nt, bias, mult, shift, n0, n1))
        for kt in range(k_tiles):
            slot = (nt * k_tiles + kt) * c.rows
            program += _weight_tile(c, w, kt * c.rows, min(K, (kt + 1) * c.rows), n0, n1, slot)
            computes.append(Compute(act_addr=kt * M, wgt_addr=slot, acc_addr=nt * M, count=M,
                                    accumulate=kt > 0))
        outputs.append(Output(acc_addr=nt * M, count=M, param_addr=nt, zero_point=zero_point,
                              clamp_lo=clamp_lo, clamp_hi=clamp_hi))
        tiles.append((0, M, n0, n1))
    return GemmPlan(program + computes + outputs, tiles, (M, N), M * K * N)


def pack(config, op):
    """The Verilog port and payload integer for ``op``: ``(port, value)``.

    ``port`` is one of ``"cmd"``, ``"act_wr"``, ``"wgt_wr"``, ``"param_wr"``.
    """
    from ..hdl import layouts

    c = config
    if isinstance(op, ActWrite):
        return "act_wr", layouts.act_write_layout(c).const(
            {"addr": op.addr, "mask": op.mask, "data": list(op.data)}).as_bits()
    if isinstance(op, WgtWrite):
        return "wgt_wr", layouts.wgt_write_layout(c).const(
            {"addr": op.addr, "mask": op.mask, "data": list(op.data)}).as_bits()
    if isinstance(op, ParamWrite):
        lanes = [{"bias": b, "mult": m, "shift": s} for b, m, s in zip(op.bias, op.mult, op.shift)]
        return "param_wr", layouts.param_write_layout(c).const(
            {"addr": op.addr, "mask": op.mask, "data": lanes}).as_bits()
    if isinstance(op, Compute):
        return "cmd", layouts.command_layout(c).const({
            "op": layouts.TileOp.COMPUTE, "accumulate": int(op.accumulate), "count": op.count,
            "act_addr": op.act_addr, "wgt_addr": op.wgt_addr, "acc_addr": op.acc_addr,
        }).as_bits()
    if isinstance(op, Output):
        return "cmd", layouts.command_layout(c).const({
            "op": layouts.TileOp.OUTPUT, "count": op.count, "acc_addr": op.acc_addr,
            "param_addr": op.param_addr, "zero_point": op.zero_point,
            "clamp_lo": op.clamp_lo, "clamp_hi": op.clamp_hi,
        }).as_bits()
    raise TypeError(f"{op!r} has no port")
