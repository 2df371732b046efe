"""UART receiver and transmitter, 8N1 (one start bit, 8 data bits LSB first, one stop bit).

Both count ``divisor`` clock cycles per bit: ``divisor = round(clk_hz / baud)``. The
receiver resynchronises on the falling edge of every start bit and samples each bit in
its middle, so it tolerates the usual few percent of baud-rate mismatch.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTRx", "UARTTx", "MIN_DIVISOR"]

#: The smallest clock cycles per bit: the receiver needs a start-bit middle two cycles
#: after the edge it saw through its synchroniser.
MIN_DIVISOR = 4


def _check_divisor(component, divisor):
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < MIN_DIVISOR:
        component._MustUse__silence = True      # never elaborated: no warning about it
        raise ValueError(f"divisor = {divisor!r} is invalid: must be an integer of at least {MIN_DIVISOR} "
                         f"(clock cycles per bit)")


class UARTTx(wiring.Component):
    """8N1 transmitter.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least :data:`MIN_DIVISOR`.

    Members
    -------
    i : In(stream.Signature(8))
        Bytes to send; ``ready`` is high while the transmitter is idle, so a byte is
        taken in the cycle after the previous stop bit ends.
    tx : Out(1)
        The serial line, high when idle (registered: no glitches).
    """

    i: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, *, divisor):
        _check_divisor(self, divisor)
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor))
        bits = Signal(range(11))            # bit periods left, start bit included
        shreg = Signal(9)                   # data bits then the stop bit, shifted out LSB first
        with m.If(bits == 0):
            m.d.comb += self.i.ready.eq(1)
            with m.If(self.i.valid):
                m.d.sync += [self.tx.eq(0), shreg.eq(Cat(self.i.payload, 1)), bits.eq(10),
                             timer.eq(self.divisor - 1)]
        with m.Elif(timer == 0):
            # Ones shift in behind the stop bit, so the line is idle after the last period.
            m.d.sync += [self.tx.eq(shreg[0]), shreg.eq(Cat(shreg[1:], 1)), bits.eq(bits - 1),
                         timer.eq(self.divisor - 1)]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
        return m


class UARTRx(wiring.Component):
    """8N1 receiver with a two-flop synchroniser and mid-bit sampling.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least :data:`MIN_DIVISOR`.

    Members
    -------
    rx : In(1)
        The serial line (asynchronous; idle high).
    o : Out(stream.Signature(8))
        Received bytes. ``valid`` stays high until ``ready``; a byte not taken before the
        next one arrives is overwritten, so the consumer must keep up with the line
        (one byte per ``10 * divisor`` cycles).
    error : Out(1)
        One-cycle pulse, registered: a framing error (the stop bit was low). The byte is
        dropped and the receiver waits for the line to return high before it looks for a start bit,
        so a held-low line (break) gives one error, not a stream of zero bytes.
    """

    rx: In(1, init=1)
    o: Out(stream.Signature(8))
    error: Out(1)

    def __init__(self, *, divisor):
        _check_divisor(self, divisor)
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1, stages=2)
        timer = Signal(range(d))
        bits = Signal(range(9))
        shreg = Signal(8)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        m.d.sync += self.error.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):
                    m.next = "IDLE"             # a glitch, not a start bit
                with m.Else():
                    m.d.sync += [timer.eq(d - 1), bits.eq(8)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)), bits.eq(bits - 1), timer.eq(d - 1)]
                    with m.If(bits == 1):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):
                    m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += self.error.eq(1)
                    m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(rx):
                    m.next = "IDLE"
        return m
