"""The board SoC's Wishbone pieces in Amaranth's simulator: RAM, arbiter, width adapter."""

import random
from collections import deque

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from npu.hdl import wishbone
from npu.hdl.interconnect import Arbiter, Upsizer
from npu.hdl.ram import WishboneRAM, ram_bus_signature


class Master:
    """A pipelined master issuing random reads and writes to its own words, checking
    every answer against its model; it drops ``cyc`` now and then between bursts.
    :meth:`drive` then :meth:`sample` once per cycle (all masters drive before any
    samples, so each sees the stall its neighbours' requests cause)."""

    def __init__(self, bus, *, words, base, ops, seed, data_width=32):
        self.bus, self.words, self.base = bus, words, base
        self.rng = random.Random(seed)
        self.remaining = ops
        self.nbytes = data_width // 8
        self.mask = (1 << data_width) - 1
        self.model = {}
        self.pending, self.request, self.stalled, self.cyc = deque(), None, 0, False
        self.errors, self.reads, self.longest_stall = [], 0, 0

    @property
    def done(self):
        return not self.remaining and self.request is None and not self.pending

    def drive(self, ctx):
        b, rng = self.bus, self.rng
        if self.request is None and self.remaining and rng.random() < 0.7:
            addr = self.base + rng.randrange(self.words)
            if rng.random() < 0.5:
                sel = rng.randrange(1, 1 << self.nbytes)
                data = rng.getrandbits(8 * self.nbytes)
                byte_mask = sum(0xFF << 8 * i for i in range(self.nbytes) if sel >> i & 1)
                self.model[addr] = (self.model.get(addr, 0) & ~byte_mask | data & byte_mask) & self.mask
                self.request = (True, addr, data, sel, None)
            else:
                self.request = (False, addr, 0, (1 << self.nbytes) - 1, self.model.get(addr, 0))
            self.remaining -= 1
        if self.request is None and not self.pending and rng.random() < 0.2:
            self.cyc = False                        # end of a burst: nothing is outstanding
        elif self.request is not None:
            self.cyc = True
        ctx.set(b.cyc, self.cyc)
        ctx.set(b.stb, self.request is not None)
        if self.request is not None:
            we, addr, data, sel, _ = self.request
            ctx.set(b.we, we), ctx.set(b.adr, addr), ctx.set(b.dat_w, data), ctx.set(b.sel, sel)

    def sample(self, ctx):
        b = self.bus
        if ctx.get(b.ack):
            if not self.pending:
                self.errors.append("an answer without a request")
                return
            we, addr, _, _, expected = self.pending.popleft()
            if not we:
                self.reads += 1
                if ctx.get(b.dat_r) != expected:
                    self.errors.append((addr, ctx.get(b.dat_r), expected))
        if self.request is not None:
            if ctx.get(b.stall):
                self.stalled += 1
                self.longest_stall = max(self.longest_stall, self.stalled)
            else:
                self.pending.append(self.request)
                self.request, self.stalled = None, 0


def simulate(dut, masters, cycles):
    async def bench(ctx):
        for _ in range(cycles):
            if all(master.done for master in masters):
                return
            for master in masters:
                master.drive(ctx)
            for master in masters:
                master.sample(ctx)
            await ctx.tick()
        raise AssertionError(f"the masters did not finish in {cycles} cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("seed, bank_bytes", [(1, None), (2, None), (3, 256), (4, 64)])
def test_arbiter_shares_ram_between_streaming_masters(seed, bank_bytes):
    """(With ``bank_bytes``, the RAM in four banks answering four cycles after a request, or in
    sixteen banks in four groups answering six cycles after it.)"""
    m = Module()
    m.submodules.ram = ram = WishboneRAM(size=1024, data_width=32, bank_bytes=bank_bytes)
    m.submodules.arbiter = arbiter = Arbiter(ports=2, addr_width=8, data_width=32)
    wiring.connect(m, arbiter.slave, ram.bus)
    masters = [Master(arbiter.masters[i], words=128, base=128 * i, ops=400, seed=seed * 10 + i) for i in range(2)]
    # (A hand-over waits for the owner's answers: the cycles grow with the RAM's latency.)
    simulate(m, masters, 2000 + 1000 * ram.latency)
    for master in masters:
        assert master.errors == []
        assert master.reads > 100
        # Sharing is request by request: nobody waits long for the other (a handover waits
        # for the owner's answers: the RAM's latency on either side).
        assert master.longest_stall <= 4 + 2 * ram.latency


@pytest.mark.parametrize("skid", [True, False])
def test_request_slices_in_front_of_the_arbiter(skid):
    """Register slices (with and without skid entry) between the masters and the arbiter:
    every answer still reaches its master in order, with the right data."""
    m = Module()
    m.submodules.ram = ram = WishboneRAM(size=1024, data_width=32)
    m.submodules.arbiter = arbiter = Arbiter(ports=2, addr_width=8, data_width=32)
    wiring.connect(m, arbiter.slave, ram.bus)
    ups = []
    for i in range(2):
        sig = wishbone.Signature(addr_width=8, data_width=32, with_err=False)
        m.submodules[f"slice{i}"] = s = wishbone.RequestSlice(sig, skid=skid)
        wiring.connect(m, s.down, arbiter.masters[i])
        ups.append(s.up)
    masters = [Master(ups[i], words=128, base=128 * i, ops=300, seed=7 + i) for i in range(2)]
    simulate(m, masters, 6000)
    for master in masters:
        assert master.errors == []
        assert master.reads > 80


def test_request_register_before_a_slave_that_never_stalls():
    """The RAM's request register (``slave_stalls=False``): the masters are never stalled by
    it, and every answer still reaches its master in order, with the right data."""
    m = Module()
    m.submodules.ram = ram = WishboneRAM(size=1024, data_width=32)
    m.submodules.arbiter = arbiter = Arbiter(ports=2, addr_width=8, data_width=32)
    sig = wishbone.Signature(addr_width=8, data_width=32, with_err=False)
    m.submodules.ram_slice = s = wishbone.RequestSlice(sig, slave_stalls=False)
    wiring.connect(m, arbiter.slave, s.up)
    wiring.connect(m, s.down, ram.bus)
    masters = [Master(arbiter.masters[i], words=128, base=128 * i, ops=300, seed=11 + i) for i in range(2)]
    simulate(m, masters, 6000)
    for master in masters:
        assert master.errors == []
        assert master.reads > 80


@pytest.mark.parametrize("wide", [64, 128])
def test_upsizer_lanes(wide):
    m = Module()
    m.submodules.ram = ram = WishboneRAM(size=256, data_width=wide)
    m.submodules.up = up = Upsizer(addr_width=ram_bus_signature(size=256, data_width=wide).addr_width,
                                   wide_width=wide)
    wiring.connect(m, up.wide, ram.bus)
    master = Master(up.narrow, words=256 // 4, base=0, ops=300, seed=wide)
    simulate(m, [master], 5000)
    assert master.errors == [] and master.reads > 50


@pytest.mark.parametrize("kwargs, message", [
    ({"size": 1020, "data_width": 64}, "size = 1020 is invalid: must be a positive multiple of 8 bytes"),
    ({"size": 1024, "data_width": 12}, "data_width = 12 is invalid: must be a multiple of 8 from 8 to 128"),
    ({"size": 1024, "data_width": 32, "bank_bytes": 384}, "bank_bytes = 384 is invalid: must be a power of two"),
    ({"size": 1024, "data_width": 32, "bank_bytes": 2048}, "bank_bytes = 2048 is invalid: .* divides size = 1024"),
])
def test_ram_parameters_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WishboneRAM(**kwargs)
