"""cocotb tests of the Wishbone bus models (:mod:`npu.sim.wishbone`) on the copy engine.

Run through pytest (``tests/test_wishbone_model.py``), which converts
:class:`npu.sim.wb_selftest.CopyEngine` and passes its data width in ``WB_DATA_WIDTH``.
The expected memory after a copy is computed here from the copy's definition; every
test ends by asserting that the memory model saw no protocol violation.
"""

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

from .memory import MemoryImage
from .wb_selftest import (CTRL_ABORT, CTRL_IGNORE_STALL, CTRL_START, HANG_OFFSET, ID_VALUE, REGS,
                          STATUS_ABORTED, STATUS_BUSY, STATUS_DONE, STATUS_ERROR)
from .wishbone import WishboneBusError, WishboneCSR, WishboneMemory

MEM_BASE, MEM_SIZE = 0x4000, 0x2000
DEPTH = 64  # CopyEngine's default buffer


def _seed():
    return int(os.environ.get("WB_SEED", "1"))


class CopyTB:
    """Clock, reset, the memory model on ``bus`` and the register driver on ``csr``."""

    def __init__(self, dut, *, classic=False, seed=None, **memory_args):
        self.dut = dut
        self.data_width = int(os.environ.get("WB_DATA_WIDTH", "32"))
        self.nbytes = self.data_width // 8
        self.rng = random.Random(_seed() if seed is None else seed)
        self.image = MemoryImage(MEM_BASE, MEM_SIZE)
        self.image.data[:] = bytes(self.rng.getrandbits(8) for _ in range(MEM_SIZE))
        self.mem = WishboneMemory(dut, self.image, data_width=self.data_width, seed=self.rng.getrandbits(32),
                                  **memory_args)
        self.csr = WishboneCSR(dut, classic=classic, names={v: k for k, v in REGS.items()})

    async def reset(self):
        cocotb.start_soon(Clock(self.dut.clk, 10, unit="ns").start())
        self.dut.rst.value = 1
        self.mem.start()
        for _ in range(3):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        return self

    async def copy(self, src, dst, n, *, timeout=5000):
        """Run one copy through the registers; return (STATUS, CYCLES)."""
        await self.csr.write(REGS["SRC"], src)
        await self.csr.write(REGS["DST"], dst)
        await self.csr.write(REGS["LEN"], n)
        await self.csr.write(REGS["CTRL"], CTRL_START)
        return await self.wait_done(timeout)

    async def wait_done(self, timeout=5000):
        for _ in range(timeout):
            status = await self.csr.read(REGS["STATUS"])
            if not status & STATUS_BUSY:
                assert status & STATUS_DONE, f"STATUS {status:#x}: idle but not done"
                return status, await self.csr.read(REGS["CYCLES"])
        raise AssertionError(f"copy still busy after {timeout} STATUS reads")

    def expect_copy(self, expected, src, dst, n, sel=None):
        """Apply a copy of ``n`` words to the reference image ``expected``."""
        for i in range(n):
            word = expected.read_word(src + i * self.nbytes, self.nbytes)
            expected.write_word(dst + i * self.nbytes, word, self.nbytes, sel)

    def check_memory(self, expected, what):
        diff = self.image.diff(expected)
        assert not diff, f"{what}: memory differs at " + ", ".join(
            f"{a:#x} (got {g:#04x}, expected {e:#04x})" for a, g, e in diff)

    def check_clean(self):
        assert not self.mem.violations, f"protocol violations: {self.mem.violations[:5]}"
        assert not self.mem.pending, f"requests left unanswered: {self.mem.pending[:5]}"

    def random_copy_args(self, n):
        """Non-overlapping word-aligned source and destination of ``n`` words."""
        words = MEM_SIZE // self.nbytes
        while True:
            s, d = self.rng.randrange(words - n + 1), self.rng.randrange(words - n + 1)
            if abs(s - d) >= n:
                return MEM_BASE + s * self.nbytes, MEM_BASE + d * self.nbytes


def _runs(cycles):
    """Lengths of the runs of consecutive cycle numbers in ``cycles``."""
    runs = [1]
    for a, b in zip(cycles, cycles[1:]):
        if b == a + 1:
            runs[-1] += 1
        else:
            runs.append(1)
    return runs


@cocotb.test()
async def copy_zero_wait(dut):
    """No wait states, no stalls: one bus word per cycle in each phase of the copy."""
    tb = await CopyTB(dut).reset()
    for n in (1, 2, 17, DEPTH):
        src, dst = tb.random_copy_args(n)
        expected = tb.image.copy()
        tb.expect_copy(expected, src, dst, n)
        first = len(tb.mem.log)
        status, cycles = await tb.copy(src, dst, n)
        assert status == STATUS_DONE, f"copy of {n}: STATUS {status:#x}"
        tb.check_memory(expected, f"copy of {n} words")
        log = tb.mem.log[first:]
        reads, writes = [a for a in log if not a.we], [a for a in log if a.we]
        assert [a.addr for a in reads] == [src + i * tb.nbytes for i in range(n)]
        assert [a.addr for a in writes] == [dst + i * tb.nbytes for i in range(n)]
        # Back-to-back throughput: the acks of each phase are in consecutive cycles.
        for kind, accesses in (("read", reads), ("write", writes)):
            runs = _runs([a.cycle for a in accesses])
            assert runs == [n], f"copy of {n}: {kind} acks not back to back (runs {runs})"
        gap = writes[0].cycle - reads[-1].cycle
        assert gap <= 2, f"{gap} cycles between the last read and the first write"
        assert cycles <= 2 * n + 4, f"copy of {n} words took {cycles} cycles (expected about {2 * n})"
    assert tb.mem.stall_cycles == 0 and tb.mem.errors == 0
    tb.check_clean()


@cocotb.test()
async def copy_random_waits(dut):
    """Random wait states 0..15 and stall probability 0.3: every copy still correct."""
    tb = await CopyTB(dut, wait_states=(0, 15), stall_prob=0.3).reset()
    expected = tb.image.copy()
    total = 0
    for n in (1, DEPTH, 5, 33, tb.rng.randint(2, DEPTH)):
        src, dst = tb.random_copy_args(n)
        tb.expect_copy(expected, src, dst, n)
        status, cycles = await tb.copy(src, dst, n, timeout=20000)
        assert status == STATUS_DONE, f"copy of {n}: STATUS {status:#x}"
        tb.check_memory(expected, f"copy of {n} words from {src:#x} to {dst:#x}")
        total += n
    assert tb.mem.reads == total and tb.mem.writes == total
    assert tb.mem.stall_cycles > 0, "stall_prob 0.3 never stalled a request"
    assert tb.mem.errors == 0 and not tb.mem.abandoned
    tb.check_clean()


@cocotb.test()
async def byte_select(dut):
    """Writes honour sel: with WSEL = 0b...0101 only the even bytes of each word change."""
    tb = await CopyTB(dut, wait_states=(0, 3), stall_prob=0.2).reset()
    sel = int("01" * (tb.nbytes // 2), 2) if tb.nbytes > 1 else 1
    await tb.csr.write(REGS["WSEL"], sel)
    assert await tb.csr.read(REGS["WSEL"]) == sel
    expected = tb.image.copy()
    src, dst = tb.random_copy_args(9)
    tb.expect_copy(expected, src, dst, 9, sel=sel)
    status, _ = await tb.copy(src, dst, 9)
    assert status == STATUS_DONE
    assert {a.sel for a in tb.mem.log if a.we} == {sel}
    tb.check_memory(expected, "copy with byte select")
    tb.check_clean()


@cocotb.test()
async def error_injection(dut):
    """err from error_if and from outside the image: reported, memory unchanged there."""
    bad = {}
    tb = CopyTB(dut, wait_states=(0, 4), stall_prob=0.2, error_if=lambda addr, we: bad.get(addr) == we)
    await tb.reset()
    nb = tb.nbytes

    # A read error: the copy stops before writing anything.
    src, dst = tb.random_copy_args(16)
    bad = {src + 5 * nb: False}
    expected = tb.image.copy()
    status, _ = await tb.copy(src, dst, 16)
    assert status == STATUS_DONE | STATUS_ERROR, f"STATUS {status:#x} after a read error"
    assert [(a.addr, a.we) for a in tb.mem.errored] == [(src + 5 * nb, False)]
    assert not any(a.we for a in tb.mem.log)
    tb.check_memory(expected, "copy stopped by a read error")

    # A write error: the words before it are written, the erred word is not.
    src, dst = tb.random_copy_args(16)
    bad = {dst + 7 * nb: True}
    tb.expect_copy(expected, src, dst, 7)
    status, _ = await tb.copy(src, dst, 16)
    assert status == STATUS_DONE | STATUS_ERROR, f"STATUS {status:#x} after a write error"
    assert tb.mem.errored[-1][:2] == (dst + 7 * nb, True)
    assert [a.addr for a in tb.mem.log if a.we] == [dst + i * nb for i in range(7)]
    tb.check_memory(expected, "copy stopped by a write error")

    # Outside the image: err, recorded in out_of_range.
    bad = {}
    src = MEM_BASE + MEM_SIZE - 2 * nb
    status, _ = await tb.copy(src, MEM_BASE, 4)
    assert status == STATUS_DONE | STATUS_ERROR
    assert tb.mem.out_of_range == [(MEM_BASE + MEM_SIZE, False)]
    assert tb.mem.errors == 3
    tb.check_memory(expected, "copy from outside the image")

    # The bus still works afterwards.
    src, dst = tb.random_copy_args(8)
    tb.expect_copy(expected, src, dst, 8)
    status, _ = await tb.copy(src, dst, 8)
    assert status == STATUS_DONE
    tb.check_memory(expected, "copy after errors")
    tb.check_clean()


@cocotb.test()
async def abandon_on_abort(dut):
    """Aborting drops cyc: the outstanding requests are abandoned, never answered."""
    tb = await CopyTB(dut, wait_states=(10, 15)).reset()
    expected = tb.image.copy()
    src, dst = tb.random_copy_args(DEPTH)
    await tb.csr.write(REGS["SRC"], src)
    await tb.csr.write(REGS["DST"], dst)
    await tb.csr.write(REGS["LEN"], DEPTH)
    await tb.csr.write(REGS["CTRL"], CTRL_START)
    for _ in range(8):
        await FallingEdge(dut.clk)
    await tb.csr.write(REGS["CTRL"], CTRL_ABORT)
    status, _ = await tb.wait_done()
    assert status == STATUS_DONE | STATUS_ABORTED, f"STATUS {status:#x} after abort"
    answered = len(tb.mem.log)
    assert tb.mem.abandoned, "abort left no request abandoned"
    assert answered + len(tb.mem.abandoned) == tb.mem.requests, \
        f"{answered} answered + {len(tb.mem.abandoned)} abandoned != {tb.mem.requests} requests"
    assert all(not r.we for r in tb.mem.abandoned)
    for _ in range(40):
        await FallingEdge(dut.clk)
    assert len(tb.mem.log) == answered, "a request was answered after cyc dropped"
    tb.check_memory(expected, "aborted copy")

    # Nothing of the abandoned copy leaks into the next one.
    src, dst = tb.random_copy_args(12)
    tb.expect_copy(expected, src, dst, 12)
    status, _ = await tb.copy(src, dst, 12)
    assert status == STATUS_DONE
    tb.check_memory(expected, "copy after an abort")
    tb.check_clean()


@cocotb.test()
async def violation_detected(dut):
    """A master that moves on from a stalled request is reported, and the bus recovers."""
    tb = await CopyTB(dut, stall_prob=0.5).reset()
    src, dst = tb.random_copy_args(DEPTH)
    await tb.csr.write(REGS["SRC"], src)
    await tb.csr.write(REGS["DST"], dst)
    await tb.csr.write(REGS["LEN"], DEPTH)
    await tb.csr.write(REGS["CTRL"], CTRL_START | CTRL_IGNORE_STALL)
    for _ in range(30):
        await FallingEdge(dut.clk)
    assert tb.mem.violations, "adr moving under stall was not reported"
    assert any("adr changed while the request was stalled" in v for v in tb.mem.violations), tb.mem.violations
    # The master lost requests, so it waits for answers that never come: abort it.
    await tb.csr.write(REGS["CTRL"], CTRL_ABORT)
    status, _ = await tb.wait_done()
    assert status & STATUS_ABORTED
    tb.mem.violations.clear()
    expected = tb.image.copy()
    src, dst = tb.random_copy_args(10)
    tb.expect_copy(expected, src, dst, 10)
    status, _ = await tb.copy(src, dst, 10)
    assert status == STATUS_DONE
    tb.check_memory(expected, "copy after a protocol violation")
    tb.check_clean()


async def _csr_access(dut, classic):
    tb = await CopyTB(dut, classic=classic).reset()
    csr = tb.csr
    assert await csr.read(REGS["ID"]) == ID_VALUE
    values = {name: tb.rng.getrandbits(32) for name in ("SRC", "DST", "LEN")}
    for name, value in values.items():
        await csr.write(REGS[name], value)
    for name, value in values.items():
        got = await csr.read(REGS[name])
        assert got == value, f"{name}: wrote {value:#x}, read {got:#x}"
    try:
        await csr.read(0x40)
    except WishboneBusError as e:
        assert "0x40" in str(e), e
    else:
        raise AssertionError("reading an unmapped register did not raise")
    csr.timeout = 20
    try:
        await csr.write(HANG_OFFSET, 1)
    except WishboneBusError:
        raise
    except AssertionError as e:
        assert f"{HANG_OFFSET:#04x}" in str(e) and "20 cycles" in str(e), e
    else:
        raise AssertionError("an access nothing answers did not time out")
    csr.timeout = 100
    assert await csr.read(REGS["ID"]) == ID_VALUE, "the bus is unusable after a timeout"
    assert csr.reads == 5 and csr.writes == 3
    tb.check_clean()


@cocotb.test()
async def csr_pipelined(dut):
    """Pipelined register access: values, err on an unmapped register, timeout on a hang."""
    await _csr_access(dut, classic=False)


@cocotb.test()
async def csr_classic(dut):
    """The same in classic mode (stb held until ack, stall ignored)."""
    await _csr_access(dut, classic=True)
