"""Wishbone B4 bus signatures (amaranth-soc is not released on PyPI, so these are ours).

Signal names follow the Wishbone B4 specification in lower case; ``adr`` is a word
address. Pipelined mode: a request is accepted in a cycle with ``cyc & stb & ~stall``,
and every accepted request is answered, in order, by exactly one cycle of ``ack`` or
``err``. A master may drop ``cyc`` to abandon the requests it is waiting for.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Signature", "RequestSlice"]


class Signature(wiring.Signature):
    """A Wishbone B4 pipelined bus, seen from the master (flip it for a slave)."""

    def __init__(self, *, addr_width, data_width, with_err=True):
        self.addr_width = addr_width
        self.data_width = data_width
        members = {
            "cyc":   Out(1),
            "stb":   Out(1),
            "we":    Out(1),
            "adr":   Out(addr_width),
            "dat_w": Out(data_width),
            "sel":   Out(data_width // 8),
            "dat_r": In(data_width),
            "ack":   In(1),
            "stall": In(1),
        }
        if with_err:
            members["err"] = In(1)
        super().__init__(members)

    def __eq__(self, other):
        return (isinstance(other, Signature) and other.addr_width == self.addr_width
                and other.data_width == self.data_width and other.members == self.members)

    def __repr__(self):
        return f"wishbone.Signature(addr_width={self.addr_width}, data_width={self.data_width})"


class RequestSlice(wiring.Component):
    """A register slice on the request path of a pipelined bus, at full throughput.

    Every output to the slave (``stb``, ``we``, ``adr``, ``dat_w``, ``sel``) and the
    ``stall`` seen by the master come from registers, so no combinational path crosses
    the slice from master to slave or back: a timing cut between a unit and the
    interconnect. Two request registers (the presented one and a skid entry) let a
    request be accepted every cycle while the slave does not stall. Answers (``ack``,
    ``err``, ``dat_r``) pass straight through, in order. ``cyc`` is registered too: a
    master that drops it abandons its requests, including those still in the slice, and
    the slave sees ``cyc`` fall one cycle later (answers in that cycle are ignored, as the
    master's ``cyc`` is low).

    Parameters
    ----------
    signature : Signature
        The bus, seen from the master.
    registered : bool
        False makes the slice a plain connection (no registers, no added latency): for
        small, slow devices that need no timing cut (``register_slices = false``).
    skid : bool
        False leaves out the skid entry: one request register, and a request is accepted
        only while it is empty (``stall`` is its valid bit), so at most one request every
        two cycles. Still a cut in both directions, at half the registers: for a master
        that waits for each answer anyway (the host bridge).
    slave_stalls : bool
        False for a slave that never stalls (``stall`` tied low, as the board RAMs): one
        request register, no skid entry, and the master is never stalled, at full
        throughput. A cut from master to slave only (nothing comes back but answers).
    registered_answers : bool
        The answers (``ack``, ``err``, ``dat_r``) registered as well: a cut from slave to
        master too, at a cycle more per answer (the master must keep ``cyc`` until its
        answers are in, as ours do).
    decode : function, optional
        A function of a request's ``adr`` (an address decode), worked out before the
        request is registered and registered with it: :attr:`hit` is its value for the
        request on ``down``, from a register (no decode between the slice and the logic
        that uses it, such as the stall it makes).
    decode_width : int
        The bits ``decode`` returns (and :attr:`hit` holds); one by default.

    Members
    -------
    up : In(signature)
        Towards the master.
    down : Out(signature)
        Towards the slave.
    """

    def __init__(self, signature, *, registered=True, skid=True, slave_stalls=True, registered_answers=False,
                 decode=None, decode_width=1):
        self._sig = signature
        self._decode = decode
        self.hit = Signal(decode_width)
        self._registered = registered
        self._registered_answers = registered and registered_answers
        self._skid = skid
        self._slave_stalls = slave_stalls
        super().__init__({"up": In(signature), "down": Out(signature)})

    def elaborate(self, platform):
        m = Module()
        up, down = self.up, self.down
        # The request's fields, and the decode's verdict registered beside them.
        source = {name: getattr(up, name) for name in ("we", "adr", "dat_w", "sel")}
        if self._decode is not None:
            source["hit"] = self._decode(up.adr)
        if not self._registered:
            wiring.connect(m, wiring.flipped(up), wiring.flipped(down))
            if "hit" in source:
                m.d.comb += self.hit.eq(source["hit"])
            return m
        fields = tuple(source)
        out_valid, skid_valid = Signal(), Signal()
        skid = {name: Signal.like(value, name=f"skid_{name}") for name, value in source.items()}
        out = {name: Signal.like(value, name=f"out_{name}") for name, value in source.items()}
        if "hit" in source:
            out["hit"] = self.hit
        cyc = Signal()
        m.d.sync += cyc.eq(up.cyc)
        m.d.comb += [down.cyc.eq(cyc), down.stb.eq(out_valid), up.stall.eq(skid_valid)]
        answers = m.d.sync if self._registered_answers else m.d.comb
        answers += [up.dat_r.eq(down.dat_r), up.ack.eq(down.ack)]
        if "err" in self._sig.members:
            answers += up.err.eq(down.err)
        m.d.comb += [getattr(down, name).eq(out[name]) for name in fields if name != "hit"]
        taken = out_valid & ~down.stall
        if not self._slave_stalls:
            # Every request is taken as it comes and presented in the next cycle.
            m.d.comb += up.stall.eq(0)
            m.d.sync += [out_valid.eq(up.cyc & up.stb), *(out[n].eq(source[n]) for n in fields)]
            return m
        if not self._skid:
            m.d.comb += up.stall.eq(out_valid)
            with m.If(~up.cyc):
                m.d.sync += out_valid.eq(0)
            with m.Elif(~out_valid):
                m.d.sync += [out_valid.eq(up.stb), *(out[n].eq(source[n]) for n in fields)]
            with m.Elif(taken):
                m.d.sync += out_valid.eq(0)
            return m
        accepted = up.cyc & up.stb & ~skid_valid
        held = out_valid & ~taken       # the slave stalls the presented request
        with m.If(~up.cyc):
            m.d.sync += [out_valid.eq(0), skid_valid.eq(0)]
        with m.Elif(held):
            # A new request waits in the skid entry.
            with m.If(accepted):
                m.d.sync += skid_valid.eq(1)
        with m.Elif(skid_valid):
            m.d.sync += [out_valid.eq(1), skid_valid.eq(0)]
        with m.Else():
            m.d.sync += out_valid.eq(accepted)
        # The fields are loaded as if every request were valid (only the valid bits say
        # which are): the master's cyc and stb stay off the fields' enables. The skid entry
        # follows the master whenever it is empty (its enable is a register, not the
        # slave's stall); it keeps what it has from the cycle it becomes valid.
        with m.If(~skid_valid):
            m.d.sync += [skid[n].eq(source[n]) for n in fields]
        with m.If(~held):
            m.d.sync += [out[n].eq(Mux(skid_valid, skid[n], source[n])) for n in fields]
        return m
