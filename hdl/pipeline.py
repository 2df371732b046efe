"""Small pipeline helpers shared by the datapath blocks."""

from amaranth.hdl import Cat, ClockSignal, Instance, Module, Mux, ResetSignal, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["delay", "fanout", "register", "step_count", "StreamSlice"]


def register(m, value, *, name, separate=False, domain="sync"):
    """Return a register that holds ``value`` of the cycle before (reset to ``value``'s
    init when it is a signal; 0 with ``separate``).

    Yosys merges registers with the same input into one, which then drives every user of
    each: with ``separate`` each bit is an ECP5 ``TRELLIS_FF`` instance, which synthesis
    keeps as it is (pass :func:`~npu.hdl.pe.registered_dsp` of the platform;
    ``sim/TRELLIS_FF.v`` models it), so copies meant for users far apart stay copies.
    """
    reg = Signal.like(value, name=name)
    if not separate:
        m.d[domain] += reg.eq(value)
        return reg
    if Value.cast(reg).init:
        raise ValueError(f"{name}: a separate register resets to 0, not {Value.cast(reg).init}")
    for b in range(len(Value.cast(reg))):
        m.submodules[f"{name}_ff{b}"] = Instance(
            "TRELLIS_FF", p_GSR="DISABLED", p_CEMUX="1", p_CLKMUX="CLK", p_LSRMUX="LSR",
            p_REGSET="RESET", p_SRMODE="LSR_OVER_CE",
            i_CLK=ClockSignal(domain), i_LSR=ResetSignal(domain), i_DI=Value.cast(value)[b],
            o_Q=Value.cast(reg)[b])
    return reg


def delay(m, value, cycles, *, name, separate=False, domain="sync"):
    """Return ``value`` delayed by ``cycles`` registers in ``domain`` (``value`` for 0);
    ``separate``: see :func:`register`."""
    for i in range(cycles):
        value = register(m, value, name=f"{name}_d{i + 1}", separate=separate, domain=domain)
    return value


def fanout(m, value, copies, *, name, separate=False, domain="sync"):
    """Return ``copies`` registers that each hold ``value`` of the cycle before (reset to 0).

    For a signal that drives logic spread over a large device (the columns of a wide
    array): each copy can be placed beside its own users, and the long route from
    ``value`` ends in a register. With ``separate`` (see :func:`register`) synthesis keeps
    the copies apart.
    """
    return [register(m, value, name=f"{name}_copy{c}", separate=separate, domain=domain) for c in range(copies)]


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
    ``stages`` slices in a row: a cycle of latency each, and routes across a large device
    split into shorter ones. ``holding`` is high while some stage holds an entry.

    ``half_rate``: one entry per stage, taken only while the stage is empty, so a transfer
    every other cycle at most (for streams that are never faster, e.g. commands). The
    output register's enable is then the stage's own ``valid`` register, not the
    consumer's ``ready``: on a large device the consumer's ``ready`` -> the enables of a
    wide register spread far was the critical path.
    """

    def __init__(self, shape, *, registered=True, stages=1, half_rate=False):
        self._registered = registered
        self._shape = shape
        self._stages = stages
        self._half_rate = half_rate
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})
        self.holding = Signal()

    def elaborate(self, platform):
        m = Module()
        if not self._registered:
            wiring.connect(m, wiring.flipped(self.i), wiring.flipped(self.o))
            m.d.comb += self.holding.eq(self.o.valid)
            return m
        if self._stages > 1:
            chain = [StreamSlice(self._shape, half_rate=self._half_rate) for _ in range(self._stages)]
            for n, stage in enumerate(chain):
                m.submodules[f"stage{n}"] = stage
            wiring.connect(m, wiring.flipped(self.i), chain[0].i)
            for a, b in zip(chain, chain[1:]):
                wiring.connect(m, a.o, b.i)
            wiring.connect(m, chain[-1].o, wiring.flipped(self.o))
            m.d.comb += self.holding.eq(Cat(*(stage.o.valid for stage in chain)).any())
            return m
        m.d.comb += self.holding.eq(self.o.valid)
        if self._half_rate:
            m.d.comb += self.i.ready.eq(~self.o.valid)
            with m.If(~self.o.valid):
                m.d.sync += [self.o.valid.eq(self.i.valid), self.o.payload.eq(self.i.payload)]
            with m.Elif(self.o.ready):
                m.d.sync += self.o.valid.eq(0)
            return m
        skid = Signal.like(self.i.payload)
        skid_valid = Signal()
        m.d.comb += self.i.ready.eq(~skid_valid)
        taken = self.o.valid & self.o.ready
        accepted = self.i.valid & ~skid_valid
        # The skid entry follows the input whenever it is empty (its enable is a register,
        # not the consumer's ready); it keeps what it has from the cycle it becomes valid.
        with m.If(~skid_valid):
            m.d.sync += skid.eq(self.i.payload)
        with m.If(self.o.valid & ~taken):
            # The consumer holds back the presented entry: a new one waits in the skid entry.
            with m.If(accepted):
                m.d.sync += skid_valid.eq(1)
        with m.Elif(skid_valid):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(skid), skid_valid.eq(0)]
        with m.Else():
            m.d.sync += [self.o.valid.eq(accepted), self.o.payload.eq(self.i.payload)]
        return m
