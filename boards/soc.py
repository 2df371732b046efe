"""The board system: NPU, host link (UART + frame bridge), on-chip RAM, interconnect, LEDs.

Address map, as the host sees it through the bridge (byte addresses, 32-bit words)::

    0x0000_0000 .. 0x0000_03FF   NPU registers (npu.hdl.regs)
    0x0000_1000 .. 0x0000_101F   info block (read-only; npu.hdl.bridge.INFO_FIELDS)
    0x1000_0000 .. + ram_bytes   RAM (npu.firmware.compiler.MEMORY_BASE)
    anything else                answers err

The NPU's DMA master reaches the RAM at the same addresses; anything else answers
``err`` (the NPU stops with BUS_ERROR). An arbiter shares the RAM between the NPU and
the bridge request by request, so the host can read and write memory while the NPU
runs.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..firmware.compiler import MEMORY_BASE
from ..hdl import wishbone
from ..hdl.bridge import CSR_BASE, INFO_ADDR, INFO_FIELDS, INFO_MAGIC, PROTOCOL_VERSION, Bridge
from ..hdl.interconnect import Arbiter, Upsizer
from ..hdl.npu import NPU
from ..hdl.pipeline import step_count
from ..hdl.ram import WishboneRAM, check_ram_size, ram_bus_signature
from ..hdl.regs import CSR_ADDR_WIDTH
from ..hdl.uart import MIN_DIVISOR, UARTRx, UARTTx

__all__ = ["BoardSoC", "STATUS_LEDS", "BAUD_TOLERANCE"]

#: The ``status`` outputs, bit by bit (for LEDs).
STATUS_LEDS = {
    "heartbeat": "blinks about once a second: the bitstream runs and the clock ticks",
    "link":      "a UART byte was received or sent in the last ~1/20 s",
    "npu_bus":   "the NPU used its memory bus in the last ~1/20 s (it is running a program)",
    "irq":       "the NPU's interrupt line: a program ended (DONE) or stopped (ERROR), not yet acknowledged",
    "link_error": "the last response the bridge sent carried an error status",
}
#: How far clk_hz / divisor may be from the requested baud rate.
BAUD_TOLERANCE = 0.02


def _in_range(adr, base, size):
    """``base <= adr < base + size`` (word addresses): an equality on the upper bits when the
    range is a naturally aligned power of two, which is shorter logic than two compares."""
    if size & (size - 1) == 0 and base % size == 0:
        low = size.bit_length() - 1
        return adr[low:] == base >> low
    return (adr >= base) & (adr < base + size)


def _check(name, value, lo, hi=None):
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name} = {value!r} is invalid: must be an integer of at least {lo}"
                         + (f" and at most {hi}" if hi is not None else ""))


class BoardSoC(wiring.Component):
    """NPU + UART host link + RAM, the top level a board platform wraps with clocks and pins.

    Parameters
    ----------
    config : NPUConfig
    ram_bytes : int
        On-chip RAM size, a multiple of the bus word; it holds compiled models
        (``CompiledModel.memory_size`` must fit).
    clk_hz : int
        The clock frequency (for the UART divisor, the timeouts and the info block).
    baud : int
        UART baud rate; ``clk_hz / baud`` rounded must be at least 4 and within 2 %.
    ram : wiring.Component, optional
        The RAM to use instead of :class:`~npu.hdl.ram.WishboneRAM`: any component with a
        ``bus`` member ``In(ram_bus_signature(size=ram_bytes, data_width=config.bus_width))``.
    byte_timeout : int, optional
        Quiet clock cycles that end a partial frame; default 20 ms.
    bus_timeout : int
        Clock cycles a bridge access may wait for the bus.
    ram_bank_bytes : int, optional
        The block RAM in banks of this size, each with its read data registered
        (:class:`~npu.hdl.ram.WishboneRAM`'s ``bank_bytes``); not with ``ram``.
    reset_buffer : callable, optional
        ``reset_buffer(m, reset)`` returns the NPU core's reset as its registers see it
        (a board may put it on a global network); see :class:`~npu.hdl.npu.NPU`.

    Members
    -------
    uart_rx : In(1)
        From the host (the USB-UART's TX).
    uart_tx : Out(1)
        To the host.
    status : Out(len(STATUS_LEDS))
        LED drivers, active high, in the order of :data:`STATUS_LEDS`.
    """

    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)
    status: Out(len(STATUS_LEDS))

    def __init__(self, config, *, ram_bytes, clk_hz, baud, ram=None, byte_timeout=None, bus_timeout=256,
                 reset_buffer=None, ram_bank_bytes=None):
        try:
            _check("clk_hz", clk_hz, 1_000)
            _check("baud", baud, 1)
            check_ram_size(ram_bytes, config.bus_width)
            divisor = round(clk_hz / baud)
            if divisor < MIN_DIVISOR or abs(clk_hz / divisor - baud) > BAUD_TOLERANCE * baud:
                raise ValueError(f"baud = {baud} is invalid for clk_hz = {clk_hz}: the UART divides the clock by "
                                 f"{divisor} (at least {MIN_DIVISOR}), giving {clk_hz / max(divisor, 1):.0f} baud; "
                                 f"at most {100 * BAUD_TOLERANCE:g}% off works")
            self.ram_signature = ram_bus_signature(size=ram_bytes, data_width=config.bus_width)
            if ram is not None:
                member = getattr(ram, "signature", None) and ram.signature.members.get("bus")
                if member != In(self.ram_signature):
                    raise ValueError(f"ram = {ram!r} is invalid: it needs a member bus = In({self.ram_signature!r}) "
                                     f"(npu.hdl.ram.ram_bus_signature(size={ram_bytes}, "
                                     f"data_width={config.bus_width}))")
            if byte_timeout is None:
                byte_timeout = max(clk_hz // 50, 20 * divisor)
            self.bridge = Bridge(byte_timeout=byte_timeout, bus_timeout=bus_timeout)
        except ValueError:
            self._MustUse__silence = True
            raise
        self.config = config
        self.ram_bytes = ram_bytes
        self.clk_hz = clk_hz
        self.baud = baud
        self.divisor = divisor
        self.ram = WishboneRAM(size=ram_bytes, data_width=config.bus_width, bank_bytes=ram_bank_bytes) \
            if ram is None else ram
        self.npu = NPU(config, reset_buffer=reset_buffer)
        super().__init__()

    @property
    def info_words(self):
        """The info block, as :data:`~npu.hdl.bridge.INFO_FIELDS` lists it."""
        values = {"magic": INFO_MAGIC, "version": PROTOCOL_VERSION | self.bridge.max_words << 16,
                  "ram_base": MEMORY_BASE, "ram_size": self.ram_bytes, "clk_hz": self.clk_hz, "baud": self.baud,
                  "byte_timeout": self.bridge.byte_timeout, "bus_timeout": self.bridge.bus_timeout}
        return [values[name] for name in INFO_FIELDS]

    @property
    def latencies(self):
        return self.npu.latencies

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        bb = cfg.bus_bytes
        m.submodules.npu = npu = self.npu
        m.submodules.bridge = bridge = self.bridge
        m.submodules.ram = ram = self.ram
        m.submodules.uart_rx = urx = UARTRx(divisor=self.divisor)
        m.submodules.uart_tx = utx = UARTTx(divisor=self.divisor)
        wiring.connect(m, urx.o, bridge.rx)
        wiring.connect(m, bridge.tx, utx.i)
        m.d.comb += [urx.rx.eq(self.uart_rx), self.uart_tx.eq(utx.tx), bridge.rx_error.eq(urx.error)]

        ram_aw = self.ram_signature.addr_width
        # Enough requests outstanding to cover the round trip through the RAM and the slices.
        outstanding = max(7, getattr(ram, "latency", 1) + 4)
        m.submodules.arbiter = arbiter = Arbiter(ports=2, addr_width=ram_aw, data_width=cfg.bus_width,
                                                 max_outstanding=outstanding)
        # Register slices on every side of the arbiter: the RAM's block RAMs spread over the
        # device, and the arbiter's decisions should not extend the masters' paths.
        # Without register slices elsewhere, the RAM still gets a request register (it never
        # stalls, so one register at full throughput): its blocks sit at the device's corners.
        slices = {}
        for name in ("ram", "npu", "bridge"):
            # With register slices the NPU's slice takes its whole address, and its decode
            # (RAM or not) is registered beside each request; without, the decode is in front.
            npu_first = name == "npu" and cfg.register_slices
            sig = npu.bus.signature if npu_first else \
                wishbone.Signature(addr_width=ram_aw, data_width=cfg.bus_width, with_err=False)
            cut = cfg.register_slices or name == "ram"
            decode = (lambda adr: _in_range(adr, MEMORY_BASE // bb, self.ram_bytes // bb)) if npu_first else None
            slices[name] = m.submodules[f"{name}_slice"] = wishbone.RequestSlice(
                sig, registered=cut, slave_stalls=cfg.register_slices, decode=decode)
        wiring.connect(m, arbiter.slave, slices["ram"].up)
        wiring.connect(m, slices["ram"].down, ram.bus)
        if not cfg.register_slices:
            wiring.connect(m, slices["npu"].down, arbiter.masters[0])
        wiring.connect(m, slices["bridge"].down, arbiter.masters[1])
        from_bridge = slices["bridge"].up

        # --- The NPU's DMA master: RAM, or err ---------------------------------------------
        # With register slices its requests are registered before they go on, their address
        # decoded on the way in: the stall the NPU sees is the slice's, and the one the slice
        # sees picks by a registered verdict.
        if cfg.register_slices:
            wiring.connect(m, npu.bus, slices["npu"].up)
            n, to_ram = slices["npu"].down, arbiter.masters[0]
            in_ram = slices["npu"].hit
        else:
            n, to_ram = npu.bus, slices["npu"].up
            in_ram = _in_range(n.adr, MEMORY_BASE // bb, self.ram_bytes // bb)
        # Requests to the RAM not yet answered: at most the arbiter's limit.
        ram_out = Signal(range(outstanding + 1))
        err_pending = Signal()          # an out-of-range request, answered err in this cycle
        m.d.comb += [to_ram.cyc.eq(n.cyc), to_ram.stb.eq(n.stb & in_ram & ~err_pending),
                     to_ram.we.eq(n.we), to_ram.adr.eq(n.adr[:ram_aw]), to_ram.dat_w.eq(n.dat_w),
                     to_ram.sel.eq(n.sel), n.dat_r.eq(to_ram.dat_r), n.ack.eq(to_ram.ack),
                     n.err.eq(err_pending),
                     # An err must not overtake the RAM's answers: wait until they are in.
                     n.stall.eq(err_pending | Mux(in_ram, to_ram.stall, ram_out != 0))]
        with m.If(~n.cyc):
            m.d.sync += [ram_out.eq(0), err_pending.eq(0)]
        with m.Else():
            m.d.sync += [ram_out.eq(step_count(ram_out, to_ram.stb & ~to_ram.stall, to_ram.ack)),
                         err_pending.eq(n.stb & ~n.stall & ~in_ram)]

        # --- The bridge's master: registers, info block, RAM, or err ---------------------
        # The bridge's requests are registered before they are decoded (its frame buffer is a
        # block RAM read straight onto the bus, and the decode should not reach the bridge's
        # stall). A slice without skid entry: the bridge waits for each answer, so half
        # throughput costs nothing, and the frame buffer's output (an unregistered block RAM
        # read, 5.6 ns on ECP5) goes straight into a register, with no skid select in front
        # (the 85F's critical path with the skid entry).
        # Its address decode (registers, the info block, RAM) is registered beside the
        # request, so none sits in front of the stall the slice sees.
        info = self.info_words
        info_bits = ceil_log2(len(info))

        def decode(adr):
            return Cat(adr[CSR_ADDR_WIDTH:] == CSR_BASE >> (2 + CSR_ADDR_WIDTH),
                       adr[info_bits:] == INFO_ADDR >> (2 + info_bits),
                       _in_range(adr, MEMORY_BASE // 4, self.ram_bytes // 4))

        m.submodules.bridge_out = bridge_out = wishbone.RequestSlice(
            bridge.bus.signature, skid=False, decode=decode, decode_width=3)
        wiring.connect(m, bridge.bus, bridge_out.up)
        b = bridge_out.down
        # The NPU's registers are reached through a register slice too (after the decode; on
        # small devices without skid entry, as the bridge's own).
        m.submodules.csr_slice = csr_slice = wishbone.RequestSlice(
            wishbone.Signature(addr_width=CSR_ADDR_WIDTH, data_width=32, with_err=False),
            skid=cfg.register_slices)
        wiring.connect(m, csr_slice.down, npu.csr)
        csr = csr_slice.up
        hit_csr, hit_info, hit_ram = bridge_out.hit
        request = b.cyc & b.stb & ~b.stall
        answer_csr, answer_ram = Signal(), Signal()     # where the accepted request went
        info_ack, info_err, info_data, none_err = Signal(), Signal(), Signal(32), Signal()
        with m.If(request):
            m.d.sync += [answer_csr.eq(hit_csr), answer_ram.eq(hit_ram)]
        m.d.sync += [info_ack.eq(request & hit_info & ~b.we), info_err.eq(request & hit_info & b.we),
                     none_err.eq(request & ~(hit_csr | hit_info | hit_ram))]
        with m.Switch(b.adr[:info_bits]):
            for i, word in enumerate(info):
                with m.Case(i):
                    m.d.sync += info_data.eq(word)

        m.d.comb += [csr.cyc.eq(b.cyc & hit_csr), csr.stb.eq(b.stb & hit_csr), csr.we.eq(b.we),
                     csr.adr.eq(b.adr[:CSR_ADDR_WIDTH]), csr.dat_w.eq(b.dat_w), csr.sel.eq(b.sel)]
        if cfg.bus_width > 32:
            m.submodules.upsizer = up = Upsizer(addr_width=ram_aw, wide_width=cfg.bus_width)
            wiring.connect(m, up.wide, from_bridge)
            narrow = up.narrow
        else:
            narrow = from_bridge
        # ``cyc`` (not decoded): the RAM's ``ack`` is gated by it, and an address decode in
        # front of that gate would reach the bridge's answer logic.
        m.d.comb += [narrow.cyc.eq(b.cyc), narrow.stb.eq(b.stb & hit_ram), narrow.we.eq(b.we),
                     narrow.adr.eq(b.adr[:len(narrow.adr)]), narrow.dat_w.eq(b.dat_w), narrow.sel.eq(b.sel)]
        m.d.comb += [
            b.stall.eq(Mux(hit_csr, csr.stall, Mux(hit_ram, narrow.stall, 0))),
            b.ack.eq((answer_csr & csr.ack) | (answer_ram & narrow.ack) | info_ack),
            b.err.eq(info_err | none_err),
            b.dat_r.eq(Mux(answer_csr, csr.dat_r, Mux(answer_ram, narrow.dat_r, info_data))),
        ]

        # --- Status LEDs -------------------------------------------------------------------
        width = max(ceil_log2(self.clk_hz), 6)
        prescaler = Signal(width - 1)
        m.d.sync += prescaler.eq(prescaler + 1)
        window = prescaler[:width - 5] == 0         # every 2**(width-5) cycles: 1/32 .. 1/16 s
        shown = []
        for event in (urx.o.valid | (utx.i.valid & utx.i.ready), n.cyc):
            seen, lit = Signal(), Signal()
            with m.If(window):
                m.d.sync += [lit.eq(seen | event), seen.eq(0)]
            with m.Elif(event):
                m.d.sync += seen.eq(1)
            shown.append(lit)
        m.d.comb += self.status.eq(Cat(prescaler[-1], *shown, npu.irq, bridge.failed))
        return m
