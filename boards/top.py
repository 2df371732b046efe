"""The board top level: clock (PLL), reset, the board SoC, the UART pins and the LEDs.

:class:`BoardTop` is what ``npu build`` hands to the amaranth-boards platform. It makes
the NPU clock from the board oscillator (an SB_PLL40 on iCE40, an EHXPLLL on ECP5; none
when the oscillator already runs at the NPU clock), holds the design in reset until the
PLL locks, and wires :class:`~npu.boards.soc.BoardSoC` to the USB-UART and the LEDs. The
on-chip memory is SPRAM on the iCE40UP5K and block RAM on ECP5.
"""

from amaranth.hdl import ClockDomain, ClockSignal, Const, Elaboratable, Instance, Module, ResetSignal, Signal
from amaranth.lib.cdc import ResetSynchronizer

from .clocking import ecp5_pll, ice40_pll
from .soc import STATUS_LEDS, BoardSoC
from .spram import ICE40SPRAM

__all__ = ["BoardTop", "DEFAULT_BAUD"]

#: The host link's default baud rate (the FTDI bridges on these boards run up to 3 Mbaud).
DEFAULT_BAUD = 1_000_000


class BoardTop(Elaboratable):
    """``board`` (:class:`~npu.boards.platforms.Board`) running an NPU of ``config``.

    ``clk_hz`` is the NPU clock to make (the board's target clock when None); after
    elaboration it holds the frequency the PLL actually makes.
    """

    def __init__(self, board, config, *, baud=DEFAULT_BAUD, clk_hz=None):
        self.board = board
        self.config = config
        self.baud = baud
        self.clk_hz = int(clk_hz or board.clk_hz)

    def elaborate(self, platform):
        m = Module()
        board = self.board
        m.domains.sync = ClockDomain("sync")
        locked = self._clock(m, platform)
        buffer = _reset_buffer(board)
        if buffer is None:
            m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")
        else:
            # The synchroniser in a domain of its own (the same clock), whose reset goes
            # through the buffer to every register of ``sync``.
            m.domains.reset_sync = reset_sync = ClockDomain("reset_sync", local=True)
            m.d.comb += reset_sync.clk.eq(ClockSignal("sync"))
            m.submodules.reset_sync = ResetSynchronizer(~locked, domain="reset_sync")
            m.d.comb += ResetSignal("sync").eq(buffer(m, ResetSignal("reset_sync"), "sync_reset"))

        ram = None
        if board.ram == "spram":
            ram = ICE40SPRAM(size=board.ram_bytes, data_width=self.config.bus_width)
        m.submodules.soc = soc = BoardSoC(self.config, ram_bytes=board.ram_bytes, clk_hz=self.clk_hz,
                                          baud=self.baud, ram=ram, reset_buffer=buffer,
                                          ram_bank_bytes=_ram_bank_bytes(board))
        uart = platform.request("uart", 0)
        m.d.comb += [soc.uart_rx.eq(uart.rx.i), uart.tx.o.eq(soc.uart_tx)]

        # Status LEDs, in the order of STATUS_LEDS, as many as the board has.
        for i, (name, number) in enumerate(board.leds[:len(STATUS_LEDS)]):
            led = platform.request(name, number)
            out = led.g.o if hasattr(led, "g") else led.o
            m.d.comb += out.eq(soc.status[i])
        return m

    def _clock(self, m, platform):
        """Drive the ``sync`` clock; return the PLL's lock signal (1 without a PLL)."""
        clk_name = platform.default_clk
        f_in = int(platform.lookup(clk_name).clock.frequency)
        if f_in == self.clk_hz:
            clk = platform.request(clk_name)
            m.d.comb += ClockSignal("sync").eq(clk.i)
            return Const(1)
        locked = Signal()
        clk_out = Signal(name="clk_npu")
        m.d.comb += ClockSignal("sync").eq(clk_out)
        if self.board.family == "ice40":
            divr, divf, divq, filter_range, f = ice40_pll(f_in, self.clk_hz)
            clk = platform.request(clk_name, dir="-")
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE", p_DIVR=divr, p_DIVF=divf, p_DIVQ=divq, p_FILTER_RANGE=filter_range,
                io_PACKAGEPIN=clk.io, i_RESETB=1, i_BYPASS=0,
                o_PLLOUTGLOBAL=clk_out, o_LOCK=locked)
        else:
            clki, clkfb, clkop, f = ecp5_pll(f_in, self.clk_hz)
            clk = platform.request(clk_name)
            m.submodules.pll = Instance(
                "EHXPLLL",
                p_CLKI_DIV=clki, p_CLKFB_DIV=clkfb, p_CLKOP_DIV=clkop, p_CLKOP_ENABLE="ENABLED",
                p_CLKOP_CPHASE=clkop - 1, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP", p_OUTDIVIDER_MUXA="DIVA",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_PLL_LOCK_MODE=0,
                i_CLKI=clk.i, i_CLKFB=clk_out, i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0,
                i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0,
                o_CLKOP=clk_out, o_LOCK=locked,
                a_FREQUENCY_PIN_CLKI=f"{f_in / 1e6:g}", a_FREQUENCY_PIN_CLKOP=f"{f / 1e6:g}")
        self.clk_hz = int(f)
        platform.add_clock_constraint(clk_out, f)
        return locked


def _reset_buffer(board):
    """How a reset reaches its registers: ``buffer(m, reset, name)`` returns the net they
    see (None: the reset as it is).

    nextpnr-ice40 puts a high-fanout reset on a global network by itself; nextpnr-ecp5
    promotes only clocks, so on ECP5 the board's reset and the NPU core's go through a
    DCCA each onto a global (a reset routed in the fabric to every corner of a large
    device took 15 to 17 ns).
    """
    if board.family != "ecp5" or not board.global_resets:
        return None

    def dcca(m, reset, name="core_reset"):
        buffered = Signal(name=f"{name}_global")
        m.submodules[f"{name}_dcca"] = Instance("DCCA", i_CLKI=reset, i_CE=Const(1), o_CLKO=buffered)
        return buffered
    return dcca


#: Block RAM beyond this many bytes is banked (``WishboneRAM``'s ``bank_bytes``): eight
#: ECP5 DP16KD per bank, each bank's read data registered beside it.
RAM_BANK_BYTES = 16 * 1024


def _ram_bank_bytes(board):
    return RAM_BANK_BYTES if board.ram == "bram" and board.ram_bytes > RAM_BANK_BYTES else None
