"""The host side of the board link (``docs/host-protocol.md``), written once for every transport.

:class:`HostLink` speaks the framed protocol of :mod:`npu.hdl.bridge` over a byte
*transport*; :class:`BoardDriver` puts the runtime's driver interface
(:func:`npu.firmware.runtime.execute`) on top of it. The code is plain ``async``: the
same coroutines run under ``asyncio`` with :class:`SerialTransport` (a real board) and
under cocotb with :class:`npu.sim.uart.UartModel` (the board's Verilog in simulation).

A transport has

* ``async send(data: bytes)``;
* ``async recv(n, timeout) -> bytes``: up to ``n`` bytes, fewer (maybe none) if
  ``timeout`` seconds pass first;
* ``now() -> float``: a clock in seconds (the simulation's time for a simulated board);
* ``baud``: bits per second, ``latency``: seconds a round trip adds beyond the bytes'
  time (USB), and ``name`` for messages.

Every wait is bounded. A problem ends in :class:`LinkError`, one line naming what was
being done and what went wrong.
"""

from dataclasses import dataclass

from ..hdl.bridge import (CSR_BASE, INFO_ADDR, INFO_FIELDS, INFO_MAGIC, LINK_STATUSES, PROTOCOL_VERSION,
                          SYNC_REQUEST, SYNC_RESPONSE, Command, Status, crc16_update)
from ..hdl.regs import PERF_COUNTERS, REGISTERS, field_of, register
from .runtime import DeviceError, npu_error_text

__all__ = ["LinkError", "ConfigMismatch", "FrameError", "BoardInfo", "HostLink", "BoardDriver", "SerialTransport",
           "crc16", "encode_request", "encode_response", "decode_frame", "frame_length"]

_CTRL = {name: 1 << field_of("CTRL", name).offset for name in ("START", "SOFT_RESET", "PERF_CLEAR")}
_STATUS = {f.name: f for f in register("STATUS").fields}
_ID_REGISTERS = [reg for reg in REGISTERS if reg.name.startswith("ID_")]
_LINK_CODES = frozenset(s.value for s in LINK_STATUSES)


class LinkError(DeviceError):
    """The board link failed: one line saying what was done and what went wrong. (A
    :class:`~npu.firmware.runtime.DeviceError`, so callers of the runtime catch one type.)

    ``status`` is the board's :class:`~npu.hdl.bridge.Status` when it answered with an
    error (None when it did not answer usefully); ``address`` the byte address of a bus
    error."""

    def __init__(self, message, status=None, address=None):
        super().__init__(message)
        self.status = status
        self.address = address


class ConfigMismatch(LinkError):
    """The board's NPU is not the configuration the host compiles for."""


class FrameError(ValueError):
    """Bytes that are not a well-formed frame."""


# -- frames ------------------------------------------------------------------------------

def crc16(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE of ``data`` (``crc16(b"123456789") == 0x29B1``)."""
    for byte in data:
        crc = crc16_update(crc, byte)
    return crc


def _frame(sync, code, seq, words):
    words = list(words)
    if not 0 <= code <= 0xFF or not 0 <= seq <= 0xFF:
        raise ValueError(f"code {code!r} and seq {seq!r} must be bytes")
    if len(words) > 0xFF:
        raise ValueError(f"a frame carries at most 255 words, not {len(words)}")
    body = bytes([code, seq, len(words)]) + b"".join(int(w).to_bytes(4, "little") for w in words)
    return bytes([sync]) + body + crc16(body).to_bytes(2, "big")


def encode_request(cmd, seq, words=()):
    """A request frame: sync, ``cmd``, ``seq``, word count, the 32-bit ``words``, CRC."""
    return _frame(SYNC_REQUEST, int(cmd), seq, words)


def encode_response(status, seq, words=()):
    """A response frame, as the board sends it (for models and tests)."""
    return _frame(SYNC_RESPONSE, int(status), seq, words)


def frame_length(words):
    """Bytes in a frame carrying ``words`` payload words."""
    return 4 + 4 * words + 2


def decode_frame(frame, sync=SYNC_RESPONSE):
    """(code, seq, words) of a complete frame; :class:`FrameError` if it is not one."""
    frame = bytes(frame)
    if len(frame) < 6 or frame[0] != sync:
        raise FrameError(f"not a frame: {frame[:8].hex(' ')}{' ...' if len(frame) > 8 else ''}")
    if len(frame) != frame_length(frame[3]):
        raise FrameError(f"frame of {len(frame)} bytes, its length field says {frame_length(frame[3])}")
    if crc16(frame[1:]) != 0:
        raise FrameError(f"CRC mismatch (frame {frame[:8].hex(' ')} ...)")
    words = [int.from_bytes(frame[4 + 4 * i:8 + 4 * i], "little") for i in range(frame[3])]
    return frame[1], frame[2], words


def _status_name(code):
    return Status(code).name if code in Status._value2member_map_ else f"unknown status {code:#04x}"


# -- the board's identity ------------------------------------------------------------------

@dataclass(frozen=True)
class BoardInfo:
    """The info block (:data:`npu.hdl.bridge.INFO_FIELDS`)."""
    magic: int
    version: int
    ram_base: int
    ram_size: int
    clk_hz: int
    baud: int
    byte_timeout: int
    bus_timeout: int

    @classmethod
    def from_words(cls, words):
        return cls(**dict(zip(INFO_FIELDS, words)))

    @property
    def protocol(self):
        return self.version & 0xFFFF

    @property
    def max_words(self):
        return self.version >> 16

    @property
    def quiet_seconds(self):
        """How long the board waits for a quiet line before it answers a damaged frame."""
        return self.byte_timeout / self.clk_hz

    def regions(self):
        """(name, first byte, byte after the last) of every area the bridge reaches."""
        from ..hdl.regs import CSR_ADDR_WIDTH
        return [("NPU registers", CSR_BASE, CSR_BASE + 4 * (1 << CSR_ADDR_WIDTH)),
                ("info block", INFO_ADDR, INFO_ADDR + 4 * len(INFO_FIELDS)),
                ("RAM", self.ram_base, self.ram_base + self.ram_size)]


def _describe_id(reg, value):
    """{name: value} of an ID register word: its fields, or the whole word."""
    from ..generators.regmap import field_values
    if reg.fields:
        return {f.name.lower(): v for f, v in zip(reg.fields, field_values(reg, value).values())}
    return {reg.name[3:].lower(): value}


# -- the link ------------------------------------------------------------------------------

class _NoAnswer(Exception):
    pass


class HostLink:
    """The framed protocol over ``transport``: word and bulk access, registers, identity.

    Parameters
    ----------
    transport : see the module docstring.
    retries : int
        How often a frame is sent again after a link error (no answer, a damaged answer,
        or a board status in :data:`~npu.hdl.bridge.LINK_STATUSES`).
    quiet : float
        Seconds the board waits for a quiet line before answering a damaged frame,
        until the info block (which states it) has been read.
    """

    def __init__(self, transport, *, retries=2, quiet=0.05):
        self.transport = transport
        self.retries = retries
        self.quiet = quiet
        self.board = None               # BoardInfo once read
        self._seq = 0
        self.frames = 0                 # request frames sent, retries included
        self.retried = 0

    # -- frames ---------------------------------------------------------------------------

    def _timeout(self, request_words, answer_words):
        t = self.transport
        quiet = self.board.quiet_seconds if self.board else self.quiet
        line = 10 * (frame_length(request_words) + frame_length(answer_words)) / t.baud
        return 2 * line + t.latency + 2 * quiet

    async def _answer(self, deadline):
        """The next response frame, hunting for its sync byte; raises _NoAnswer or FrameError."""
        t = self.transport

        async def take(n):
            data = await t.recv(n, max(0.0, deadline - t.now()))
            if len(data) < n:
                raise _NoAnswer(f"{len(data)} of {n} bytes" if data else "nothing")
            return data

        while (await take(1))[0] != SYNC_RESPONSE:
            pass
        header = await take(3)
        rest = await take(4 * header[2] + 2)
        return decode_frame(bytes([SYNC_RESPONSE]) + header + rest)

    async def receive_answer(self, timeout=None):
        """The next response frame as (status, seq, words): for bytes sent straight to the
        transport (tests, diagnostics). A missing or damaged answer is a :class:`LinkError`."""
        t = self.transport
        if timeout is None:
            words = self.board.max_words if self.board else 64
            timeout = 2 * self._timeout(words, words)
        try:
            return await self._answer(t.now() + timeout)
        except _NoAnswer as e:
            raise LinkError(f"{t.name}: no answer ({e} received within {timeout:.3g} s)") from None
        except FrameError as e:
            raise LinkError(f"{t.name}: a damaged answer ({e})") from None

    async def _drain(self):
        """Read until the line has been quiet for longer than the board's frame timeout."""
        quiet = 2 * (self.board.quiet_seconds if self.board else self.quiet) + self.transport.latency
        for _ in range(100):
            if not await self.transport.recv(4096, quiet):
                return
        raise LinkError(f"{self.transport.name}: the line does not go quiet (a babbling board or a wrong baud rate?)")

    async def transact(self, cmd, words, *, answer_words, what):
        """Send one request and return the words of its OK answer (retrying link errors)."""
        t = self.transport
        problem = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
                await self._drain()
            self._seq = self._seq % 255 + 1          # 1..255; the board answers 0 when it saw none
            frame = encode_request(cmd, self._seq, words)
            await t.send(frame)
            self.frames += 1
            timeout = self._timeout(len(words), answer_words)
            deadline = t.now() + timeout
            try:
                while True:
                    code, seq, payload = await self._answer(deadline)
                    if code in _LINK_CODES:
                        problem = f"the board answered {_status_name(code)}"
                        break
                    if seq != self._seq:
                        continue                      # a late answer to an earlier frame
                    if code == Status.OK.value:
                        return payload
                    base = INFO_ADDR if cmd == Command.INFO else words[0] if words else 0
                    raise self._command_error(code, payload, what, base)
            except _NoAnswer as e:
                problem = f"no answer ({e} received within {timeout:.3g} s)"
            except FrameError as e:
                problem = f"a damaged answer ({e})"
        raise LinkError(f"{what}: {problem} after {self.retries + 1} attempts on {t.name}")

    def _command_error(self, code, payload, what, base):
        status = Status(code) if code in Status._value2member_map_ else None
        # A bus error's answer is the index of the failing word in the frame.
        address = base + 4 * payload[0] if payload and status in (Status.BUS_ERROR, Status.BUS_TIMEOUT) else None
        if status == Status.BUS_ERROR:
            where = self._where(address)
            text = f"bus error at {address:#010x} ({where})"
        elif status == Status.BUS_TIMEOUT:
            text = f"the bus did not answer at {address:#010x} within the board's bus timeout"
        elif status == Status.BAD_ADDRESS:
            text = "the board refused the address (not a multiple of 4)"
        elif status == Status.BAD_LENGTH:
            text = "the board refused the frame's length for this command"
        elif status == Status.UNKNOWN_COMMAND:
            text = "the board does not know this command (protocol version mismatch?)"
        else:
            text = f"the board answered {_status_name(code)}"
        return LinkError(f"{what}: {text}", status=status, address=address)

    def _where(self, address):
        if self.board is None:
            return "nothing there, or a write to a read-only area"
        for name, lo, hi in self.board.regions():
            if lo <= address < hi:
                return f"in the {name}: {'a write to a read-only area' if name == 'info block' else 'refused'}"
        areas = ", ".join(f"{name} {lo:#x}..{hi - 1:#x}" for name, lo, hi in self.board.regions())
        return f"outside the board's address map: {areas}"

    # -- words ----------------------------------------------------------------------------

    async def info(self):
        """The board's info block (read once), checked for the magic and protocol version."""
        if self.board is None:
            words = await self.transact(Command.INFO, [], answer_words=len(INFO_FIELDS), what="INFO")
            if len(words) != len(INFO_FIELDS):
                raise LinkError(f"INFO: the board sent {len(words)} words, expected {len(INFO_FIELDS)}")
            info = BoardInfo.from_words(words)
            if info.magic != INFO_MAGIC:
                raise LinkError(f"INFO: magic {info.magic:#010x} is not {INFO_MAGIC:#010x}: not an NPU board "
                                f"bitstream on {self.transport.name}")
            if info.protocol >> 8 != PROTOCOL_VERSION >> 8:
                raise LinkError(f"INFO: the board speaks protocol {info.protocol >> 8}.{info.protocol & 0xFF}, "
                                f"this host {PROTOCOL_VERSION >> 8}.{PROTOCOL_VERSION & 0xFF}")
            self.board = info
        return self.board

    @staticmethod
    def _check_address(addr, what):
        if addr % 4 or not 0 <= addr < 1 << 32:
            raise LinkError(f"{what}: address {addr:#x} is not a 32-bit multiple of 4")

    async def read_words(self, addr, n):
        """``n`` 32-bit words from byte address ``addr`` (as many frames as needed)."""
        self._check_address(addr, f"READ {addr:#x}")
        step = (await self.info()).max_words
        out = []
        for i in range(0, n, step):
            k = min(step, n - i)
            a = addr + 4 * i
            words = await self.transact(Command.READ, [a, k], answer_words=k, what=f"READ {a:#010x}, {k} words")
            if len(words) != k:
                raise LinkError(f"READ {a:#010x}: the board sent {len(words)} words, asked for {k}")
            out += words
        return out

    async def write_words(self, addr, words):
        """Write 32-bit ``words`` from byte address ``addr``."""
        self._check_address(addr, f"WRITE {addr:#x}")
        step = (await self.info()).max_words
        words = list(words)
        for i in range(0, len(words), step):
            chunk = words[i:i + step]
            a = addr + 4 * i
            await self.transact(Command.WRITE, [a, *chunk], answer_words=0,
                                what=f"WRITE {a:#010x}, {len(chunk)} words")

    async def read(self, addr, n):
        """``n`` bytes from byte address ``addr`` (any alignment)."""
        if n <= 0:
            return b""
        lo, hi = addr & ~3, (addr + n + 3) & ~3
        words = await self.read_words(lo, (hi - lo) // 4)
        data = b"".join(w.to_bytes(4, "little") for w in words)
        return data[addr - lo:addr - lo + n]

    async def write(self, addr, data):
        """Write ``data`` at byte address ``addr``; partial words at either end are read first."""
        data = bytes(data)
        if not data:
            return
        lo, hi = addr & ~3, (addr + len(data) + 3) & ~3
        if lo != addr or hi != addr + len(data):
            buf = bytearray(hi - lo)
            if lo != addr:
                buf[:4] = await self.read(lo, 4)
            if hi != addr + len(data):
                buf[-4:] = await self.read(hi - 4, 4)
            buf[addr - lo:addr - lo + len(data)] = data
            data = bytes(buf)
        await self.write_words(lo, [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4)])

    # -- NPU registers --------------------------------------------------------------------

    async def read_reg(self, name):
        """The NPU register ``name`` (:data:`npu.hdl.regs.REGISTERS`)."""
        return (await self.read_words(CSR_BASE + register(name).offset, 1))[0]

    async def write_reg(self, name, value):
        await self.write_words(CSR_BASE + register(name).offset, [value])

    async def counters(self):
        """Every performance counter: one READ frame of the LO/HI pairs (LO latches HI)."""
        first = register(f"PERF_{next(iter(PERF_COUNTERS)).upper()}_LO").offset
        words = await self.read_words(CSR_BASE + first, 2 * len(PERF_COUNTERS))
        return {name: words[2 * i + 1] << 32 | words[2 * i] for i, name in enumerate(PERF_COUNTERS)}

    async def identify(self, config):
        """Check that the board holds an NPU of ``config``; return its :class:`BoardInfo`."""
        info = await self.info()
        first = _ID_REGISTERS[0].offset
        words = await self.read_words(CSR_BASE + first, (_ID_REGISTERS[-1].offset - first) // 4 + 1)
        from ..generators.regmap import reset_value
        board, host = {}, {}
        for reg in _ID_REGISTERS:
            value = words[(reg.offset - first) // 4]
            board.update(_describe_id(reg, value))
            host.update(_describe_id(reg, reset_value(reg, config)))
        if board.get("magic") != host.get("magic"):
            raise ConfigMismatch(f"{self.transport.name}: the board's NPU registers read ID_MAGIC "
                                 f"{board.get('magic', 0):#010x}, not {host.get('magic', 0):#010x}")
        diff = [f"{k} {board[k]} (board) vs {host[k]} (host)" for k in host if board.get(k) != host[k]]
        if diff:
            raise ConfigMismatch(f"the NPU on {self.transport.name} is not the configuration the host compiles "
                                 f"for: {', '.join(diff)}; flash a bitstream of this configuration or pass the "
                                 f"board's --config")
        return info


# -- the runtime driver ----------------------------------------------------------------------

class BoardDriver:
    """The runtime's driver interface over a :class:`HostLink` (``npu run --backend serial``).

    ``write``/``read`` move bytes to and from the board's RAM over the link; ``run``
    starts a program and polls STATUS until it ends. Call :meth:`load` once first: it
    checks the board, configures the ring and the DMA window, and loads the compiled
    model's constant image.

    Parameters
    ----------
    link : HostLink
    compiled : CompiledModel
        The model :meth:`load` puts on the board (None to use :meth:`run` alone).
    run_timeout : float
        Seconds a program may run before the run fails (the NPU's status is reported).
    """

    name = "serial"

    def __init__(self, link, compiled, *, run_timeout=60.0):
        self.link = link
        self.compiled = compiled
        self.run_timeout = run_timeout
        self.head = 0
        self.polls = 0

    async def load(self):
        """Identify the board, fit the model, reset and configure the NPU, load the image."""
        link, c = self.link, self.compiled
        info = await link.identify(c.config)
        lo, hi = c.window
        if lo < info.ram_base or hi > info.ram_base + info.ram_size:
            raise LinkError(f"the compiled model needs memory {lo:#x}..{hi - 1:#x} ({c.memory_size} bytes); "
                            f"the board's RAM is {info.ram_base:#x}..{info.ram_base + info.ram_size - 1:#x} "
                            f"({info.ram_size} bytes)")
        await link.write_reg("CTRL", _CTRL["SOFT_RESET"])
        for name, value in (("RING_BASE", c.ring_base), ("RING_SIZE", c.ring_slots), ("RING_HEAD", 0),
                            ("WINDOW_BASE", lo), ("WINDOW_LIMIT", hi), ("IRQ_ENABLE", 0b11)):
            await link.write_reg(name, value)
        self.head = 0
        for addr, data in c.image:
            await link.write(addr, data)
        return info

    async def write(self, addr, data):
        await self.link.write(addr, data)

    async def read(self, addr, n):
        return await self.link.read(addr, n)

    async def status(self):
        """STATUS decoded, with ERROR_ADDR, ERROR_CMD and RING_HEAD."""
        link = self.link
        first = register("STATUS").offset
        value = (await link.read_words(CSR_BASE + first, 1))[0]
        bits = {name.lower(): (value >> f.offset) & ((1 << f.width) - 1) for name, f in _STATUS.items()}
        for name in ("ERROR_ADDR", "ERROR_CMD", "RING_HEAD"):
            bits[name.lower()] = await link.read_reg(name)
        return bits

    async def poll(self):
        """One STATUS read while a program runs (a hook for tests)."""
        return await self.link.read_reg("STATUS")

    async def run(self, first, tail):
        link, t = self.link, self.link.transport
        if first != self.head:
            await link.write_reg("RING_HEAD", first)
        await link.write_reg("RING_TAIL", tail)
        await link.write_reg("CTRL", _CTRL["START"] | _CTRL["PERF_CLEAR"])
        deadline = t.now() + self.run_timeout
        done, error = 1 << _STATUS["DONE"].offset, 1 << _STATUS["ERROR"].offset
        while True:
            value = await self.poll()
            self.polls += 1
            if value & (done | error):
                break
            if t.now() > deadline:
                s = await self.status()
                raise DeviceError(f"the NPU did not finish within {self.run_timeout:g} s (STATUS busy={s['busy']} "
                                  f"waiting={s['waiting']}, RING_HEAD {s['ring_head']}, RING_TAIL {tail})")
        s = await self.status()
        await link.write_reg("IRQ_PENDING", 0b11)
        if s["error"] or not s["done"]:
            raise DeviceError(npu_error_text(s["error_code"], s["error_cmd"], s["error_addr"], "board's NPU"))
        self.head = s["ring_head"]
        counters = await link.counters()
        return {"cycles": counters["cycles"], "counters": counters}


# -- a real serial port ------------------------------------------------------------------------

class SerialTransport:
    """A serial port through pyserial (the board's USB-UART).

    Parameters
    ----------
    port : str
        Device name, e.g. ``/dev/ttyUSB1`` or ``COM4``.
    baud : int
    latency : float
        Seconds a round trip adds beyond the bytes' time (USB scheduling, the adapter's
        latency timer).
    """

    def __init__(self, port, baud=115200, *, latency=0.05):
        import time

        import serial
        self._time = time
        self.name = port
        self.baud = baud
        self.latency = latency
        try:
            self.port = serial.Serial(port, baud, timeout=0)
        except (serial.SerialException, OSError, ValueError) as e:
            raise LinkError(f"cannot open serial port {port}: {str(e).splitlines()[0] if str(e) else e}") from None
        try:
            # FTDI adapters hold short answers for their latency timer (16 ms) unless told not to.
            self.port.set_low_latency_mode(True)
        except (AttributeError, NotImplementedError, ValueError, OSError):
            pass
        self.port.reset_input_buffer()

    def now(self):
        return self._time.monotonic()

    async def send(self, data):
        import serial
        try:
            self.port.write(data)
            self.port.flush()
        except serial.SerialException as e:
            raise LinkError(f"{self.name}: write failed: {e}") from None

    async def recv(self, n, timeout):
        import serial
        deadline = self.now() + timeout
        out = bytearray()
        try:
            while len(out) < n:
                self.port.timeout = max(0.0, deadline - self.now())
                chunk = self.port.read(n - len(out))
                if not chunk:
                    break
                out += chunk
        except serial.SerialException as e:
            raise LinkError(f"{self.name}: read failed: {e}") from None
        return bytes(out)

    def close(self):
        self.port.close()
