"""UART-to-Wishbone bridge: the board's host link (``docs/host-protocol.md``).

The host sends a frame; the bridge checks it, performs it as a Wishbone B4 pipelined
master (32-bit data, one request at a time) and answers with exactly one response
frame. The protocol's numbers (sync bytes, commands, status codes, the info block) are
defined here once; the host side (:mod:`npu.firmware.hostlink`) and the docs use them.

Frames (all multi-byte fields little endian except the CRC)::

    request:   A5  CMD  SEQ  LEN  payload (LEN 32-bit words)  CRC_HI CRC_LO
    response:  5A  STATUS  SEQ  LEN  payload (LEN words)      CRC_HI CRC_LO

The CRC is CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection,
no final XOR) over every byte after the sync byte up to the end of the payload, sent
most significant byte first, so the CRC over the whole frame after the sync byte is 0.

A frame that cannot be taken (bad sync byte, UART framing error, CRC, length above
the maximum) is answered once the line has been quiet for ``byte_timeout`` cycles, so
the rest of a damaged frame is never read as a new one. A frame that stops short is
answered ``TIMEOUT`` after the same quiet time. Nothing is dropped without an answer
except bytes sent while the bridge executes or answers a frame: the host waits for
the answer before it sends the next frame.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from . import wishbone
from .ram import CollisionFreeReadPort

__all__ = ["Bridge", "Command", "Status", "LINK_STATUSES", "SYNC_REQUEST", "SYNC_RESPONSE", "PROTOCOL_VERSION",
           "CRC_POLY", "CRC_INIT", "CSR_BASE", "INFO_ADDR", "INFO_FIELDS", "INFO_MAGIC", "MAX_WORDS_LIMIT",
           "crc16_update"]

#: First byte of a request frame, and of a response frame.
SYNC_REQUEST = 0xA5
SYNC_RESPONSE = 0x5A
#: Protocol version: major << 8 | minor (the info block's ``version`` bits 15:0).
PROTOCOL_VERSION = (1 << 8) | 0
#: CRC-16/CCITT-FALSE.
CRC_POLY = 0x1021
CRC_INIT = 0xFFFF
#: The board address map the protocol assumes (RAM base and size are in the info block).
CSR_BASE = 0x0000_0000
INFO_ADDR = 0x0000_1000
#: The info block: 32-bit words at INFO_ADDR, read-only, in this order.
INFO_FIELDS = {
    "magic":        "0x4255504E (\"NPUB\" as little-endian ASCII)",
    "version":      "bits 15:0 the protocol version (major << 8 | minor), bits 31:16 the most words per frame",
    "ram_base":     "byte address of the on-chip RAM",
    "ram_size":     "bytes of on-chip RAM",
    "clk_hz":       "system clock frequency in Hz",
    "baud":         "UART baud rate the bitstream was built for",
    "byte_timeout": "quiet clock cycles that end a partial or damaged frame",
    "bus_timeout":  "clock cycles a bus access may take before BUS_TIMEOUT",
}
INFO_MAGIC = 0x4255504E
#: The most words a frame may carry (LEN is one byte and holds a WRITE's address too).
MAX_WORDS_LIMIT = 254


class Command(enum.IntEnum, shape=8):
    """Request commands. The payload is LEN 32-bit words."""
    #: No payload; the answer carries the info block (``len(INFO_FIELDS)`` words).
    INFO = 0x01
    #: Payload: byte address (a multiple of 4), word count (1 .. max words); the answer
    #: carries the words read.
    READ = 0x02
    #: Payload: byte address (a multiple of 4), then 1 .. max words to write in turn.
    WRITE = 0x03


class Status(enum.IntEnum, shape=8):
    """Response status. Codes below ``UNKNOWN_COMMAND`` are link errors: the frame was
    damaged on the way (or cut short), nothing was done, and sending it again is safe."""
    OK = 0x00
    #: The first byte of a frame was not the sync byte.
    BAD_SYNC = 0x01
    #: A UART framing error (stop bit low) inside a frame.
    FRAMING = 0x02
    #: The frame stopped short: no byte for ``byte_timeout`` cycles.
    TIMEOUT = 0x03
    #: The CRC does not match.
    BAD_CRC = 0x04
    #: LEN is above the most words a frame may carry (found before the CRC).
    TOO_LONG = 0x05
    #: The command is not one of :class:`Command`.
    UNKNOWN_COMMAND = 0x06
    #: LEN, or a READ's word count, does not suit the command.
    BAD_LENGTH = 0x07
    #: The address is not a multiple of 4.
    BAD_ADDRESS = 0x08
    #: The bus answered ``err`` (nothing at that address, or a write to a read-only
    #: area). Payload: the index of the failing word in the frame (0 = the first); the
    #: words of a WRITE before it were written.
    BUS_ERROR = 0x09
    #: The bus did not answer within ``bus_timeout`` cycles. Payload: the failing word's index.
    BUS_TIMEOUT = 0x0A


#: Statuses for a frame that did not arrive intact: sending it again is the cure.
LINK_STATUSES = frozenset({Status.BAD_SYNC, Status.FRAMING, Status.TIMEOUT, Status.BAD_CRC, Status.TOO_LONG})


def crc16_update(crc, byte):
    """CRC-16/CCITT-FALSE of ``crc`` extended by one ``byte``: Amaranth values or ints."""
    for i in reversed(range(8)):
        if isinstance(crc, int):
            top = ((crc >> 15) ^ (byte >> i)) & 1
            crc = ((crc << 1) & 0xFFFF) ^ (CRC_POLY if top else 0)
        else:
            top = crc[15] ^ byte[i]
            crc = Cat(Const(0, 1), crc[:15]) ^ Mux(top, CRC_POLY, 0)
    return crc


class Bridge(wiring.Component):
    """Framed host protocol over a byte stream -> Wishbone B4 pipelined master.

    Parameters
    ----------
    byte_timeout : int
        Clock cycles without a byte that end a partial frame (answered ``TIMEOUT``) or
        a damaged one (answered with its error); rounded up to a power of two (the
        attribute holds the value used). Longer than the longest gap the host's UART
        leaves inside a frame: 20 ms is safe for USB serial adapters.
    bus_timeout : int
        Clock cycles a bus access may be stalled or unanswered before ``BUS_TIMEOUT``;
        rounded up to a power of two.
    max_words : int
        The most 32-bit words a READ or WRITE frame carries; the frame buffer (block RAM,
        ``max_words`` x 32 bits) holds them until the CRC has been checked.
    info_words : int
        Words the INFO command reads at :data:`INFO_ADDR`.

    Members
    -------
    rx : In(stream.Signature(8))
        Bytes from the host (always ready).
    rx_error : In(1)
        The UART receiver's framing-error pulse.
    tx : Out(stream.Signature(8))
        Bytes to the host.
    bus : Out(wishbone.Signature(addr_width=30, data_width=32))
        The master: ``adr`` is the byte address divided by 4, ``sel`` is always 0xF,
        one request at a time, ``cyc`` held from the first word of a frame to its last.
    busy : Out(1)
        A frame is being received, executed or answered.
    failed : Out(1)
        The last response carried an error status (until the next response).
    """

    def __init__(self, *, byte_timeout, bus_timeout=256, max_words=64, info_words=len(INFO_FIELDS)):
        try:
            for name, value, lo, hi in (("byte_timeout", byte_timeout, 16, 1 << 30),
                                        ("bus_timeout", bus_timeout, 2, 1 << 30),
                                        ("max_words", max_words, 1, MAX_WORDS_LIMIT),
                                        ("info_words", info_words, 1, MAX_WORDS_LIMIT)):
                if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                    raise ValueError(f"{name} = {value!r} is invalid: must be an integer from {lo} to {hi}")
            if info_words > max_words:
                raise ValueError(f"info_words = {info_words} is invalid: must be at most max_words = {max_words}")
        except ValueError:
            self._MustUse__silence = True
            raise
        self.byte_timeout = 1 << ceil_log2(byte_timeout)
        self.bus_timeout = 1 << ceil_log2(bus_timeout)
        self.max_words = max_words
        self.info_words = info_words
        super().__init__({
            "rx": In(stream.Signature(8)),
            "rx_error": In(1),
            "tx": Out(stream.Signature(8)),
            "bus": Out(wishbone.Signature(addr_width=30, data_width=32)),
            "busy": Out(1),
            "failed": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        rx, tx, bus = self.rx, self.tx, self.bus
        W = self.max_words
        k = ceil_log2(W + 1)                    # word index bits: 0 .. W

        # Read-during-write never matters: a word is written into the buffer (received, or
        # read from the bus) while the read port shows that address, but its data is used
        # only while sending a WRITE's words to the bus or the answer's words to the host,
        # when nothing is written. So the read port has no read-during-write logic.
        m.submodules.buffer = buffer = Memory(shape=32, depth=W, init=[], attrs=CollisionFreeReadPort.ATTRS)
        wr = buffer.write_port()
        rd = CollisionFreeReadPort(m, buffer, name="rd")
        m.d.comb += rd.en.eq(1)

        # The datapath: each register is written in one place, from strobes the state
        # machine below raises (cheaper than assigning registers state by state).
        cmd, seq = Signal(8), Signal(8)
        nwords = Signal(8)                      # LEN - 1: the words after a frame's address
        empty = Signal()                        # LEN == 0
        addr = Signal(30)                       # word address of the current bus access
        misaligned = Signal()
        count = Signal(k)                       # words to access; then words to answer with
        count_ok = Signal()
        writing = Signal()
        status = Signal(4)
        # Byte position: idx = word index (payload word 0 is the address, at idx -1 =
        # all ones, so data word i is at idx i and buffer entry i), nbyte = byte in the word.
        pos = Signal(k + 2)
        idx, nbyte = pos[2:], pos[:2]
        word = Signal(32)                       # assembles received words, shifts out sent ones
        received = Cat(word[8:], rx.payload)    # the word once its fourth byte is in
        crc = Signal(16)

        take_cmd, take_seq, take_len = Signal(), Signal(), Signal()
        word_shift, word_load, word_idx = Signal(), Signal(), Signal()
        addr_take, addr_info, addr_next = Signal(), Signal(), Signal()
        count_take, count_set, count_value = Signal(), Signal(), Signal(k)
        status_set, status_value = Signal(), Signal(4)
        pos_clear, pos_header, pos_step, step_word = Signal(), Signal(), Signal(), Signal()
        crc_init, crc_step, crc_in = Signal(), Signal(), Signal(8)
        from_bus = Signal()                     # the buffer is written from the bus
        pos_next = Signal(k + 2)
        m.d.comb += pos_next.eq(pos + Mux(step_word, 4, 1))
        # "The word after this one is the last": where it is asked (a frame's last payload
        # word received, the last bus access done, the last response word sent) the next
        # word index is idx + 1, and neither idx nor the counts changed in the cycle before
        # (idx moves once per four bytes, or per bus access, which takes at least two
        # cycles), so the compares are registered, off the state machine's paths. They
        # compare idx with the count less one, registered too (no adder in front of the
        # compare): the counts are set at least two cycles before they are asked about.
        next_is_nwords, next_is_count = Signal(), Signal()
        nwords_before, count_before = Signal(k), Signal(k)
        m.d.sync += [nwords_before.eq(nwords[:k] - 1), count_before.eq(count - 1),
                     next_is_nwords.eq(idx == nwords_before), next_is_count.eq(idx == count_before)]

        with m.If(take_cmd):
            m.d.sync += cmd.eq(rx.payload)
        with m.If(take_seq):
            m.d.sync += seq.eq(rx.payload)
        with m.If(take_len):
            m.d.sync += [nwords.eq(rx.payload - 1), empty.eq(rx.payload == 0)]
        # Compares of ``nwords`` for EXEC, registered (LEN is taken cycles before EXEC).
        one_word, no_words = Signal(), Signal()
        m.d.sync += [one_word.eq(nwords == 1), no_words.eq(nwords == 0)]
        with m.If(word_idx):
            m.d.sync += word.eq(idx)
        with m.Elif(word_load):
            m.d.sync += word.eq(rd.data)
        with m.Elif(word_shift):
            m.d.sync += word.eq(received)
        with m.If(addr_take):
            m.d.sync += [addr.eq(received[2:]), misaligned.eq(received[:2].any())]
        with m.Elif(addr_info):
            m.d.sync += [addr.eq(INFO_ADDR >> 2), misaligned.eq(0)]
        with m.Elif(addr_next):
            m.d.sync += addr.eq(addr + 1)
        with m.If(count_take):
            m.d.sync += [count.eq(received[:k]),
                         count_ok.eq(~received[k:].any() & received[:k].any() & (received[:k] <= W))]
        with m.Elif(count_set):
            m.d.sync += count.eq(count_value)
        with m.If(status_set):
            m.d.sync += status.eq(status_value)
        with m.If(pos_clear):
            m.d.sync += pos.eq(0)
        with m.Elif(pos_header):
            m.d.sync += pos.eq(-4)
        with m.Elif(pos_step):
            m.d.sync += pos.eq(pos_next)
        # The CRC takes each byte a cycle after it goes through (registered, off the state
        # machine's paths): bytes are many cycles apart on the UART, and a sent byte's
        # successor (the CRC itself) is only sampled once the transmitter is idle again.
        crc_byte, crc_go = Signal(8), Signal()
        m.d.sync += [crc_byte.eq(crc_in), crc_go.eq(crc_step & ~crc_init)]
        with m.If(crc_init):
            m.d.sync += crc.eq(CRC_INIT)
        with m.Elif(crc_go):
            m.d.sync += crc.eq(crc16_update(crc, crc_byte))

        # One timer for byte gaps and bus accesses; timeouts are powers of two.
        a, b = ceil_log2(self.byte_timeout), ceil_log2(self.bus_timeout)
        timer = Signal(max(a, b) + 1)
        kick = Signal()
        listening = Signal()                    # receiving a frame, or waiting for a quiet line
        # The restart and the timeouts are registered (off the state machine's paths): the
        # timer is cleared a cycle after a restart, a timeout is seen a cycle after the timer
        # reaches it, and neither reads as expired while a restart is under way.
        restart = Signal()
        m.d.sync += restart.eq(kick | (listening & (rx.valid | self.rx_error)))
        with m.If(restart):
            m.d.sync += timer.eq(0)
        with m.Elif(~timer[-1]):
            m.d.sync += timer.eq(timer + 1)
        byte_reached, bus_reached = Signal(), Signal()
        m.d.sync += [byte_reached.eq(timer[a:].any() & ~restart), bus_reached.eq(timer[b:].any() & ~restart)]
        byte_expired = byte_reached & ~restart
        bus_expired = bus_reached & ~restart

        # The bus's answers are registered before the state machine sees them (a timing cut:
        # the interconnect's answer muxes do not reach the bridge's registers). One request
        # is outstanding at a time and ``cyc`` stays high until its answer is taken.
        ack, err, dat_r = Signal(), Signal(), Signal.like(bus.dat_r)
        m.d.sync += [ack.eq(bus.cyc & bus.ack), err.eq(bus.cyc & bus.err), dat_r.eq(bus.dat_r)]
        m.d.comb += [rx.ready.eq(1), rd.addr.eq(idx), wr.addr.eq(idx),
                     wr.data.eq(Mux(from_bus, dat_r, received)), crc_in.eq(Mux(tx.valid, tx.payload, rx.payload)),
                     bus.adr.eq(addr), bus.dat_w.eq(rd.data), bus.sel.eq(0xF), bus.we.eq(writing)]

        # The verdict on a request (the state EXEC acts on it), worked out every cycle from
        # registers that hold still from the end of its payload on.
        is_info, is_write, refused, verdict = Signal(), Signal(), Signal(), Signal(4)
        verdict_value = Signal(4)
        with m.Switch(cmd):
            with m.Case(Command.INFO):
                m.d.comb += verdict_value.eq(Mux(empty, Status.OK, Status.BAD_LENGTH))
            with m.Case(Command.READ):
                m.d.comb += verdict_value.eq(Mux(~one_word | ~count_ok, Status.BAD_LENGTH,
                                                 Mux(misaligned, Status.BAD_ADDRESS, Status.OK)))
            with m.Case(Command.WRITE):
                m.d.comb += verdict_value.eq(Mux(empty | no_words, Status.BAD_LENGTH,
                                                 Mux(misaligned, Status.BAD_ADDRESS, Status.OK)))
            with m.Default():
                m.d.comb += verdict_value.eq(Status.UNKNOWN_COMMAND)
        m.d.sync += [is_info.eq(cmd == Command.INFO), is_write.eq(cmd == Command.WRITE),
                     verdict.eq(verdict_value), refused.eq(verdict_value != Status.OK)]

        def set_status(code):
            m.d.comb += [status_set.eq(1), status_value.eq(code)]

        def respond(code, words=0):
            set_status(code)
            m.d.comb += [count_set.eq(1), count_value.eq(words)]
            m.next = "R_SYNC"

        def discard(code):
            set_status(code)
            m.next = "DISCARD"

        def receive(next_state):
            """A frame byte: through the CRC; framing errors and timeouts end the frame."""
            m.d.comb += [crc_step.eq(rx.valid), listening.eq(1)]
            with m.If(self.rx_error):
                discard(Status.FRAMING)
            with m.Elif(rx.valid):
                m.next = next_state
            with m.Elif(byte_expired):
                respond(Status.TIMEOUT)

        def send(value, next_state, through_crc=True):
            m.d.comb += [tx.valid.eq(1), tx.payload.eq(value)]
            if through_crc:
                m.d.comb += crc_step.eq(tx.ready)
            with m.If(tx.ready):
                m.next = next_state

        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.sync += seq.eq(0)
                m.d.comb += [kick.eq(1), crc_init.eq(1)]
                with m.If(self.rx_error):
                    discard(Status.FRAMING)
                with m.Elif(rx.valid):
                    with m.If(rx.payload == SYNC_REQUEST):
                        m.next = "CMD"
                    with m.Else():
                        discard(Status.BAD_SYNC)
            with m.State("CMD"):
                m.d.comb += take_cmd.eq(rx.valid)
                receive("SEQ")
            with m.State("SEQ"):
                m.d.comb += take_seq.eq(rx.valid)
                receive("LEN")
            with m.State("LEN"):
                m.d.comb += [take_len.eq(rx.valid), pos_header.eq(1)]
                receive("PAYLOAD")
                with m.If(rx.valid & ~self.rx_error):
                    with m.If(rx.payload > W + 1):
                        discard(Status.TOO_LONG)
                    with m.Elif(rx.payload == 0):
                        m.next = "CRC_HI"
            with m.State("PAYLOAD"):
                receive("PAYLOAD")
                word_done = rx.valid & (nbyte == 3)
                m.d.comb += [word_shift.eq(rx.valid), pos_step.eq(rx.valid), addr_take.eq(word_done & idx.all()),
                             wr.en.eq(word_done & ~idx.all()), count_take.eq(word_done & (idx == 0))]
                with m.If(word_done & ~self.rx_error & next_is_nwords):
                    m.next = "CRC_HI"
            with m.State("CRC_HI"):
                receive("CRC_LO")
            with m.State("CRC_LO"):
                receive("CHECK")
            with m.State("CHECK"):
                # The last byte's CRC step lands in ``crc`` (off the state machine's paths).
                m.next = "VERDICT"
            with m.State("VERDICT"):
                # ``crc`` is the remainder over the whole frame: zero if it came intact.
                with m.If(crc.any()):
                    discard(Status.BAD_CRC)
                with m.Else():
                    m.next = "EXEC"
            with m.State("DISCARD"):
                # Wait until the line is quiet, then answer with the error already found.
                m.d.comb += listening.eq(1)
                with m.If(byte_expired):
                    m.d.comb += [count_set.eq(1), count_value.eq(0)]
                    m.next = "R_SYNC"

            with m.State("EXEC"):
                # The verdict on the request, registered (its terms have been still since
                # the payload came in, CRC bytes ago): no command decode in front of the
                # state machine's outputs.
                m.d.sync += writing.eq(is_write)
                m.d.comb += pos_clear.eq(1)
                with m.If(is_info):
                    m.d.comb += [addr_info.eq(1), count_set.eq(1), count_value.eq(self.info_words)]
                with m.If(is_write):
                    m.d.comb += [count_set.eq(1), count_value.eq(nwords[:k])]
                with m.If(refused):
                    respond(verdict)
                with m.Else():
                    m.next = "BUS_PREP"
            with m.State("BUS_PREP"):
                # The buffer's read port shows word ``idx`` from the next cycle on.
                m.d.comb += [bus.cyc.eq(1), kick.eq(1)]
                m.next = "BUS_REQ"
            with m.State("BUS_REQ"):
                m.d.comb += [bus.cyc.eq(1), bus.stb.eq(1)]
                with m.If(~bus.stall):
                    m.next = "BUS_WAIT"
                with m.Elif(bus_expired):
                    m.d.comb += word_idx.eq(1)
                    respond(Status.BUS_TIMEOUT, 1)
            with m.State("BUS_WAIT"):
                m.d.comb += [bus.cyc.eq(1), step_word.eq(1), from_bus.eq(1)]
                with m.If(ack):
                    m.d.comb += [wr.en.eq(~writing), pos_step.eq(1), addr_next.eq(1)]
                    with m.If(next_is_count):
                        respond(Status.OK, Mux(writing, 0, count))
                    with m.Else():
                        m.next = "BUS_PREP"
                with m.Elif(err | bus_expired):
                    m.d.comb += word_idx.eq(1)
                    respond(Mux(err, Status.BUS_ERROR, Status.BUS_TIMEOUT), 1)

            # --- The response -------------------------------------------------------
            with m.State("R_SYNC"):
                m.d.comb += [crc_init.eq(1), pos_clear.eq(1)]
                send(SYNC_RESPONSE, "R_STATUS", through_crc=False)
            with m.State("R_STATUS"):
                send(status, "R_SEQ")
            with m.State("R_SEQ"):
                send(seq, "R_LEN")
            with m.State("R_LEN"):
                send(count, "R_PREP")
                with m.If(tx.ready & (count == 0)):
                    m.next = "R_CRC_HI"
            with m.State("R_PREP"):
                m.next = "R_LOAD"
            with m.State("R_LOAD"):
                # A bus error's answer is the failing word's index, already in ``word``.
                m.d.comb += word_load.eq(status == Status.OK)
                m.next = "R_DATA"
            with m.State("R_DATA"):
                send(word[:8], "R_DATA")
                m.d.comb += [word_shift.eq(tx.ready), pos_step.eq(tx.ready)]
                with m.If(tx.ready & (nbyte == 3)):
                    m.next = "R_PREP"
                    with m.If(next_is_count):
                        m.next = "R_CRC_HI"
            with m.State("R_CRC_HI"):
                with m.If(~crc_go):     # (the last byte's CRC step is done)
                    send(crc[8:], "R_CRC_LO", through_crc=False)
            with m.State("R_CRC_LO"):
                send(crc[:8], "IDLE", through_crc=False)
                with m.If(tx.ready):
                    m.d.sync += self.failed.eq(status != Status.OK)
            m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m
