"""The host's UART on a simulated board's pins (cocotb), usable as a host-link transport.

:class:`UartModel` drives the board's ``uart_rx`` and watches its ``uart_tx`` at the bit
rate of the bitstream (``divisor`` clock cycles per bit), 8N1. It offers the transport
interface of :mod:`npu.firmware.hostlink` (``send``, ``recv``, ``now``, ``baud``,
``latency``, ``name``), so :class:`~npu.firmware.hostlink.HostLink` and
:class:`~npu.firmware.hostlink.BoardDriver` run unchanged against the Verilog; time is
the simulation's.
"""

import cocotb
from cocotb.triggers import ClockCycles, Event, FallingEdge, First, Timer
from cocotb.utils import get_sim_time

__all__ = ["UartModel"]


class UartModel:
    """A UART attached to ``dut.<rx>`` (driven) and ``dut.<tx>`` (sampled mid-bit).

    Parameters
    ----------
    dut : cocotb handle of the board top level.
    divisor : int
        Clock cycles per bit (the bitstream's ``clk_hz / baud``).
    clk_hz : float
        The simulated clock frequency: ``baud = clk_hz / divisor``.

    Attributes
    ----------
    framing_errors : int
        Bytes from the board whose stop bit was low (each one is dropped).
    sent, received : int
        Bytes sent to and received from the board.
    """

    def __init__(self, dut, *, divisor, clk_hz, rx="uart_rx", tx="uart_tx", clock=None):
        self.dut = dut
        self.divisor = divisor
        self.baud = clk_hz / divisor
        self.latency = 0.0
        self.name = "the simulated board"
        self.clock = dut.clk if clock is None else clock
        self._rx = getattr(dut, rx)
        self._tx = getattr(dut, tx)
        self._buffer = bytearray()
        self._arrived = Event()
        self.framing_errors = self.sent = self.received = 0
        self._rx.value = 1
        self._task = None

    def start(self):
        """Start watching the board's transmit line."""
        if self._task is None:
            self._task = cocotb.start_soon(self._monitor())
        return self

    def now(self):
        return get_sim_time("sec")

    async def send_byte(self, byte, *, stop=1):
        """One character: start bit, 8 data bits LSB first, stop bit (``stop=0`` for a framing error)."""
        for bit in [0, *((byte >> i) & 1 for i in range(8)), stop]:
            self._rx.value = bit
            await ClockCycles(self.clock, self.divisor)
        self._rx.value = 1
        if not stop:
            await ClockCycles(self.clock, self.divisor)
        self.sent += 1

    async def send(self, data):
        for byte in data:
            await self.send_byte(byte)

    async def recv(self, n, timeout):
        """Up to ``n`` received bytes; fewer if ``timeout`` seconds of simulated time pass."""
        deadline = self.now() + timeout
        while len(self._buffer) < n:
            remaining = deadline - self.now()
            if remaining <= 0:
                break
            self._arrived.clear()
            await First(self._arrived.wait(), Timer(max(1, round(remaining * 1e9)), "ns"))
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    async def _monitor(self):
        tx, d = self._tx, self.divisor
        while True:
            await FallingEdge(tx)
            await ClockCycles(self.clock, d // 2)
            if int(tx.value):
                continue                                # a glitch, not a start bit
            byte = 0
            for i in range(8):
                await ClockCycles(self.clock, d)
                byte |= int(tx.value) << i
            await ClockCycles(self.clock, d)
            if not int(tx.value):
                self.framing_errors += 1
                continue
            self._buffer.append(byte)
            self.received += 1
            self._arrived.set()
