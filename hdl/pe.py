"""Processing element of the weight-stationary systolic array."""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ProcessingElement"]


class ProcessingElement(wiring.Component):
    """One multiply-accumulate cell with a double-buffered weight register.

    Every cycle the cell passes its activations (and the weight-bank select that travels
    with them) to the right and ``psum_in + a * w[sel_in]`` downwards, both registered.
    The bank not selected by the activations in flight can be rewritten at the same
    time (``w_load``), so the next tile's weights load while this tile computes.

    With ``group`` > 1 (the sparse front end) ``a_in`` carries a group of ``group``
    activations and each weight bank also holds an index: the cell multiplies its
    weight with ``a_in[idx[sel_in]]``, the activation its stored non-zero weight meets.

    Parameters
    ----------
    data_width : int
        Width of activations and weights (signed).
    psum_width : int
        Width of the partial sums (signed); sums wrap at this width.
    group : int
        Activations per cell input (1: dense; M of N:M sparsity).
    """

    def __init__(self, *, data_width, psum_width, group=1):
        if data_width < 1 or psum_width < 2 * data_width:
            raise ValueError(f"psum_width ({psum_width}) must be at least 2*data_width ({2 * data_width})")
        self._data_width = data_width
        self._psum_width = psum_width
        self._group = group
        self._idx_bits = (group - 1).bit_length()
        act = signed(data_width) if group == 1 else data.ArrayLayout(signed(data_width), group)
        ports = {
            "a_in":     In(act),
            "sel_in":   In(1),
            "a_out":    Out(act),
            "sel_out":  Out(1),
            "psum_in":  In(signed(psum_width)),
            "psum_out": Out(signed(psum_width)),
            "w_load":   In(1),
            "w_bank":   In(1),
            "w_data":   In(signed(data_width)),
        }
        if group > 1:
            ports["w_idx"] = In(unsigned(self._idx_bits))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        w0 = Signal(signed(self._data_width))
        w1 = Signal(signed(self._data_width))
        with m.If(self.w_load):
            with m.If(self.w_bank):
                m.d.sync += w1.eq(self.w_data)
            with m.Else():
                m.d.sync += w0.eq(self.w_data)
        weight = Mux(self.sel_in, w1, w0)
        if self._group == 1:
            a = self.a_in
        else:
            i0 = Signal(self._idx_bits)
            i1 = Signal(self._idx_bits)
            with m.If(self.w_load):
                with m.If(self.w_bank):
                    m.d.sync += i1.eq(self.w_idx)
                with m.Else():
                    m.d.sync += i0.eq(self.w_idx)
            a = self.a_in[Mux(self.sel_in, i1, i0)]
        m.d.sync += [
            self.a_out.eq(self.a_in),
            self.sel_out.eq(self.sel_in),
            self.psum_out.eq(self.psum_in + a * weight),
        ]
        return m
