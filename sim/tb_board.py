"""cocotb tests of the board system (:class:`npu.boards.soc.BoardSoC`) through its UART.

The host side is the code the ``serial`` backend runs (:class:`~npu.firmware.hostlink.HostLink`,
:class:`~npu.firmware.hostlink.BoardDriver`, :func:`~npu.firmware.runtime.execute`); only
the transport differs: :class:`npu.sim.uart.UartModel` on the board's pins instead of a
serial port. The parameters come in ``NPU_BOARD`` (JSON: the SoC's keyword arguments)
and, for a model run, ``NPU_JOB`` (the compiled model and its feeds, pickled).
"""

import dataclasses
import json
import os
import pickle

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from ..firmware.hostlink import BoardDriver, ConfigMismatch, HostLink, LinkError, encode_request
from ..firmware.isa import End, Load, encode_program
from ..firmware.runtime import DeviceError, execute
from ..hdl.bridge import INFO_ADDR, Command, Status
from ..hdl.regs import MAGIC
from .testbench import config_from_env, write_result
from .uart import UartModel

#: The status LED bits (npu.boards.soc.STATUS_LEDS order).
LINK_ERROR_LED = 4


class Board:
    """Clock, reset and the host link of the simulated board."""

    def __init__(self, dut):
        self.dut = dut
        self.params = json.loads(os.environ["NPU_BOARD"])
        self.config = config_from_env()
        clk_hz, baud = self.params["clk_hz"], self.params["baud"]
        self.clk_hz = clk_hz
        self.uart = UartModel(dut, divisor=round(clk_hz / baud), clk_hz=clk_hz)
        byte_timeout = self.params.get("byte_timeout") or clk_hz // 50
        self.link = HostLink(self.uart, quiet=2 * byte_timeout / clk_hz)

    async def start(self):
        period_ns = 1e9 / self.clk_hz
        assert period_ns == int(period_ns), "clk_hz must give a whole number of ns per cycle"
        cocotb.start_soon(Clock(self.dut.clk, int(period_ns), unit="ns").start())
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        self.uart.start()
        await ClockCycles(self.dut.clk, 2)
        return self

    def seconds(self, cycles):
        return cycles / self.clk_hz


class CheckingDriver(BoardDriver):
    """A BoardDriver that, while the NPU runs, also reads a word of the model's constant
    image from RAM at every poll: the bridge and the NPU's DMA share the RAM, and both
    must see the right data."""

    def __init__(self, link, compiled, **kwargs):
        super().__init__(link, compiled, **kwargs)
        self.addr, data = max(compiled.image, key=lambda region: len(region[1]))
        self.expected = int.from_bytes(data[:4], "little")
        self.checks, self.mismatches = 0, 0

    async def poll(self):
        status = await super().poll()
        self.checks += 1
        self.mismatches += (await self.link.read_words(self.addr, 1))[0] != self.expected
        return status


@cocotb.test()
async def run_model(dut):
    """Load the job's compiled model over the link, run it, write outputs and per-layer figures."""
    board = await Board(dut).start()
    with open(os.environ["NPU_JOB"], "rb") as f:
        job = pickle.load(f)
    compiled = job["compiled"]
    driver = CheckingDriver(board.link, compiled, run_timeout=board.seconds(job["run_cycles"]))
    info = await driver.load()
    outputs, stats = await execute(compiled, job["feeds"], driver)
    with open(os.environ["NPU_JOB_OUT"], "wb") as f:
        pickle.dump({"outputs": outputs, "stats": stats, "checks": driver.checks, "mismatches": driver.mismatches,
                     "polls": driver.polls, "frames": board.link.frames, "retried": board.link.retried,
                     "ram_size": info.ram_size, "framing_errors": board.uart.framing_errors}, f)


@cocotb.test()
async def bad_frames(dut):
    """Every bad frame gets its error answer; the link works after each; nothing hangs."""
    board = await Board(dut).start()
    link, uart = board.link, board.uart
    info = await link.info()
    ram = info.ram_base
    seen = {}

    async def exchange(name, raw=None, *, pieces=None, expect):
        """Send ``raw`` (or ``pieces``: bytes, or an int sent with a low stop bit) and
        check the one answer; then check the link with a good frame."""
        for piece in pieces or [raw]:
            if isinstance(piece, int):
                await uart.send_byte(piece, stop=0)
            else:
                await uart.send(piece)
        code, seq, words = await link.receive_answer()
        assert code == expect, f"{name}: answered {Status(code).name}, expected {expect.name}"
        assert int(dut.status.value) >> LINK_ERROR_LED & 1, f"{name}: the link-error LED is off"
        assert await link.read_reg("ID_MAGIC") == MAGIC, f"{name}: the link does not work afterwards"
        assert not int(dut.status.value) >> LINK_ERROR_LED & 1, f"{name}: the link-error LED stays on"
        seen[name] = Status(code).name
        return seq, words

    good = encode_request(Command.READ, 0x33, [ram, 1])
    seq, _ = await exchange("bad CRC", good[:-1] + bytes([good[-1] ^ 0x10]), expect=Status.BAD_CRC)
    assert seq == 0x33
    await exchange("truncated", encode_request(Command.WRITE, 0x34, [ram, 1, 2])[:9], expect=Status.TIMEOUT)
    await exchange("unknown command", encode_request(0x55, 0x35, [ram]), expect=Status.UNKNOWN_COMMAND)
    await exchange("misaligned", encode_request(Command.READ, 0x36, [ram + 2, 1]), expect=Status.BAD_ADDRESS)
    await exchange("garbage", b"\x00\x11", expect=Status.BAD_SYNC)
    await exchange("too long", encode_request(Command.WRITE, 0x37, [ram, *range(100)])[:4], expect=Status.TOO_LONG)
    frame = encode_request(Command.INFO, 0x38)
    await exchange("framing", pieces=[frame[:2], frame[2], frame[3:]], expect=Status.FRAMING)
    _, words = await exchange("out of range", encode_request(Command.READ, 0x39, [ram + info.ram_size - 8, 4]),
                              expect=Status.BUS_ERROR)
    assert words == [2], f"out of range: the failing word is {words}, expected [2]"
    await exchange("bus error", encode_request(Command.WRITE, 0x3A, [INFO_ADDR, 0]), expect=Status.BUS_ERROR)

    # The same through the host API: one-line LinkErrors that say what and where.
    for call, where in ((link.read_words(0x2000_0000, 1), "outside the board's address map"),
                        (link.write_words(INFO_ADDR + 4, [1]), "info block: a write to a read-only area")):
        try:
            await call
            raise AssertionError(f"no LinkError ({where})")
        except LinkError as e:
            assert e.status == Status.BUS_ERROR and where in str(e) and "\n" not in str(e), str(e)

    # A frame damaged on its way is sent again.
    class Damaging:
        def __init__(self, inner):
            self.inner, self.damage = inner, 1

        def __getattr__(self, name):
            return getattr(self.inner, name)

        async def send(self, data):
            if self.damage:
                self.damage -= 1
                data = data[:5] + bytes([data[5] ^ 0x80]) + data[6:]
            await self.inner.send(data)

    link.transport = Damaging(uart)
    await link.write_words(ram, [0x1234_5678, 0x9ABC_DEF0])
    assert link.retried == 1, f"retries: {link.retried}"
    link.transport = uart
    assert await link.read_words(ram, 2) == [0x1234_5678, 0x9ABC_DEF0]
    assert await link.read(ram + 1, 5) == bytes.fromhex("56 34 12 f0 de".replace(" ", ""))
    await link.write(ram + 3, b"\xaa\xbb")
    assert await link.read_words(ram, 2) == [0xAA34_5678, 0x9ABC_DEBB]

    # The NPU's DMA master gets err outside the RAM: a program LOADs from there.
    config = board.config
    ring = ram + 0x100
    await link.write(ring, encode_program([Load(buffer=0, rows=1, buf_addr=0, mem_addr=0x2000_0000, stride=0),
                                           End()]))
    for name, value in (("CTRL", 2), ("RING_BASE", ring), ("RING_SIZE", 4), ("RING_HEAD", 0),
                        ("WINDOW_BASE", 0), ("WINDOW_LIMIT", 0xFFFF_FFF0), ("IRQ_ENABLE", 3)):
        await link.write_reg(name, value)

    driver = BoardDriver(link, None, run_timeout=board.seconds(200_000))
    try:
        await driver.run(0, 2)
        raise AssertionError("the NPU did not report the bus error")
    except DeviceError as e:
        assert "BUS_ERROR" in str(e) and "0x20000000" in str(e), str(e)
    await link.write_reg("CTRL", 2)

    # The board identifies its NPU; another configuration is refused in one line naming both.
    await link.identify(config)
    other = dataclasses.replace(config, rows=config.rows * 2)
    try:
        await link.identify(other)
        raise AssertionError("identify accepted another configuration")
    except ConfigMismatch as e:
        assert f"rows {config.rows} (board) vs {other.rows} (host)" in str(e), str(e)
    assert uart.framing_errors == 0
    write_result({"answered": seen, "frames": link.frames, "retried": link.retried})
