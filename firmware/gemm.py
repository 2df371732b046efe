"""Memory-to-memory quantised GEMM programs for the NPU's instruction set.

:func:`plan_gemm` lays out ``Y = requantize(A @ W + bias)`` in memory and emits the
command program: double-buffered LOADs of activation and weight blocks, COMPUTEs
accumulating over K, STOREs of each output tile. Loads of the next block are placed
among the computes of the current one (software pipelining); the NPU's scoreboard
keeps the program's sequential meaning, so the overlap is free.

A K-tile is the K range of one activation entry:

* dense NPU: ``rows`` positions, one weight tile;
* N:M NPU, dense GEMM: ``dense_parts*rows`` positions, ``dense_parts`` weight tiles
  (COMPUTE ``part`` 0 .. dense_parts-1; lanes beyond ``dense_parts*rows`` stay zero);
* N:M NPU, sparse GEMM (``sparse=True``): ``act_lanes`` positions, one N:M-compressed
  weight tile plus one index entry (:mod:`npu.firmware.sparse`).

Memory layout (all regions bus-word aligned):

* A: row ``m``, K-tile ``t`` (one activation row, K position ``k`` in lane
  ``k % positions per K-tile``) at ``a_addr + m*a_sm + t*a_st``; row major (a row's
  K-tiles contiguous, K padded to whole tiles) when an activation row is a whole
  number of bus words, else tile major.
* W: pre-tiled, one weight row (``cols`` weights) per weight-tile row and N-tile, in
  block order: K-block (``kb`` K-tiles), then N-tile, then K-tile within the block,
  then its weight rows (``rows`` per weight tile: part by part when dense, the
  compressed rows when sparse).
* idx (sparse GEMMs only): one index row (:func:`~npu.firmware.isa.pack_idx`) per
  (K-tile, N-tile), in the block order of W.
* params: one parameter row per N-tile.
* Y: like A, with N-tiles in place of K-tiles.
"""

from dataclasses import dataclass, field

import numpy as np

from ..hdl.isa import Buffer, row_words
from .isa import Compute, End, Load, Store, pack_idx, pack_matrix, pack_row, unpack_matrix
from .sparse import compress

__all__ = ["GemmLayout", "GemmPlan", "GemmProgram", "plan_gemm", "choose_tiles"]


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
    plan: "GemmPlan" = None

    def read_result(self, config, read):
        """The M x N result, using ``read(addr, nbytes) -> bytes`` on the final memory."""
        return self.plan.read_result(read)


def _align(x, a):
    return -(-x // a) * a


def _k_tiling(config, sparse):
    """(K positions per K-tile, weight rows per K-tile and N-tile) of a GEMM."""
    c = config
    if sparse:
        if not c.sparse:
            raise ValueError(f"sparse = True needs an N:M configuration; this one has "
                             f"sparsity = {c.sparsity!r}")
        return c.act_lanes, c.rows
    return c.dense_parts * c.rows, c.dense_parts * c.rows


def choose_tiles(config, M, K, N, *, sparse=False):
    """(Mt rows, NT n-tiles, KB k-tiles) per block: the largest Mt*Nt/(Mt+Nt) (bytes loaded
    per MAC) that fits double-buffered activations, weights (and, when ``sparse``, index
    entries) and one accumulator set."""
    c = config
    k_span, w_rows = _k_tiling(c, sparse)
    k_tiles, n_tiles = -(-K // k_span), -(-N // c.cols)
    best = None
    # Parameter entries are double-buffered too: the next tile's load while this one stores.
    for nt in range(1, min(n_tiles, max(1, c.param_depth // 2)) + 1):
        mt = min(M, c.acc_depth // nt, c.act_depth // 2)
        if mt < 1:
            continue
        kb = min(k_tiles, (c.act_depth // 2) // mt, (c.wgt_depth // 2) // (nt * w_rows))
        if sparse:
            kb = min(kb, (c.idx_depth // 2) // nt)
        if kb < 1:
            continue
        cols = nt * c.cols
        score = (mt * cols / (mt + cols), kb)
        if best is None or score > best[0]:
            best = (score, (mt, nt, kb))
    if best is None:
        raise ValueError(f"a {M}x{K}x{N} GEMM does not fit the buffers of this configuration")
    return best[1]


class GemmPlan:
    """The memory layout and command program of an ``M x K x N`` GEMM, from byte ``base``.

    The program depends on the shapes and addresses only, so a compiler plans a layer
    once and fills its operands later: :meth:`weight_image` (constant: W and the
    requantisation parameters), :meth:`act_image` (each run's A) and
    :meth:`read_result` (Y). ``program`` has no END: GEMMs can follow one another.

    ``sparse=True`` (N:M configurations only) runs the GEMM as N:M-compressed tiles:
    :meth:`weight_image` then takes weights that obey the pattern (see
    :func:`npu.firmware.sparse.prune`). ``macs`` counts the dense-equivalent M*K*N
    multiply-accumulates; ``array_macs`` the MAC slots the array spends.
    """

    def __init__(self, config, M, K, N, *, base, tiles=None, interleave=4, sparse=False):
        c = self.config = config
        self.shape = (M, K, N)
        self.sparse = bool(sparse)
        self.macs = M * K * N
        self.k_span, self._w_rows = _k_tiling(c, self.sparse)
        w_rows = self._w_rows
        parts = w_rows // c.rows if not self.sparse else 1      # weight tiles per K-tile and N-tile
        self.k_tiles, self.n_tiles = -(-K // self.k_span), -(-N // c.cols)
        mt, nt, kb = self.mt, self.nt, self.kb = tiles or choose_tiles(c, M, K, N, sparse=self.sparse)
        self.tiles = {"mt": mt, "nt": nt, "kb": kb}
        bb = c.bus_bytes
        k_tiles, n_tiles = self.k_tiles, self.n_tiles
        wgt_row = row_words(c, "wgt") * bb
        par_row = row_words(c, "param") * bb
        self._act_row = row_words(c, "act") * bb
        self._out_row = row_words(c, "out") * bb
        addr = _align(base, 64)

        def layout(rows, tiles_, row_size, tight):
            nonlocal addr
            if tight:   # row major: a row's tiles are contiguous
                lay = GemmLayout(addr, tiles_ * row_size, row_size, rows * tiles_ * row_size)
            else:
                lay = GemmLayout(addr, row_size, rows * row_size, rows * tiles_ * row_size)
            addr = _align(addr + lay.size, 64)
            return lay

        self.a = a_lay = layout(M, k_tiles, self._act_row, self._act_row == c.act_lanes * c.element_bytes)
        # W in block order: K-block (kb K-tiles), then N-tile, then K-tile and its weight
        # rows; so one LOAD fetches a block's weights for all N-tiles of an output tile.
        w_base = addr
        w_size = n_tiles * k_tiles * w_rows * wgt_row
        addr = _align(addr + w_size, 64)

        def block_tile(t, j):
            """Index of (K-tile t, N-tile j) in block order."""
            t0 = t // kb * kb                                 # first K-tile of t's block
            return t0 * n_tiles + j * min(kb, k_tiles - t0) + (t - t0)

        self.w = GemmLayout(w_base, wgt_row, 0, w_size)
        # Index rows in the same block order, one per (K-tile, N-tile).
        self.idx = idx_lay = None
        if self.sparse:
            idx_row = row_words(c, "idx") * bb
            self.idx = idx_lay = GemmLayout(addr, idx_row, 0, n_tiles * k_tiles * idx_row)
            addr = _align(addr + idx_lay.size, 64)
        self.params = p_lay = GemmLayout(addr, par_row, 0, n_tiles * par_row)
        addr = _align(addr + p_lay.size, 64)
        self.y = y_lay = layout(M, n_tiles, self._out_row, self._out_row == c.cols * c.element_bytes)
        self.end = addr

        blocks = []   # (m0, mrows, j0, njs, t0, nts, first_k, last_k, parameter base entry)
        tile = 0
        par_half = nt if 2 * nt <= c.param_depth else 0
        for m0 in range(0, M, mt):
            for j0 in range(0, n_tiles, nt):
                for t0 in range(0, k_tiles, kb):
                    blocks.append((m0, min(mt, M - m0), j0, min(nt, n_tiles - j0), t0, min(kb, k_tiles - t0),
                                   t0 == 0, t0 + kb >= k_tiles, (tile % 2) * par_half))
                tile += 1
        half_act, half_wgt, half_idx = c.act_depth // 2, c.wgt_depth // 2, c.idx_depth // 2

        def loads(i):
            m0, mr, j0, nj, t0, ntk, first, _, pbase = blocks[i]
            h = i % 2
            out = []
            for t in range(ntk):
                out.append(Load(Buffer.ACT, mr, h * half_act + t * mr, a_lay.addr(m0, t0 + t), a_lay.sm))
            out.append(Load(Buffer.WGT, nj * ntk * w_rows, h * half_wgt,
                            w_base + block_tile(t0, j0) * w_rows * wgt_row, wgt_row))
            if self.sparse:
                out.append(Load(Buffer.IDX, nj * ntk, h * half_idx, idx_lay.addr(block_tile(t0, j0), 0),
                                idx_lay.sm))
            if first:
                out.append(Load(Buffer.PARAM, nj, pbase, p_lay.addr(j0, 0), par_row))
            return out

        def computes(i):
            m0, mr, j0, nj, t0, ntk, first, _, _ = blocks[i]
            h = i % 2
            if self.sparse:
                return [Compute(mr, h * half_act + t * mr, h * half_wgt + (jj * ntk + t) * c.rows, jj * mr,
                                accumulate=not (first and t == 0), sparse=True,
                                idx_addr=h * half_idx + jj * ntk + t)
                        for jj in range(nj) for t in range(ntk)]
            return [Compute(mr, h * half_act + t * mr, h * half_wgt + ((jj * ntk + t) * parts + p) * c.rows,
                            jj * mr, accumulate=not (first and t == 0 and p == 0), part=p)
                    for jj in range(nj) for t in range(ntk) for p in range(parts)]

        def stores(i):
            m0, mr, j0, nj, _, _, _, last, pbase = blocks[i]
            if not last:
                return []
            return [Store(mr, jj * mr, pbase + jj, y_lay.addr(m0, j0 + jj), y_lay.sm) for jj in range(nj)]

        # Each block's computes, with the next block's loads after the first ``interleave``
        # of them: those keep the array busy while the loads wait for the previous block
        # to release the buffer half they overwrite.
        program = loads(0)
        for i in range(len(blocks)):
            comp = computes(i)
            program += comp[:interleave]
            if i + 1 < len(blocks):
                program += loads(i + 1)
            program += comp[interleave:]
            program += stores(i)
        self.program = program
        self.array_macs = sum(insn.count for insn in program if isinstance(insn, Compute)) * c.rows * c.cols

    def act_image(self, a):
        """``[(address, bytes)]`` placing the M x K activations ``a`` (zero padded)."""
        c = self.config
        M, K, _ = self.shape
        a = np.asarray(a, dtype=np.int64)
        if a.shape != (M, K):
            raise ValueError(f"activations are {a.shape}, this GEMM takes {(M, K)}")
        ap = np.zeros((M, self.k_tiles * self.k_span), dtype=np.int64)
        ap[:, :K] = a
        rows = np.zeros((M, self.k_tiles, c.act_lanes), dtype=np.int64)
        rows[:, :, :self.k_span] = ap.reshape(M, self.k_tiles, self.k_span)
        if self.a.st != self._act_row:          # tile major
            rows = rows.transpose(1, 0, 2)
        return [(self.a.base, pack_matrix(c, "act", rows))]

    def weight_image(self, w, bias, mult, shift, zero_point=0, clamp_lo=None, clamp_hi=None):
        """``[(address, bytes)]`` placing the K x N weights and the parameter rows.

        A sparse GEMM takes the dense K x N matrix, which must obey the configuration's
        N:M pattern (:class:`~npu.firmware.sparse.SparsityError` otherwise), and places
        its compressed tiles and index rows."""
        c = self.config
        M, K, N = self.shape
        w = np.asarray(w, dtype=np.int64)
        if w.shape != (K, N):
            raise ValueError(f"weights are {w.shape}, this GEMM takes {(K, N)}")
        qmin, qmax = -(1 << (c.data_width - 1)), (1 << (c.data_width - 1)) - 1
        clamp_lo = qmin if clamp_lo is None else clamp_lo
        clamp_hi = qmax if clamp_hi is None else clamp_hi
        bias, mult, shift = (np.broadcast_to(np.asarray(v, dtype=object), (N,)) for v in (bias, mult, shift))
        kt, nt, C = self.k_tiles, self.n_tiles, c.cols
        if self.sparse:
            tiles, indices = compress(c, w)         # kt, nt, rows, C each; SparsityError if off pattern
        else:
            wp = np.zeros((kt * self._w_rows, nt * C), dtype=np.int64)
            wp[:K, :N] = w
            tiles = wp.reshape(kt, self._w_rows, nt, C).transpose(0, 2, 1, 3)
        # Memory order (see block_tile): block, N-tile, K-tile within the block, weight row.
        blocks = [slice(t0, t0 + self.kb) for t0 in range(0, kt, self.kb)]
        order = np.concatenate([tiles[b].transpose(1, 0, 2, 3).reshape(-1, C) for b in blocks])
        image = [(self.w.base, pack_matrix(c, "wgt", order))]
        if self.sparse:
            idx = np.concatenate([indices[b].transpose(1, 0, 2, 3).reshape(-1, c.rows, C) for b in blocks])
            image.append((self.idx.base, pack_idx(c, idx)))
        par = bytearray()
        for j in range(self.n_tiles):
            cols = range(j * c.cols, (j + 1) * c.cols)
            lanes = {name: [int(v[n]) if n < N else 0 for n in cols] for name, v in
                     (("bias", bias), ("mult", mult), ("shift", shift))}
            par += pack_row(c, "param", dict(lanes, zero_point=zero_point, clamp_lo=clamp_lo, clamp_hi=clamp_hi))
        image.append((self.params.base, bytes(par)))
        return image

    def read_result(self, read):
        """The M x N result, using ``read(addr, nbytes) -> bytes`` on the final memory."""
        c = self.config
        M, _, N = self.shape
        rows = unpack_matrix(c, "out", read(self.y.base, self.y.size), M * self.n_tiles)
        if self.y.st == self._out_row:          # row major
            out = rows.reshape(M, self.n_tiles * c.cols)
        else:
            out = rows.reshape(self.n_tiles, M, c.cols).transpose(1, 0, 2).reshape(M, -1)
        return out[:, :N]


def plan_gemm(config, a, w, bias, mult, shift, zero_point=0, clamp_lo=None, clamp_hi=None, *, base,
              tiles=None, interleave=4, sparse=False):
    """The program (ending in END) and memory image for the quantised GEMM, from byte ``base``
    (``sparse``: N:M-compressed tiles, see :class:`GemmPlan`)."""
    a = np.asarray(a)
    w = np.asarray(w)
    if a.ndim != 2 or w.ndim != 2 or w.shape[0] != a.shape[1]:
        raise ValueError(f"inner dimensions differ: a is {a.shape}, w is {w.shape}")
    (M, K), N = a.shape, w.shape[1]
    plan = GemmPlan(config, M, K, N, base=base, tiles=tiles, interleave=interleave, sparse=sparse)
    image = plan.act_image(a) + plan.weight_image(w, bias, mult, shift, zero_point, clamp_lo, clamp_hi)
    return GemmProgram(plan.program + [End()], image, plan.a, plan.w, plan.params, plan.y, (M, N),
                       plan.tiles, plan.macs, plan.end, plan)
