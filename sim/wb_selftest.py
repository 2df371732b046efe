"""A small Wishbone copy engine, the design the Wishbone bus models test themselves on.

:class:`CopyEngine` has the two kinds of port the NPU has: a pipelined Wishbone master
(``bus``) and a classic-compatible register slave (``csr``). Writing ``CTRL.start``
copies ``LEN`` words from byte address ``SRC`` to ``DST``: the reads are issued back
to back while ``stall`` is low and collected into a buffer, then the writes follow
the same way. It is test equipment for :mod:`npu.sim.wishbone`, not part of the NPU.
"""

from amaranth.hdl import Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from ..hdl import wishbone

__all__ = ["CopyEngine", "REGS", "CTRL_START", "CTRL_ABORT", "CTRL_IGNORE_STALL", "STATUS_BUSY", "STATUS_DONE",
           "STATUS_ERROR", "STATUS_ABORTED", "ID_VALUE", "HANG_OFFSET"]

#: Register byte offsets. Offsets from 0x20 to 0x7c answer ``err``; from ``HANG_OFFSET``
#: on nothing answers at all, so a test can check that a hung access times out.
REGS = {"SRC": 0x00, "DST": 0x04, "LEN": 0x08, "CTRL": 0x0C, "STATUS": 0x10, "CYCLES": 0x14,
        "WSEL": 0x18, "ID": 0x1C}
HANG_OFFSET = 0x80
CTRL_START, CTRL_ABORT = 1 << 0, 1 << 1
#: Written with ``CTRL_START``: the master breaks the protocol by moving on from a
#: stalled request, so a test can check that the bus model reports it.
CTRL_IGNORE_STALL = 1 << 2
STATUS_BUSY, STATUS_DONE, STATUS_ERROR, STATUS_ABORTED = 1 << 0, 1 << 1, 1 << 2, 1 << 3
ID_VALUE = 0x57425354  # "WBST"


class CopyEngine(wiring.Component):
    """Copies ``LEN`` bus words from ``SRC`` to ``DST`` (byte addresses) over ``bus``.

    Parameters
    ----------
    data_width : int
        Width of the master's data bus: 8, 16, 32 or 64.
    depth : int
        Buffer size in words; a ``LEN`` above it ends at once with ``STATUS.error``.

    Members
    -------
    bus : Out(wishbone.Signature(addr_width=30, data_width=data_width))
        Pipelined master. ``cyc`` drops on ``err`` or on ``CTRL.abort``, abandoning
        the requests still outstanding.
    csr : In(wishbone.Signature(addr_width=8, data_width=32))
        Register slave: registered ``ack`` one cycle after acceptance, ``stall`` while
        it is answering, so classic and pipelined masters both work.
    """

    def __init__(self, *, data_width=32, depth=64):
        if data_width not in (8, 16, 32, 64):
            raise ValueError(f"data_width must be 8, 16, 32 or 64, not {data_width!r}")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth!r}")
        self.data_width = data_width
        self.depth = depth
        super().__init__({
            "bus": Out(wishbone.Signature(addr_width=30, data_width=data_width)),
            "csr": In(wishbone.Signature(addr_width=8, data_width=32)),
        })

    def elaborate(self, platform):
        m = Module()
        dw, nbytes = self.data_width, self.data_width // 8
        shift = exact_log2(nbytes)
        count_width = ceil_log2(self.depth + 1)

        src, dst, length = Signal(32), Signal(32), Signal(32)
        wsel = Signal(nbytes, init=(1 << nbytes) - 1)
        busy, done, error, aborted = Signal(), Signal(), Signal(), Signal()
        cycles = Signal(32)
        start, abort, ignore_stall_w = Signal(), Signal(), Signal()
        ignore_stall = Signal()

        # -- register slave ------------------------------------------------------------
        csr = self.csr
        ack, err = Signal(), Signal()
        rdata = Signal(32)
        accept = csr.cyc & csr.stb & ~ack & ~err
        m.d.comb += [csr.ack.eq(ack), csr.err.eq(err), csr.stall.eq(ack | err), csr.dat_r.eq(rdata)]
        m.d.sync += [ack.eq(0), err.eq(0)]
        status = Signal(32)
        m.d.comb += status.eq(busy | done << 1 | error << 2 | aborted << 3)
        readable = {REGS["SRC"]: src, REGS["DST"]: dst, REGS["LEN"]: length, REGS["CTRL"]: Const(0, 32),
                    REGS["STATUS"]: status, REGS["CYCLES"]: cycles, REGS["WSEL"]: wsel,
                    REGS["ID"]: Const(ID_VALUE, 32)}
        with m.If(accept):
            with m.Switch(csr.adr):
                for offset, value in readable.items():
                    with m.Case(offset // 4):
                        m.d.sync += [ack.eq(1), rdata.eq(value)]
                        with m.If(csr.we):
                            if offset == REGS["CTRL"]:
                                m.d.comb += [start.eq(csr.dat_w[0]), abort.eq(csr.dat_w[1]),
                                             ignore_stall_w.eq(csr.dat_w[2])]
                            elif offset in (REGS["SRC"], REGS["DST"], REGS["LEN"], REGS["WSEL"]):
                                m.d.sync += readable[offset].eq(csr.dat_w)
                with m.Case(*range(len(readable), HANG_OFFSET // 4)):
                    m.d.sync += err.eq(1)
                with m.Default():
                    pass  # never answered: a hang the host must time out on

        # -- copy master ---------------------------------------------------------------
        bus = self.bus
        m.submodules.buf = buf = Memory(shape=dw, depth=self.depth, init=[])
        wr = buf.write_port()
        rd = buf.read_port(domain="comb")
        n = Signal(count_width)
        issued = Signal(count_width)
        answered = Signal(count_width)
        last = answered == n - 1
        src_word = src[shift:]
        dst_word = dst[shift:]
        m.d.comb += [
            rd.addr.eq(issued),
            wr.addr.eq(answered),
            wr.data.eq(bus.dat_r),
            bus.dat_w.eq(rd.data),
        ]
        with m.If(busy):
            m.d.sync += cycles.eq(cycles + 1)
        with m.If(bus.cyc & bus.stb & (~bus.stall | ignore_stall)):
            m.d.sync += issued.eq(issued + 1)
        with m.If(bus.cyc & bus.ack):
            m.d.sync += answered.eq(answered + 1)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(start):
                    m.d.sync += [busy.eq(1), done.eq(0), error.eq(0), aborted.eq(0), cycles.eq(0),
                                 issued.eq(0), answered.eq(0), n.eq(length),
                                 ignore_stall.eq(ignore_stall_w)]
                    with m.If(length == 0):
                        m.d.sync += [busy.eq(0), done.eq(1)]
                    with m.Elif(length > self.depth):
                        m.d.sync += [busy.eq(0), done.eq(1), error.eq(1)]
                    with m.Else():
                        m.next = "READ"
            with m.State("READ"):
                m.d.comb += [bus.cyc.eq(1), bus.stb.eq(issued != n), bus.we.eq(0),
                             bus.adr.eq(src_word + issued), bus.sel.eq((1 << nbytes) - 1),
                             wr.en.eq(bus.ack)]
                with m.If(bus.ack & last):
                    m.d.sync += [issued.eq(0), answered.eq(0)]
                    m.next = "WRITE"
                self._leave_on_err_or_abort(m, bus, abort, busy, done, error, aborted)
            with m.State("WRITE"):
                m.d.comb += [bus.cyc.eq(1), bus.stb.eq(issued != n), bus.we.eq(1),
                             bus.adr.eq(dst_word + issued), bus.sel.eq(wsel)]
                with m.If(bus.ack & last):
                    m.d.sync += [busy.eq(0), done.eq(1)]
                    m.next = "IDLE"
                self._leave_on_err_or_abort(m, bus, abort, busy, done, error, aborted)
        return m

    @staticmethod
    def _leave_on_err_or_abort(m, bus, abort, busy, done, error, aborted):
        # Either ends the copy at once: cyc drops in the next cycle, abandoning the
        # requests still outstanding.
        with m.If(bus.err | abort):
            m.d.sync += [busy.eq(0), done.eq(1), error.eq(bus.err), aborted.eq(abort)]
            m.next = "IDLE"


def convert(*, data_width=32, depth=64, name="wb_selftest"):
    """Verilog text of a :class:`CopyEngine` with top-level module ``name``."""
    from amaranth.back import verilog
    return verilog.convert(CopyEngine(data_width=data_width, depth=depth), name=name,
                           emit_src=False, strip_internal_attrs=True)
