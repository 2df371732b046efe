"""The host side of the board link in plain Python (fast): the frame codec, and HostLink,
BoardDriver, the runtime's ``serial`` backend and ``npu run --backend serial`` against a
Python model of a board (the bridge's protocol in front of the golden NPU model)."""

import asyncio
import dataclasses

import numpy as np
import pytest
from click.testing import CliRunner

import onnx_models as om
from npu.cli import main
from npu.firmware import hostlink
from npu.firmware.compiler import MEMORY_BASE
from npu.firmware.hostlink import (BoardDriver, ConfigMismatch, FrameError, HostLink, LinkError, crc16, decode_frame,
                                   encode_request, encode_response)
from npu.firmware.runtime import Device, DeviceError
from npu.generators.config import NPUConfig
from npu.generators.regmap import reset_value
from npu.hdl.bridge import (INFO_ADDR, INFO_FIELDS, INFO_MAGIC, PROTOCOL_VERSION, SYNC_REQUEST, Command,
                            Status)
from npu.hdl.regs import REGISTERS, field_of, register
from npu.sim.golden import NPUModel
from npu.sim.memory import MemoryImage

CONFIG = NPUConfig(rows=4, cols=4, bus_width=64, act_depth=128, wgt_depth=64, acc_depth=128, param_depth=8)


# -- codec -----------------------------------------------------------------------------------

def test_crc_is_ccitt_false():
    assert crc16(b"123456789") == 0x29B1
    assert crc16(b"") == 0xFFFF


def test_frame_round_trip_and_layout():
    frame = encode_request(Command.WRITE, 7, [0x1000_0000, 0xDEADBEEF])
    assert frame[:4] == bytes([SYNC_REQUEST, Command.WRITE, 7, 2])
    assert frame[4:8] == (0x1000_0000).to_bytes(4, "little")
    assert crc16(frame[1:]) == 0                    # the CRC goes out high byte first
    assert decode_frame(frame, SYNC_REQUEST) == (Command.WRITE, 7, [0x1000_0000, 0xDEADBEEF])
    assert decode_frame(encode_response(Status.OK, 255, [])) == (0, 255, [])


def test_every_single_byte_damage_is_detected():
    frame = encode_response(Status.OK, 3, [0x01020304, 0xA5A5A5A5, 0])
    for i in range(1, len(frame)):
        for flip in (0x01, 0x80, 0xFF):
            damaged = bytearray(frame)
            damaged[i] ^= flip
            with pytest.raises(FrameError):
                decode_frame(bytes(damaged))
    with pytest.raises(FrameError, match="length field says"):
        decode_frame(frame[:-1])


# -- a board in Python -------------------------------------------------------------------------

class FakeBoard:
    """A transport whose far end behaves like the board: the bridge's protocol in front of
    the NPU's registers (run by the golden model on START), the info block and the RAM.
    Time is simulated: a recv that waits advances the clock. ``drop``/``damage`` spoil the
    next answers."""

    def __init__(self, config=CONFIG, *, ram_bytes=64 * 1024, max_words=16, id_config=None):
        self.name, self.baud, self.latency, self.t = "fake", 1_000_000, 0.001, 0.0
        self.ram = MemoryImage(MEMORY_BASE, ram_bytes)
        self.model = NPUModel(config, self.ram)
        self.info = dict(magic=INFO_MAGIC, version=PROTOCOL_VERSION | max_words << 16, ram_base=MEMORY_BASE,
                         ram_size=ram_bytes, clk_hz=12_000_000, baud=self.baud, byte_timeout=240_000,
                         bus_timeout=256)
        self.regs = {reg.offset: reset_value(reg, id_config or config) for reg in REGISTERS
                     if reg.name.startswith("ID_")}
        self.status, self.irq = 0, 0
        self.max_words = max_words
        self.out = bytearray()
        self.drop = self.damage = 0
        self.requests = []

    def now(self):
        return self.t

    async def recv(self, n, timeout):
        if len(self.out) < n:
            self.t += timeout
        data = bytes(self.out[:n])
        del self.out[:n]
        return data

    async def send(self, data):
        self.t += 10 * len(data) / self.baud
        code, seq, words = decode_frame(data, SYNC_REQUEST)
        self.requests.append(code)
        status, answer = self._execute(code, words)
        frame = bytearray(encode_response(status, seq, answer))
        if self.drop:
            self.drop -= 1
            return
        if self.damage:
            self.damage -= 1
            frame[4] ^= 0x10
        self.out += frame

    def close(self):
        pass

    # The bridge: word accesses one by one; a bus error answers the failing word's index.
    def _execute(self, code, words):
        if code == Command.INFO:
            code, words = Command.READ, [INFO_ADDR, len(INFO_FIELDS)]
        if code not in (Command.READ, Command.WRITE):
            return Status.UNKNOWN_COMMAND, []
        addr, data = words[0], words[1:]
        count = data[0] if code == Command.READ else len(data)
        if not 1 <= count <= self.max_words or (code == Command.READ and len(data) != 1):
            return Status.BAD_LENGTH, []
        out = []
        for i in range(count):
            try:
                if code == Command.READ:
                    out.append(self._read(addr + 4 * i))
                else:
                    self._write(addr + 4 * i, data[i])
            except LookupError:
                return Status.BUS_ERROR, [i]
        return Status.OK, out

    def _read(self, addr):
        if self.ram.contains(addr, 4):
            return self.ram.read_word(addr, 4)
        if INFO_ADDR <= addr < INFO_ADDR + 4 * len(INFO_FIELDS):
            return list(self.info.values())[(addr - INFO_ADDR) // 4]
        if addr < 0x400:
            if addr == register("STATUS").offset:
                return self.status | (self.irq & 1) << field_of("STATUS", "DONE").offset
            if addr == register("IRQ_PENDING").offset:
                return self.irq
            names = {"ERROR_ADDR": "error_addr", "ERROR_CMD": "error_cmd", "RING_HEAD": "head"}
            for name, attr in names.items():
                if addr == register(name).offset:
                    return int(getattr(self.model, attr, 0))
            for i, name in enumerate(self.model.counters):
                lo = register(f"PERF_{name.upper()}_LO").offset
                if addr in (lo, lo + 4):
                    return self.model.counters[name] >> (32 if addr > lo else 0) & 0xFFFF_FFFF
            return self.regs.get(addr, 0)
        raise LookupError(addr)

    def _write(self, addr, value):
        if self.ram.contains(addr, 4):
            return self.ram.write_word(addr, value, 4)
        if addr >= 0x400:
            raise LookupError(addr)
        m = self.model
        names = {"RING_BASE": "ring_base", "RING_SIZE": "ring_size", "RING_HEAD": "head", "RING_TAIL": "tail",
                 "WINDOW_BASE": "window_base", "WINDOW_LIMIT": "window_limit"}
        for name, attr in names.items():
            if addr == register(name).offset:
                setattr(m, attr, value)
        if addr == register("IRQ_PENDING").offset:
            self.irq &= ~value
        if addr == register("CTRL").offset:
            if value & 1 << field_of("CTRL", "PERF_CLEAR").offset:
                m.clear_counters()
            if value & 1 << field_of("CTRL", "START").offset:
                state = m.run()
                m.counters["cycles"] = m.counters["instructions"] + m.counters["macs"]   # no timing model
                if state == "done":
                    self.irq = 1
                else:
                    code = field_of("STATUS", "ERROR_CODE")
                    self.status = 1 << field_of("STATUS", "ERROR").offset | int(m.error_code) << code.offset
                    self.irq = 2


def run(coro):
    return asyncio.run(coro)


def test_bulk_access_any_alignment_across_frames():
    board = FakeBoard()
    link = HostLink(board)
    data = bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8))
    run(link.write(MEMORY_BASE + 3, data))
    assert board.ram.read(MEMORY_BASE + 3, 300) == data
    assert board.ram.read(MEMORY_BASE, 3) == bytes(3)           # the partial words' other bytes kept
    assert run(link.read(MEMORY_BASE + 3, 300)) == data
    assert run(link.read(MEMORY_BASE + 5, 1)) == data[2:3]
    # 300 bytes at +3 span 76 words: 5 WRITE frames of at most 16 words, 2 partial-word reads first.
    assert board.requests.count(Command.WRITE) == 5


def test_registers_info_and_counters():
    board = FakeBoard()
    link = HostLink(board)
    info = run(link.info())
    assert (info.ram_base, info.ram_size, info.max_words) == (MEMORY_BASE, 64 * 1024, 16)
    assert run(link.read_reg("ID_ARRAY")) == reset_value(register("ID_ARRAY"), CONFIG)
    run(link.write_reg("RING_SIZE", 77))
    assert board.model.ring_size == 77
    board.model.counters["macs"] = 5 << 32 | 9
    assert run(link.counters())["macs"] == 5 << 32 | 9


def test_lost_and_damaged_answers_are_retried():
    board = FakeBoard()
    link = HostLink(board, retries=2)
    board.drop, board.damage = 1, 1
    assert run(link.read_reg("ID_MAGIC")) == reset_value(register("ID_MAGIC"), CONFIG)
    assert link.retried == 2


def test_a_dead_link_is_one_line_after_the_retries():
    board = FakeBoard()
    board.drop = 99
    with pytest.raises(LinkError) as info:
        run(HostLink(board, retries=2).read_words(MEMORY_BASE, 4))
    message = str(info.value)
    assert message.startswith("INFO: no answer (nothing received within") and "after 3 attempts on fake" in message
    assert "\n" not in message and board.t < 5               # bounded, in simulated seconds


@pytest.mark.parametrize("call, message", [
    (lambda link: link.read_words(0x2000_0000, 2),
     "READ 0x20000000, 2 words: bus error at 0x20000000 (outside the board's address map: NPU registers 0x0..0x3ff, "
     "info block 0x1000..0x101f, RAM 0x10000000..0x1000ffff)"),
    (lambda link: link.write_words(MEMORY_BASE + 64 * 1024 - 4, [1, 2]),
     "WRITE 0x1000fffc, 2 words: bus error at 0x10010000 (outside the board's address map"),
    (lambda link: link.read_words(MEMORY_BASE + 2, 1), "READ 0x10000002: address 0x10000002 is not a 32-bit multiple"),
])
def test_command_errors_name_the_address(call, message):
    link = HostLink(FakeBoard())
    with pytest.raises(LinkError) as info:
        run(call(link))
    assert str(info.value).startswith(message)


def test_identify_names_both_configurations():
    board = FakeBoard(id_config=dataclasses.replace(CONFIG, cols=8, act_depth=256))
    with pytest.raises(ConfigMismatch) as info:
        run(HostLink(board).identify(CONFIG))
    assert str(info.value) == (
        "the NPU on fake is not the configuration the host compiles for: cols 8 (board) vs 4 (host), act_depth 256 "
        "(board) vs 128 (host); flash a bitstream of this configuration or pass the board's --config")
    assert run(HostLink(FakeBoard()).identify(CONFIG)).ram_size == 64 * 1024


def _compiled(tmp_path, batch=2):
    path = om.quantised("mlp", tmp_path / "mlp.onnx", "QDQ", "int8")[0]
    x = om.sample_inputs(om.mlp()[0], batch, seed=3)
    return path, x


def test_model_too_big_for_the_board_ram(tmp_path):
    from npu.firmware.onnx_import import load_model
    from npu.firmware.runtime import batch_inputs
    path, x = _compiled(tmp_path)
    graph = load_model(path)
    feeds, _, _ = batch_inputs(graph, {graph.inputs[0][0]: x})
    compiled = Device(CONFIG).compile(graph, feeds)
    board = FakeBoard(ram_bytes=4096)
    with pytest.raises(LinkError, match=rf"needs memory 0x10000000\.\.0x[0-9a-f]+ \({compiled.memory_size} bytes\); "
                                        r"the board's RAM is 0x10000000\.\.0x10000fff \(4096 bytes\)$"):
        run(BoardDriver(HostLink(board), compiled).load())
    assert Command.WRITE not in board.requests                 # nothing loaded


def test_serial_backend_equals_golden(tmp_path, monkeypatch):
    boards = []
    monkeypatch.setattr(hostlink, "SerialTransport", lambda port, baud: boards.append(FakeBoard()) or boards[-1])
    path, x = _compiled(tmp_path)
    golden = Device(CONFIG, "golden").run(path, x)
    lines = []
    serial = Device(CONFIG, "serial", port="/dev/fake", log=lines.append).run(path, x)
    for name, want in golden.outputs.items():
        assert np.array_equal(serial.outputs[name], want)
    for s, g in zip(serial.layers, golden.layers):
        if s.where == "npu":
            assert {k: s.counters[k] for k in g.counters} == g.counters
    assert lines[0].startswith("board on fake: 12 MHz, 64 KiB RAM; model loaded") and len(lines) == 3


def test_serial_backend_reports_npu_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(hostlink, "SerialTransport", lambda port, baud: FakeBoard())

    class Corrupt(Device):
        def compile(self, model, feeds):
            compiled = super().compile(model, feeds)
            ring = dict(compiled.image)[compiled.ring_base]
            compiled.image = [(a, bytes(16) + ring[16:] if a == compiled.ring_base else d) for a, d in compiled.image]
            return compiled

    path, x = _compiled(tmp_path, 1)
    with pytest.raises(DeviceError, match=r"^the board's NPU stopped with error ILLEGAL_INSTRUCTION \(code 1\) at "
                                          r"ring slot 0"):
        Corrupt(CONFIG, "serial", port="/dev/fake").run(path, x)


def test_cli_serial_backend(tmp_path, monkeypatch):
    monkeypatch.setattr(hostlink, "SerialTransport", lambda port, baud: FakeBoard())
    path, x = _compiled(tmp_path)
    np.save(tmp_path / "x.npy", x)
    toml = tmp_path / "board.toml"
    toml.write_text("[array]\nrows = 4\ncols = 4\n[buffers]\nact_depth = 128\nwgt_depth = 64\nacc_depth = 128\n"
                    "param_depth = 8\n[bus]\nbus_width = 64\n")
    result = CliRunner().invoke(main, ["run", str(path), "--input", str(tmp_path / "x.npy"), "--output",
                                       str(tmp_path / "y.npy"), "--backend", "serial", "--port", "/dev/fake",
                                       "--config", str(toml)])
    assert result.exit_code == 0, result.output
    golden = Device(CONFIG, "golden").run(path, x)
    assert np.array_equal(np.load(tmp_path / "y.npy"), next(iter(golden.outputs.values())))


@pytest.mark.parametrize("args, message", [
    (["--backend", "serial"], "error: --backend serial needs --port: the board's serial device, e.g. /dev/ttyUSB1"),
    (["--port", "/dev/ttyUSB1"], "error: --port and --baud are for --backend serial"),
    (["--backend", "serial", "--port", "/dev/npu-no-such-port"],
     "error: cannot open serial port /dev/npu-no-such-port"),
])
def test_cli_serial_errors_are_one_line(tmp_path, args, message):
    path, x = _compiled(tmp_path, 1)
    np.save(tmp_path / "x.npy", x)
    result = CliRunner().invoke(main, ["run", str(path), "--input", str(tmp_path / "x.npy"), "--output",
                                       str(tmp_path / "y.npy"), *args])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message), result.output
    assert "Traceback" not in result.output
