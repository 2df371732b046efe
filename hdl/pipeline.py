"""Small pipeline helpers shared by the datapath blocks."""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["delay", "step_count", "StreamSlice"]


def delay(m, value, cycles, *, name, domain="sync"):
    """Return ``value`` delayed by ``cycles`` registers in ``domain`` (``value`` for 0)."""
    for i in range(cycles):
        stage = Signal.like(value, name=f"{name}_d{i + 1}")
        m.d[domain] += stage.eq(value)
        value = stage
    return value


def step_count(count, up, down):
    """``count + up - down``, written so that ``up`` and ``down`` (the ends of long request
    and answer paths) only pick among ``count - 1``, ``count`` and ``count + 1``, which are
    worked out from the register alone: no carry chain after them."""
    return Mux(up, Mux(down, count, count + 1), Mux(down, count - 1, count))


class StreamSlice(wiring.Component):
    """A register slice on a stream, at full throughput: ``i.ready`` and everything on ``o``
    come from registers, so no combinational path crosses it in either direction.

    Two entries (the presented one and a skid entry) let a transfer happen every cycle.
    ``registered=False`` makes it a plain connection (``register_slices = false``).
    """

    def __init__(self, shape, *, registered=True):
        self._registered = registered
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        if not self._registered:
            wiring.connect(m, wiring.flipped(self.i), wiring.flipped(self.o))
            return m
        skid = Signal.like(self.i.payload)
        skid_valid = Signal()
        m.d.comb += self.i.ready.eq(~skid_valid)
        taken = self.o.valid & self.o.ready
        accepted = self.i.valid & ~skid_valid
        with m.If(self.o.valid & ~taken):
            # The consumer holds back the presented entry: a new one waits in the skid entry.
            with m.If(accepted):
                m.d.sync += [skid_valid.eq(1), skid.eq(self.i.payload)]
        with m.Elif(skid_valid):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(skid), skid_valid.eq(0)]
        with m.Else():
            m.d.sync += [self.o.valid.eq(accepted), self.o.payload.eq(self.i.payload)]
        return m
