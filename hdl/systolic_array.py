"""R x C weight-stationary systolic array with input skew and output de-skew."""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .pe import ProcessingElement, dual_int8_dsp, mult18x18d_registered, registered_dsp, sb_mac16_pair
from .pipeline import delay, register

__all__ = ["SystolicArray"]


class SystolicArray(wiring.Component):
    """A weight-stationary array of ``rows`` x ``cols`` processing elements.

    Weight ``W[k][n]`` sits in PE (k, n). An activation row ``a[0..rows-1]`` presented
    on ``a_in`` together with ``valid`` and the weight bank ``sel`` enters row k of the
    array k cycles later (the skew), moves right one PE per cycle, and the partial sums
    move down one PE per cycle. Column n's sum leaves the bottom ``rows + n`` cycles
    after the row was presented and is delayed by ``cols - 1 - n`` more (the de-skew), so
    ``psum_out[n] = sum_k a[k] * W[k][n]`` for every column appears together,
    :attr:`latency` = ``rows + cols + 1`` cycles after the input (one more for the cells'
    product registers, one for the input register: the activation buffer's block RAM
    output and the first multiplier are a register apart), with ``valid_out``.

    The array never stalls: rows enter at one per cycle and leave at one per cycle.
    Invalid input slots are fed as zero activations, so idle cells compute zeros.

    Weights load one array row per cycle through ``w_load`` / ``w_row`` / ``w_bank`` /
    ``w_data`` into the bank given by ``w_bank``; rows in flight that select the
    other bank are unaffected.

    With ``group`` > 1 (the sparse front end) each array row receives a group of
    ``group`` activations on ``a_in[k]``, and each weight comes with an index
    (``w_idx``) that picks the activation of the group it multiplies: PE (k, n)
    computes ``a[k][idx[k][n]] * W[k][n]``.

    Parameters
    ----------
    rows, cols : int
        Array dimensions (any value >= 1).
    data_width : int
        Operand width (signed).
    psum_width : int
        Partial-sum width (signed); must hold a ``rows``-long dot product exactly.
    group : int
        Activations per array row (1: dense; M of N:M sparsity).
    pe_pipeline : int
        Registers in each cell from its inputs to the product it adds: 1, or 3 or 5 for
        DSP blocks far from the fabric's registers (ECP5); see
        :class:`~npu.hdl.pe.ProcessingElement`. The latency grows by ``pe_pipeline - 1``.
    broadcast : bool
        Row k's activation (and weight bank select) goes to all cells of the row in the
        same cycle instead of moving right a cell per cycle: every column's sum leaves the
        bottom together, with no de-skew, and the latency is ``rows + pe_pipeline + 1``. No
        forwarding or de-skew registers; the activation fans out to ``cols`` cells.
    weight_chain : bool
        The weight load moves down each column a row per cycle (a register per cell, like
        the partial sums) instead of reaching every row of the array in the same cycle: on
        a large device a column's cells lie far apart, and a row's across the device. Row k
        is written ``k + 2`` cycles after it is presented (at most ``rows + 1``); the
        activations of a tile reach row k later than that (they are read after the tile's
        last weight row). Each column's chain carries the row number and bank, encoded per
        column, so synthesis keeps the columns' chains apart; with two banks, instead, a bit
        per bank and row below (one-hot), so each cell's bank loads are chain registers.
    row_valid : bool
        Each row's input register is zeroed by a copy of ``valid`` of its own
        (``valid_row[k]``, the same value, e.g. kept apart by synthesis), not by ``valid``
        routed to every row.
    """

    def __init__(self, *, rows, cols, data_width, psum_width, group=1, pe_pipeline=1, banks=2, broadcast=False,
                 weight_chain=False, row_valid=False):
        if rows < 1 or cols < 1:
            raise ValueError(f"array dimensions must be >= 1, not {rows} x {cols}")
        self.weight_chain = weight_chain
        self.row_valid = row_valid
        self.rows = rows
        self.cols = cols
        self.data_width = data_width
        self.psum_width = psum_width
        self.group = group
        self.pe_pipeline = pe_pipeline
        self.banks = banks
        self.broadcast = broadcast
        act = signed(data_width) if group == 1 else data.ArrayLayout(signed(data_width), group)
        self._act_shape = act
        ports = {
            "valid":     In(1),
            "sel":       In(1),
            "a_in":      In(act).array(rows),
            "valid_out": Out(1),
            "psum_out":  Out(signed(psum_width)).array(cols),
            "w_load":    In(1),
            "w_row":     In(unsigned(max(1, (rows - 1).bit_length()))),
            "w_bank":    In(1),
            "w_data":    In(signed(data_width)).array(cols),
        }
        if row_valid:
            ports["valid_row"] = In(1).array(rows)
        if group > 1:
            ports["w_idx"] = In(unsigned((group - 1).bit_length())).array(cols)
        super().__init__(ports)

    @staticmethod
    def latency_of(rows, cols, pe_pipeline=1, broadcast=False):
        """Cycles from a row on ``a_in`` to its results on ``psum_out``."""
        return rows + pe_pipeline + (1 if broadcast else cols)     # (1: the input register)

    @property
    def latency(self):
        """Cycles from a row on ``a_in`` to its results on ``psum_out``."""
        return self.latency_of(self.rows, self.cols, self.pe_pipeline, self.broadcast)

    def elaborate(self, platform):
        m = Module()
        R, C = self.rows, self.cols
        # On the iCE40UP two cells share one SB_MAC16 (two int8 multiplies per block).
        paired = dual_int8_dsp(platform) and self.data_width <= 8
        # On the ECP5 each cell's multiply registers are the MULT18X18D's own (pipeline 3).
        in_dsp = not paired and registered_dsp(platform) and self.pe_pipeline == 3 and self.data_width <= 18
        # With one weight bank, a block's B register holds its two cells' weights (a pair in
        # one array row, so loaded together: every pair is when the row has an even length).
        held = paired and self.banks == 1 and self.pe_pipeline == 1 and self.group == 1 and C % 2 == 0
        # The bank select of every row travels with its activations, delayed by the row's
        # skew and a register per cell: rows' selects of the same age are the same signal,
        # which synthesis would make one register for cells across the device. On the ECP5
        # each select register is kept apart (``separate``).
        separate = registered_dsp(platform) and self.banks == 2
        # Where the board build pins each cell's DSP block ((row, column) -> nextpnr's name
        # of the site; none: the placer's choice).
        sites = (getattr(platform, "npu_dsp_sites", None) or {}) if in_dsp else {}
        # The weight chain of two banks gives each cell a load per bank (``bank_loads``).
        one_hot = self.weight_chain and self.banks == 2
        pes = [[ProcessingElement(data_width=self.data_width, psum_width=self.psum_width, group=self.group,
                                  external_multiplier=paired or in_dsp, pipeline=self.pe_pipeline,
                                  external_stages=3 if in_dsp else 1, banks=self.banks, weight_in_multiplier=held,
                                  separate_select=separate and not self.broadcast, bank_loads=one_hot)
                for _ in range(C)] for _ in range(R)]
        for k in range(R):
            for n in range(C):
                m.submodules[f"pe_{k}_{n}"] = pes[k][n]
                if in_dsp:
                    pe = pes[k][n]
                    instance, connect = mult18x18d_registered(pe.mul_a, pe.mul_w, pe.mul_p, site=sites.get((k, n)))
                    m.submodules[f"mult_{k}_{n}"] = instance
                    m.d.comb += connect
        if paired:
            cells = [pe for row in pes for pe in row]
            for i in range(0, len(cells), 2):
                hi, lo = cells[i], cells[i + 1] if i + 1 < len(cells) else None
                if lo is None:       # an odd cell out multiplies in logic
                    m.d.sync += hi.mul_p.eq(hi.mul_a * hi.mul_w)
                    continue
                instance, connect = sb_mac16_pair(hi.mul_a, hi.mul_w, lo.mul_a, lo.mul_w, hi.mul_p, lo.mul_p,
                                                  w_load=hi.mul_w_load if held else None)
                m.submodules[f"mac16_{i // 2}"] = instance
                m.d.comb += connect

        weights = self._weight_rows(m, separate)
        for k in range(R):
            # Zero the operand of empty slots so idle cells compute 0 (deterministic, low power).
            # The input register: a timing cut between the activation buffer and the array.
            a = Signal(self._act_shape, name=f"a_row{k}")
            m.d.sync += a.eq(Mux(self.valid_row[k] if self.row_valid else self.valid, self.a_in[k], 0))
            a_skewed = delay(m, a, k, name=f"skew_a{k}")
            m.d.comb += pes[k][0].a_in.eq(a_skewed)
            if self.banks == 2:         # (one bank: no select travels)
                sel = delay(m, self.sel, k + 1, name=f"sel_row{k}", separate=separate)
                m.d.comb += pes[k][0].sel_in.eq(sel)
            for n in range(1, C):
                m.d.comb += pes[k][n].a_in.eq(pes[k][0].a_in if self.broadcast else pes[k][n - 1].a_out)
                if self.banks == 2:
                    m.d.comb += pes[k][n].sel_in.eq(pes[k][0].sel_in if self.broadcast else pes[k][n - 1].sel_out)
            for n in range(C):
                w_load, w_bank, w_data, w_idx = weights[k][n]
                m.d.comb += [
                    pes[k][n].w_load.eq(w_load),
                    (pes[k][n].w_load1 if one_hot else pes[k][n].w_bank).eq(w_bank),
                    pes[k][n].w_data.eq(w_data),
                    *([pes[k][n].w_idx.eq(w_idx)] if self.group > 1 else []),
                    pes[k][n].psum_in.eq(pes[k - 1][n].psum_out if k > 0 else 0),
                ]

        for n in range(C):
            deskew = 0 if self.broadcast else C - 1 - n
            m.d.comb += self.psum_out[n].eq(delay(m, pes[R - 1][n].psum_out, deskew, name=f"deskew{n}"))
        m.d.comb += self.valid_out.eq(delay(m, self.valid, self.latency, name="valid"))
        return m

    def _weight_rows(self, m, separate=False):
        """``[k][n]``: (load, bank, data, idx) of the weight load as cell (k, n) sees it."""
        R, C = self.rows, self.cols
        idx = list(self.w_idx) if self.group > 1 else [None] * C
        if not self.weight_chain:
            return [[(self.w_load & (self.w_row == k), self.w_bank, self.w_data[n], idx[n]) for n in range(C)]
                    for k in range(R)]
        chains = [self._data_chain(m, n, idx[n]) for n in range(C)]
        if self.banks == 2:
            return self._weight_rows_one_hot(m, chains, separate)
        # The chain's tag: 0, or (row + 1, bank) of a load; XORed with the column number so
        # that no two columns' tag registers are the same function of the inputs.
        row_bits = R.bit_length()
        width = max(row_bits + 1, ceil_log2(C))
        tag_in = Mux(self.w_load, Cat((self.w_row + 1)[:row_bits], self.w_bank), 0)
        cells = [[None] * C for _ in range(R)]
        for n in range(C):
            tag = tag_in ^ n
            for k, (data_k, idx_k) in enumerate(chains[n]):
                tag_k = Signal(width, name=f"w_tag_{k}_{n}")
                m.d.sync += tag_k.eq(tag)
                raw = tag_k ^ n
                cells[k][n] = (raw[:row_bits] == k + 1, raw[row_bits], data_k, idx_k)
                tag = tag_k
        return cells

    def _data_chain(self, m, n, idx):
        """Column ``n``'s weight chain of data (and index) registers: ``[k]`` = (data, idx)
        as stage k holds them, a register per row."""
        stages, data_, idx_ = [], self.w_data[n], idx
        for k in range(self.rows):
            data_k = Signal.like(self.w_data[n], name=f"w_data_{k}_{n}")
            m.d.sync += data_k.eq(data_)
            idx_k = None
            if idx_ is not None:
                idx_k = Signal.like(idx_, name=f"w_idx_{k}_{n}")
                m.d.sync += idx_k.eq(idx_)
            stages.append((data_k, idx_k))
            data_, idx_ = data_k, idx_k
        return stages

    def _weight_rows_one_hot(self, m, chains, separate):
        """The weight chain with two banks: per column, stage k of the chain holds a bit per
        bank for each row k .. R-1 ("load this row's bank b"), each stage the bits of the
        rows below it from the stage above. Cell (k, n) gets its two bank loads
        (``[k][n]`` = (load bank 0, load bank 1, data, idx)) straight from stage k's first
        bits, registers with no other users beside it: no decode between the chain and
        the weight registers' enables (a tag's decode -> a long route -> the enables was a
        critical path on the ULX3S-85F). The first stage's bits are kept apart per column
        (``separate``), as they are the same function of the inputs."""
        R, C = self.rows, self.cols
        first = [[self.w_load & (self.w_row == j) & (self.w_bank == b) for j in range(R)] for b in range(2)]
        cells = [[None] * C for _ in range(R)]
        for n in range(C):
            hot = first
            for k, (data_k, idx_k) in enumerate(chains[n]):
                hot = [[register(m, bit, name=f"w_hot{b}_{k}_{n}_{k + j}", separate=separate and k == 0)
                        for j, bit in enumerate(bits)] for b, bits in enumerate(hot)]
                cells[k][n] = (hot[0][0], hot[1][0], data_k, idx_k)
                hot = [bits[1:] for bits in hot]
        return cells
