"""Memory-to-memory quantised GEMM programs for the NPU's instruction set.

:func:`plan_gemm` lays out ``Y = requantize(A @ W + bias)`` in memory and emits the
command program: double-buffered LOADs of activation and weight blocks, COMPUTEs
accumulating over K, STOREs of each output tile. Loads of the next block are placed
among the computes of the current one (software pipelining); the NPU's scoreboard
keeps the program's sequential meaning, so the overlap is free.

Memory layout (all regions bus-word aligned):

* A: row ``m``, K-tile ``t`` (``rows`` elements) at ``a_addr + m*a_sm + t*a_st``; row
  major (``A[m, :]`` contiguous, K padded to whole tiles) when an activation row is a
  whole number of bus words, else tile major.
* W: pre-tiled, one weight row (``cols`` weights) per K index and N-tile, in block
  order: K-block (``kb`` K-tiles), then N-tile, then K index within the block.
* params: one parameter row per N-tile.
* Y: like A, with N-tiles in place of K-tiles.
"""

from dataclasses import dataclass, field

import numpy as np

from ..hdl.isa import Buffer, row_words
from .isa import Compute, End, Load, Store, pack_row

__all__ = ["GemmLayout", "GemmProgram", "plan_gemm", "choose_tiles"]


@dataclass
class GemmLayout:
    """Where one operand lives: element block (i, t) at ``base + i*sm + t*st``."""
    base: int
    sm: int
    st: int
    size: int

    def addr(self, i, t):
        return self.base + i * self.sm + t * self.st


@dataclass
class GemmProgram:
    program: list
    #: (address, bytes) regions to write into memory before running.
    image: list
    a: GemmLayout
    w: GemmLayout
    params: GemmLayout
    y: GemmLayout
    shape: tuple
    tiles: dict = field(default_factory=dict)
    macs: int = 0
    end: int = 0     #: first byte after the last region

    def read_result(self, config, read):
        """The M x N result, using ``read(addr, nbytes) -> bytes`` on the final memory."""
        from .isa import unpack_row
        M, N = self.shape
        out = np.zeros((M, -(-N // config.cols) * config.cols), dtype=np.int64)
        size = row_words(config, "out") * config.bus_bytes
        for m in range(M):
            for j in range(out.shape[1] // config.cols):
                out[m, j * config.cols:(j + 1) * config.cols] = unpack_row(config, "out", read(self.y.addr(m, j), size))
        return out[:, :N]


def _align(x, a):
    return -(-x // a) * a


def choose_tiles(config, M, K, N):
    """(Mt rows, NT n-tiles, KB k-tiles) per block: the largest Mt*Nt/(Mt+Nt) (bytes loaded
    per MAC) that fits double-buffered activations and weights and one accumulator set."""
    c = config
    k_tiles, n_tiles = -(-K // c.rows), -(-N // c.cols)
    best = None
    # Parameter entries are double-buffered too: the next tile's load while this one stores.
    for nt in range(1, min(n_tiles, max(1, c.param_depth // 2)) + 1):
        mt = min(M, c.acc_depth // nt, c.act_depth // 2)
        if mt < 1:
            continue
        kb = min(k_tiles, (c.act_depth // 2) // mt, (c.wgt_depth // 2) // (nt * c.rows))
        if kb < 1:
            continue
        cols = nt * c.cols
        score = (mt * cols / (mt + cols), kb)
        if best is None or score > best[0]:
            best = (score, (mt, nt, kb))
    if best is None:
        raise ValueError(f"a {M}x{K}x{N} GEMM does not fit the buffers of this configuration")
    return best[1]


def plan_gemm(config, a, w, bias, mult, shift, zero_point=0, clamp_lo=None, clamp_hi=None, *, base,
              tiles=None, interleave=4):
    """The program and memory image for the quantised GEMM, regions from byte ``base``."""
    c = config
    bb = c.bus_bytes
    a = np.asarray(a, dtype=np.int64)
    w = np.asarray(w, dtype=np.int64)
    (M, K), N = a.shape, w.shape[1]
    if w.shape[0] != K:
        raise ValueError(f"inner dimensions differ: a is {M}x{K}, w is {w.shape[0]}x{N}")
    qmin, qmax = -(1 << (c.data_width - 1)), (1 << (c.data_width - 1)) - 1
    clamp_lo = qmin if clamp_lo is None else clamp_lo
    clamp_hi = qmax if clamp_hi is None else clamp_hi
    bias, mult, shift = (np.broadcast_to(np.asarray(v, dtype=object), (N,)) for v in (bias, mult, shift))
    k_tiles, n_tiles = -(-K // c.rows), -(-N // c.cols)
    Kp, Np = k_tiles * c.rows, n_tiles * c.cols
    mt, nt, kb = tiles or choose_tiles(c, M, K, N)

    act_row = row_words(c, "act") * bb
    wgt_row = row_words(c, "wgt") * bb
    par_row = row_words(c, "param") * bb
    out_row = row_words(c, "out") * bb
    addr = _align(base, 64)

    def layout(rows, tiles_, row_size, tight):
        nonlocal addr
        if tight:   # row major: a row's tiles are contiguous
            lay = GemmLayout(addr, tiles_ * row_size, row_size, rows * tiles_ * row_size)
        else:
            lay = GemmLayout(addr, row_size, rows * row_size, rows * tiles_ * row_size)
        addr = _align(addr + lay.size, 64)
        return lay

    a_lay = layout(M, k_tiles, act_row, act_row == c.rows * c.element_bytes)
    # W in block order: K-block (kb K-tiles), then N-tile, then K index; so one LOAD
    # fetches a block's weights for all N-tiles of an output tile.
    w_base = addr
    w_size = n_tiles * Kp * wgt_row
    addr = _align(addr + w_size, 64)

    def w_addr(k, j):
        t0 = (k // c.rows) // kb * kb                     # first K-tile of k's block
        ntk = min(kb, k_tiles - t0)
        return w_base + (t0 * c.rows * n_tiles + j * ntk * c.rows + (k - t0 * c.rows)) * wgt_row

    w_lay = GemmLayout(w_base, wgt_row, 0, w_size)
    p_lay = GemmLayout(addr, par_row, 0, n_tiles * par_row)
    addr = _align(addr + p_lay.size, 64)
    y_lay = layout(M, n_tiles, out_row, out_row == c.cols * c.element_bytes)

    # Memory image.
    ap = np.zeros((M, Kp), dtype=np.int64)
    ap[:, :K] = a
    wp = np.zeros((Kp, Np), dtype=np.int64)
    wp[:K, :N] = w
    image = []
    for m in range(M):
        for t in range(k_tiles):
            image.append((a_lay.addr(m, t), pack_row(c, "act", ap[m, t * c.rows:(t + 1) * c.rows])))
    for j in range(n_tiles):
        for k in range(Kp):
            image.append((w_addr(k, j), pack_row(c, "wgt", wp[k, j * c.cols:(j + 1) * c.cols])))
        cols = range(j * c.cols, (j + 1) * c.cols)
        lanes = {name: [int(v[n]) if n < N else 0 for n in cols] for name, v in
                 (("bias", bias), ("mult", mult), ("shift", shift))}
        image.append((p_lay.addr(j, 0), pack_row(c, "param", dict(
            lanes, zero_point=zero_point, clamp_lo=clamp_lo, clamp_hi=clamp_hi))))

    # Program.
    program = []
    blocks = []   # (m0, mrows, j0, njs, t0, nts, first_k, last_k, parameter base entry)
    tile = 0
    par_half = nt if 2 * nt <= c.param_depth else 0
    for m0 in range(0, M, mt):
        for j0 in range(0, n_tiles, nt):
            for t0 in range(0, k_tiles, kb):
                blocks.append((m0, min(mt, M - m0), j0, min(nt, n_tiles - j0), t0, min(kb, k_tiles - t0),
                               t0 == 0, t0 + kb >= k_tiles, (tile % 2) * par_half))
            tile += 1
    half_act, half_wgt = c.act_depth // 2, c.wgt_depth // 2

    def loads(i):
        m0, mr, j0, nj, t0, ntk, first, _, pbase = blocks[i]
        h = i % 2
        out = []
        for t in range(ntk):
            out.append(Load(Buffer.ACT, mr, h * half_act + t * mr, a_lay.addr(m0, t0 + t), a_lay.sm))
        out.append(Load(Buffer.WGT, nj * ntk * c.rows, h * half_wgt, w_addr(t0 * c.rows, j0), wgt_row))
        if first:
            out.append(Load(Buffer.PARAM, nj, pbase, p_lay.addr(j0, 0), par_row))
        return out

    def computes(i):
        m0, mr, j0, nj, t0, ntk, first, _, _ = blocks[i]
        h = i % 2
        return [Compute(mr, h * half_act + t * mr, h * half_wgt + (jj * ntk + t) * c.rows, jj * mr,
                        accumulate=not (first and t == 0))
                for jj in range(nj) for t in range(ntk)]

    def stores(i):
        m0, mr, j0, nj, _, _, _, last, pbase = blocks[i]
        if not last:
            return []
        return [Store(mr, jj * mr, pbase + jj, y_lay.addr(m0, j0 + jj), y_lay.sm) for jj in range(nj)]

    # Each block's computes, with the next block's loads after the first ``interleave``
    # of them: those keep the array busy while the loads wait for the previous block
    # to release the buffer half they overwrite.
    program += loads(0)
    for i in range(len(blocks)):
        comp = computes(i)
        program += comp[:interleave]
        if i + 1 < len(blocks):
            program += loads(i + 1)
        program += comp[interleave:]
        program += stores(i)
    program.append(End())
    return GemmProgram(program, image, a_lay, w_lay, p_lay, y_lay, (M, N), {"mt": mt, "nt": nt, "kb": kb},
                       M * K * N, addr)
