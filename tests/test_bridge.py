"""The board link's gateware in Amaranth's simulator (fast, no Verilog): UART and frame
bridge, driven with frames from the host codec (:mod:`npu.firmware.hostlink`)."""

import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from npu.firmware.hostlink import decode_frame, encode_request, frame_length
from npu.hdl.bridge import INFO_ADDR, Bridge, Command, Status
from npu.hdl.uart import UARTRx, UARTTx

BYTE_TIMEOUT, BUS_TIMEOUT, MAX_WORDS = 60, 20, 8


def simulate(dut, *benches, processes=()):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for bench in benches:
        sim.add_testbench(bench)
    for process in processes:
        sim.add_process(process)
    sim.run()


# -- UART --------------------------------------------------------------------------------

@pytest.mark.parametrize("divisor", [4, 5, 7, 16])
def test_uart_loopback(divisor):
    m = Module()
    m.submodules.tx = tx = UARTTx(divisor=divisor)
    m.submodules.rx = rx = UARTRx(divisor=divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    sent = [0x00, 0xFF, 0x55, 0xAA, *random.Random(divisor).choices(range(256), k=12)]
    got, errors = [], []

    async def bench(ctx):
        pending = list(sent)
        for _ in range(20 * divisor * len(sent)):
            ctx.set(tx.i.valid, bool(pending))
            ctx.set(tx.i.payload, pending[0] if pending else 0)
            ctx.set(rx.o.ready, 1)
            if ctx.get(rx.o.valid):
                got.append(ctx.get(rx.o.payload))
            if ctx.get(rx.error):
                errors.append(1)
            if pending and ctx.get(tx.i.ready):
                pending.pop(0)
            await ctx.tick()
            if len(got) == len(sent):
                break

    simulate(m, bench)
    assert got == sent and not errors


def test_uart_tx_bit_timing():
    """Start bit, LSB first, stop bit, each exactly ``divisor`` cycles."""
    tx = UARTTx(divisor=6)
    line = []

    async def bench(ctx):
        ctx.set(tx.i.valid, 1)
        ctx.set(tx.i.payload, 0b1011_0010)
        await ctx.tick()
        ctx.set(tx.i.valid, 0)
        for _ in range(6 * 11):
            line.append(ctx.get(tx.tx))
            await ctx.tick()

    simulate(tx, bench)
    bits = [0] + [(0b1011_0010 >> i) & 1 for i in range(8)] + [1]
    assert line[:60] == [b for b in bits for _ in range(6)]
    assert line[60:] == [1] * 6


def test_uart_rx_framing_error_and_recovery():
    """A low stop bit is one error pulse and no byte; a held-low line (break) is one error;
    the next good byte is received."""
    d = 8
    rx = UARTRx(divisor=d)
    got, errors = [], []

    def frame(byte, stop=1):
        return [0] + [(byte >> i) & 1 for i in range(8)] + [stop]

    line = [1] * 5 + frame(0x3C, stop=0) + [1] * 3 + [0] * 30 + [1] * 4 + frame(0xC3) + [1] * 4

    async def bench(ctx):
        ctx.set(rx.o.ready, 1)
        for bit in line:
            ctx.set(rx.rx, bit)
            for _ in range(d):
                await ctx.tick()
                if ctx.get(rx.o.valid):
                    got.append(ctx.get(rx.o.payload))
                errors.append(ctx.get(rx.error))

    simulate(rx, bench)
    assert got == [0xC3]
    assert sum(errors) == 2          # the bad stop bit, and the break


@pytest.mark.parametrize("divisor", [3, 2.5, True])
def test_uart_divisor_checked(divisor):
    with pytest.raises(ValueError, match=r"divisor = .* is invalid: must be an integer of at least 4"):
        UARTRx(divisor=divisor)


# -- bridge ----------------------------------------------------------------------------------

INFO = [0x4255504E, 0x0008_0100, 0x1000_0000, 4096, 12_000_000, 115200, BYTE_TIMEOUT, BUS_TIMEOUT]


class BusModel:
    """A word memory behind the bridge's master: err at ERR_ADDR, no answer at HANG_ADDR,
    the info block (read-only: writes answer err), random stall."""

    ERR_ADDR, HANG_ADDR = 0x2000_0000, 0x3000_0000

    def __init__(self, bus, seed=0):
        self.bus = bus
        self.mem = {(INFO_ADDR >> 2) + i: w for i, w in enumerate(INFO)}
        self.rng = random.Random(seed)
        self.log = []

    async def process(self, ctx):
        b = self.bus
        async for _, _, cyc, stb, we, adr, dat_w, stall in ctx.tick().sample(b.cyc, b.stb, b.we, b.adr, b.dat_w,
                                                                              b.stall):
            ctx.set(b.ack, 0)
            ctx.set(b.err, 0)
            if cyc and stb and not stall:
                byte = adr << 2
                if byte == self.HANG_ADDR:
                    pass
                elif byte == self.ERR_ADDR or (we and (INFO_ADDR >> 2) <= adr < (INFO_ADDR >> 2) + len(INFO)):
                    ctx.set(b.err, 1)
                else:
                    if we:
                        self.mem[adr] = dat_w
                    ctx.set(b.dat_r, self.mem.get(adr, 0))
                    ctx.set(b.ack, 1)
                    self.log.append((byte, we))
            ctx.set(b.stall, self.rng.random() < 0.3)


def run_bridge(items, *, seed=0):
    """Send each item and collect every response frame; returns (responses, bus model).

    An item is a frame's bytes, or a list of pieces: bytes, and "ERR" for a framing-error
    pulse from the UART. Like the host, the bench waits for the bridge to finish
    answering before it sends the next item."""
    dut = Bridge(byte_timeout=BYTE_TIMEOUT, bus_timeout=BUS_TIMEOUT, max_words=MAX_WORDS)
    bus = BusModel(dut.bus, seed)
    out = bytearray()
    rng = random.Random(seed)

    async def bench(ctx):
        async def cycle():
            ready = rng.random() < 0.5
            ctx.set(dut.tx.ready, ready)
            if ready and ctx.get(dut.tx.valid):
                out.append(ctx.get(dut.tx.payload))
            await ctx.tick()

        async def until_idle():
            for _ in range(40 * BYTE_TIMEOUT):
                if not ctx.get(dut.busy):
                    return
                await cycle()
            raise AssertionError("the bridge is still busy")

        for item in items:
            await until_idle()
            for piece in item if isinstance(item, list) else [item]:
                if piece == "ERR":
                    ctx.set(dut.rx_error, 1)
                    await cycle()
                    ctx.set(dut.rx_error, 0)
                    continue
                for byte in piece:
                    ctx.set(dut.rx.valid, 1)
                    ctx.set(dut.rx.payload, byte)
                    await cycle()
                    ctx.set(dut.rx.valid, 0)
                    for _ in range(3):
                        await cycle()
        await cycle()
        await until_idle()

    simulate(dut, bench, processes=[bus.process])
    responses, data = [], bytes(out)
    while data:
        n = frame_length(data[3]) if len(data) >= 4 else len(data) + 1
        responses.append(decode_frame(data[:n]))
        data = data[n:]
    return responses, bus


def test_bridge_write_read_info():
    words = [0x11223344, 0xDEADBEEF, 0, 0xFFFFFFFF, 7]
    responses, bus = run_bridge([
        encode_request(Command.WRITE, 1, [0x100, *words]),
        encode_request(Command.READ, 2, [0x104, 4]),
        encode_request(Command.INFO, 3),
        encode_request(Command.WRITE, 4, [0x200, *range(MAX_WORDS)]),
        encode_request(Command.READ, 5, [0x200, MAX_WORDS]),
    ])
    assert responses == [(Status.OK, 1, []), (Status.OK, 2, words[1:]), (Status.OK, 3, INFO),
                         (Status.OK, 4, []), (Status.OK, 5, list(range(MAX_WORDS)))]
    assert [addr for addr, we in bus.log if we][:5] == [0x100 + 4 * i for i in range(5)]


def flip(frame, i):
    """``frame`` with byte ``i`` damaged."""
    frame = bytearray(frame)
    frame[i] ^= 0x41
    return bytes(frame)


@pytest.mark.parametrize("items, status, seq, payload", [
    ([flip(encode_request(Command.READ, 9, [0x100, 1]), -1)], Status.BAD_CRC, 9, []),
    ([flip(encode_request(Command.WRITE, 9, [0x100, 1]), 9)], Status.BAD_CRC, 9, []),
    ([encode_request(Command.WRITE, 9, [0x100, 5, 6])[:9]], Status.TIMEOUT, 9, []),
    ([b"\x00" + encode_request(Command.INFO, 9)], Status.BAD_SYNC, 0, []),
    ([[encode_request(Command.INFO, 9)[:3], "ERR", encode_request(Command.INFO, 9)[3:]]], Status.FRAMING, 9, []),
    ([encode_request(0x7E, 9, [0x100])], Status.UNKNOWN_COMMAND, 9, []),
    ([encode_request(Command.READ, 9, [0x100, 0])], Status.BAD_LENGTH, 9, []),
    ([encode_request(Command.READ, 9, [0x100, MAX_WORDS + 1])], Status.BAD_LENGTH, 9, []),
    ([encode_request(Command.READ, 9, [0x100])], Status.BAD_LENGTH, 9, []),
    ([encode_request(Command.INFO, 9, [0])], Status.BAD_LENGTH, 9, []),
    ([encode_request(Command.WRITE, 9, [0x100])], Status.BAD_LENGTH, 9, []),
    ([encode_request(Command.WRITE, 9, [0x100, *range(MAX_WORDS + 1)])], Status.TOO_LONG, 9, []),
    ([encode_request(Command.READ, 9, [0x102, 1])], Status.BAD_ADDRESS, 9, []),
    ([encode_request(Command.READ, 9, [BusModel.ERR_ADDR - 8, 4])], Status.BUS_ERROR, 9, [2]),
    ([encode_request(Command.WRITE, 9, [INFO_ADDR, 1])], Status.BUS_ERROR, 9, [0]),
    ([encode_request(Command.READ, 9, [BusModel.HANG_ADDR, 2])], Status.BUS_TIMEOUT, 9, [0]),
], ids=["bad-crc", "bad-data", "truncated", "bad-sync", "framing", "unknown-command", "read-count-0",
        "read-count-too-big", "read-no-count", "info-with-payload", "write-no-data", "too-long", "misaligned",
        "bus-error", "write-read-only", "bus-timeout"])
def test_bridge_answers_every_bad_frame_once(items, status, seq, payload):
    """Each bad frame gets exactly one error answer, and the link works afterwards."""
    responses, _ = run_bridge([*items, encode_request(Command.READ, 10, [INFO_ADDR, 2])])
    assert responses == [(status, seq, payload), (Status.OK, 10, INFO[:2])]


def test_bridge_bus_error_keeps_earlier_words():
    responses, bus = run_bridge([encode_request(Command.WRITE, 1, [BusModel.ERR_ADDR - 8, 1, 2, 3]),
                                 encode_request(Command.READ, 2, [BusModel.ERR_ADDR - 8, 2])])
    assert responses == [(Status.BUS_ERROR, 1, [2]), (Status.OK, 2, [1, 2])]


@pytest.mark.parametrize("kwargs, message", [
    ({"byte_timeout": 8}, "byte_timeout = 8 is invalid: must be an integer from 16"),
    ({"byte_timeout": 100, "bus_timeout": 0}, "bus_timeout = 0 is invalid: must be an integer from 2"),
    ({"byte_timeout": 100, "max_words": 255}, "max_words = 255 is invalid: must be an integer from 1 to 254"),
    ({"byte_timeout": 100, "max_words": 4}, "info_words = 8 is invalid: must be at most max_words = 4"),
])
def test_bridge_parameters_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Bridge(**kwargs)
