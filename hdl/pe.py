"""Processing element of the weight-stationary systolic array."""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ProcessingElement"]


class ProcessingElement(wiring.Component):
    """One multiply-accumulate cell with a double-buffered weight register.

    Every cycle the cell passes its activation (and the weight-bank select that travels
    with it) to the right and ``psum_in + a_in * w[sel_in]`` downwards, both registered.
    The bank not selected by the activations in flight can be rewritten at the same
    time (``w_load``), so the next tile's weights load while this tile computes.

    Parameters
    ----------
    data_width : int
        Width of activations and weights (signed).
    psum_width : int
        Width of the partial sums (signed); sums wrap at this width.
    """

    def __init__(self, *, data_width, psum_width):
        if data_width < 1 or psum_width < 2 * data_width:
            raise ValueError(f"psum_width ({psum_width}) must be at least 2*data_width ({2 * data_width})")
        self._data_width = data_width
        self._psum_width = psum_width
        super().__init__({
            "a_in":     In(signed(data_width)),
            "sel_in":   In(1),
            "a_out":    Out(signed(data_width)),
            "sel_out":  Out(1),
            "psum_in":  In(signed(psum_width)),
            "psum_out": Out(signed(psum_width)),
            "w_load":   In(1),
            "w_bank":   In(1),
            "w_data":   In(signed(data_width)),
        })

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
        m.d.sync += [
            self.a_out.eq(self.a_in),
            self.sel_out.eq(self.sel_in),
            self.psum_out.eq(self.psum_in + self.a_in * weight),
        ]
        return m
