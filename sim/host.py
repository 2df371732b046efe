"""Driving the simulated NPU through its registers, as a host driver does.

:class:`SimHost` owns a cocotb simulation of the generated ``npu`` top level: it
attaches a Wishbone memory model to the DMA master, programs the registers through
the CSR slave, writes command programs into a ring in memory, starts them and waits
for the interrupt. Every wait is bounded; a hang fails with the NPU's status.
"""

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer

from ..firmware.isa import INSTRUCTION_BYTES, encode_program
from ..hdl.regs import PERF_COUNTERS, REGISTERS, field_of, register
from .memory import MemoryImage
from .wishbone import WishboneCSR, WishboneMemory

__all__ = ["SimHost", "REG"]

#: Register byte offsets by name.
REG = {reg.name: reg.offset for reg in REGISTERS}
_START = 1 << field_of("CTRL", "START").offset
_SOFT_RESET = 1 << field_of("CTRL", "SOFT_RESET").offset
_PERF_CLEAR = 1 << field_of("CTRL", "PERF_CLEAR").offset
_ERROR_CODE = field_of("STATUS", "ERROR_CODE")


class SimHost:
    """The NPU top level under cocotb, with a memory on its DMA master."""

    def __init__(self, dut, config, memory: MemoryImage, *, wait_states=(0, 0), stall_prob=0.0, error_if=None,
                 seed=0, classic_csr=False):
        self.dut = dut
        self.config = config
        self.memory = memory
        self.bus = WishboneMemory(dut, memory, prefix="bus", data_width=config.bus_width,
                                  wait_states=wait_states, stall_prob=stall_prob, error_if=error_if, seed=seed)
        self.csr = WishboneCSR(dut, prefix="csr", classic=classic_csr, timeout=50,
                               names={offset: name for name, offset in REG.items()})
        self.cycles = 0

    async def start(self):
        """Clock, reset, and the memory model."""
        cocotb.start_soon(Clock(self.dut.clk, 10, unit="ns").start())
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        self.bus.start()
        await ClockCycles(self.dut.clk, 2)

    async def read(self, name):
        return await self.csr.read(REG[name])

    async def write(self, name, value):
        await self.csr.write(REG[name], value)

    async def soft_reset(self):
        await self.write("CTRL", _SOFT_RESET)
        await ClockCycles(self.dut.clk, 2)

    async def configure(self, *, ring_base, ring_size, window, head=0, irq_enable=0b11):
        for name, value in (("RING_BASE", ring_base), ("RING_SIZE", ring_size), ("RING_HEAD", head),
                            ("WINDOW_BASE", window[0]), ("WINDOW_LIMIT", window[1]), ("IRQ_ENABLE", irq_enable)):
            await self.write(name, value)

    def write_program(self, ring_base, program, first_slot=0):
        """Put ``program`` into the ring at ``first_slot`` (no wrap); return the slot after it."""
        data = encode_program(program)
        self.memory.write(ring_base + first_slot * INSTRUCTION_BYTES, data)
        return first_slot + len(program)

    async def run(self, tail, *, timeout_cycles, clear_counters=True):
        """Set RING_TAIL, start, and wait for ``irq`` (END or an error); return :meth:`status`."""
        await self.write("RING_TAIL", tail)
        await self.write("CTRL", _START | (_PERF_CLEAR if clear_counters else 0))
        started = cocotb.utils.get_sim_time("ns")
        if not int(self.dut.irq.value):
            fired = await First(RisingEdge(self.dut.irq), Timer(10 * timeout_cycles, "ns"))
            if not int(self.dut.irq.value):
                status = await self.status()
                raise AssertionError(f"NPU did not finish within {timeout_cycles} cycles: {status}")
            del fired
        self.cycles = int((cocotb.utils.get_sim_time("ns") - started) // 10)
        return await self.status()

    async def status(self):
        value = await self.read("STATUS")
        bits = {f.name: (value >> f.offset) & ((1 << f.width) - 1) for f in register("STATUS").fields}
        out = {"busy": bits["BUSY"], "done": bits["DONE"], "error": bits["ERROR"], "waiting": bits["WAITING"],
               "error_code": bits["ERROR_CODE"]}
        for name in ("ERROR_ADDR", "ERROR_CMD", "RING_HEAD", "IRQ_PENDING"):
            out[name.lower()] = await self.read(name)
        return out

    async def ack_irq(self):
        await self.write("IRQ_PENDING", 0b11)

    async def counters(self):
        out = {}
        for name in PERF_COUNTERS:
            lo = await self.read(f"PERF_{name.upper()}_LO")
            hi = await self.read(f"PERF_{name.upper()}_HI")
            out[name] = hi << 32 | lo
        return out


assert _ERROR_CODE.width == 8
