"""Wishbone B4 pipelined interconnect pieces for the board SoC: an arbiter and a width adapter.

Both keep the bus rules of :mod:`npu.hdl.wishbone`: every accepted request is answered
once, in order, and a master that drops ``cyc`` abandons what it waits for.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from . import wishbone
from .pipeline import step_count

__all__ = ["Arbiter", "Upsizer"]


class Arbiter(wiring.Component):
    """Several pipelined masters share one slave, request by request.

    The owner of the slave keeps it while no other master asks. When another master
    presented a request in the cycle before and the owner has had at least one request
    accepted since it got the slave (or did not ask in the cycle before), the owner's new
    requests are stalled; once its
    outstanding requests are answered (or it drops ``cyc``) the slave goes to the next
    asking master in round-robin order. Masters that stream requests therefore take
    turns within a few cycles, and answers always reach the master that made the request.
    Giving way depends on registers only: one master's request path does not reach
    another's ``stall`` (a timing cut, at the cost of a cycle per hand-over).

    Parameters
    ----------
    ports : int
        Number of masters, at least 2.
    addr_width, data_width : int
        The bus (the same for the masters and the slave; no ``err``).
    max_outstanding : int
        Requests an owner may have unanswered; more are stalled.

    Members
    -------
    masters : In(wishbone.Signature(...)).array(ports)
    slave : Out(wishbone.Signature(...))
    """

    def __init__(self, *, ports, addr_width, data_width, max_outstanding=7):
        if ports < 2:
            raise ValueError(f"ports = {ports!r} is invalid: an arbiter needs at least 2 masters")
        self.ports = ports
        self.max_outstanding = max_outstanding
        sig = wishbone.Signature(addr_width=addr_width, data_width=data_width, with_err=False)
        super().__init__({"masters": In(sig).array(ports), "slave": Out(sig)})

    def elaborate(self, platform):
        m = Module()
        n, slave = self.ports, self.slave
        owner = Signal(range(n))
        outstanding = Signal(range(self.max_outstanding + 1))
        asking = [master.cyc & master.stb for master in self.masters]
        # The decision to give way is taken from registers only (who asked in the cycle
        # before), so no master's request path reaches another master's stall.
        asked = Signal(n)
        m.d.sync += asked.eq(Cat(*asking))
        other, successor = Signal(), Signal(range(n))
        with m.Switch(owner):
            for o in range(n):
                with m.Case(o):
                    # The first master after the owner that asked, in round-robin order.
                    for j in reversed([(o + i) % n for i in range(1, n)]):
                        with m.If(asked[j]):
                            m.d.comb += [other.eq(1), successor.eq(j)]
        served = Signal()           # the owner has had a request accepted since it got the slave
        give_way = other & (served | ~asked.bit_select(owner, 1))
        full = outstanding == self.max_outstanding
        hold = give_way | full
        for i, master in enumerate(self.masters):
            m.d.comb += [master.dat_r.eq(slave.dat_r), master.stall.eq(1)]
        with m.Switch(owner):
            for o, master in enumerate(self.masters):
                with m.Case(o):
                    m.d.comb += [slave.cyc.eq(master.cyc), slave.stb.eq(master.stb & ~hold),
                                 slave.we.eq(master.we), slave.adr.eq(master.adr), slave.dat_w.eq(master.dat_w),
                                 slave.sel.eq(master.sel), master.stall.eq(slave.stall | hold),
                                 master.ack.eq(slave.ack)]
        accepted = slave.cyc & slave.stb & ~slave.stall
        with m.If(~slave.cyc):
            m.d.sync += outstanding.eq(0)
        with m.Else():
            m.d.sync += outstanding.eq(step_count(outstanding, accepted, slave.ack))
        with m.If(give_way & ((outstanding == 0) | ~slave.cyc)):
            m.d.sync += [owner.eq(successor), served.eq(0)]
        with m.Elif(accepted):
            m.d.sync += served.eq(1)
        return m


class Upsizer(wiring.Component):
    """A narrow master reaches a wide slave: one request at a time.

    The narrow word address's low bits pick the lane of the wide word; ``sel`` and the
    write data go to that lane, the read data come from it. A second request is stalled
    until the first is answered, which suits a master that waits for each answer (the
    host bridge).

    Parameters
    ----------
    addr_width : int
        Word-address width of the wide side.
    narrow_width, wide_width : int
        Data widths; ``wide_width`` is a power-of-two multiple of ``narrow_width``.

    Members
    -------
    narrow : In(wishbone.Signature(addr_width + log2(wide/narrow), narrow_width))
    wide : Out(wishbone.Signature(addr_width, wide_width))
    """

    def __init__(self, *, addr_width, narrow_width=32, wide_width):
        if wide_width % narrow_width:
            raise ValueError(f"wide_width = {wide_width} is invalid: must be a multiple of narrow_width = "
                             f"{narrow_width}")
        self.ratio = wide_width // narrow_width
        self.lane_bits = exact_log2(self.ratio)
        super().__init__({
            "narrow": In(wishbone.Signature(addr_width=addr_width + self.lane_bits, data_width=narrow_width,
                                            with_err=False)),
            "wide": Out(wishbone.Signature(addr_width=addr_width, data_width=wide_width, with_err=False)),
        })

    def elaborate(self, platform):
        m = Module()
        narrow, wide = self.narrow, self.wide
        nbytes = len(narrow.sel)
        busy = Signal()
        lane = Signal(max(1, self.lane_bits))
        request_lane = narrow.adr[:self.lane_bits]
        m.d.comb += [
            wide.cyc.eq(narrow.cyc), wide.stb.eq(narrow.stb & ~busy), wide.we.eq(narrow.we),
            wide.adr.eq(narrow.adr[self.lane_bits:]), wide.dat_w.eq(narrow.dat_w.replicate(self.ratio)),
            narrow.stall.eq(busy | wide.stall), narrow.ack.eq(busy & wide.ack),
            narrow.dat_r.eq(wide.dat_r.word_select(lane, len(narrow.dat_r)) if self.ratio > 1 else wide.dat_r),
        ]
        for i in range(self.ratio):
            m.d.comb += wide.sel[i * nbytes:(i + 1) * nbytes].eq(
                narrow.sel if self.ratio == 1 else narrow.sel & (request_lane == i).replicate(nbytes))
        with m.If(~narrow.cyc | wide.ack):
            m.d.sync += busy.eq(0)
        with m.Elif(wide.stb & ~wide.stall):
            m.d.sync += [busy.eq(1), lane.eq(request_lane if self.ratio > 1 else 0)]
        return m
