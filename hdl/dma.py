"""The DMA unit: 2-D strided LOADs into the buffers and STOREs of post-processed rows.

It executes one LOAD or STORE at a time, in program order, through a Wishbone B4
pipelined master: it issues one bus word per cycle while the bus does not stall,
across row boundaries, and counts the answers. Every request address is checked
against the DMA window before it is presented on the bus; an address outside is never
issued. A refused address or an ERR answer stops the command: no further requests
are issued, the ones already issued are answered, then ``fault`` is raised with the
code and the byte address, and the unit stays there until reset.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from . import wishbone
from .pe import registered_dsp
from .pipeline import register, step_count
from .isa import INSTRUCTION_BITS, INSTRUCTION_BYTES, BUFFER_KINDS, Buffer, ErrorCode, row_bytes, row_format, \
    row_kinds, row_words
from .layouts import act_write_layout, idx_write_layout, output_layout, param_write_layout, wgt_write_layout

__all__ = ["DMAUnit", "dma_command_layout", "side_param_layout", "in_window", "below_limit", "next_window_check",
           "bus_signature", "MAX_BURST"]

#: Requests issued back to back before the unit offers the bus to the instruction
#: fetcher (only when the fetcher is waiting for it).
MAX_BURST = 64


def bus_signature(config):
    """The DMA master's Wishbone signature: word addresses covering 32-bit byte addresses."""
    return wishbone.Signature(addr_width=32 - exact_log2(config.bus_bytes), data_width=config.bus_width)


def dma_command_layout(config):
    """A LOAD or STORE; with sequential dispatch also an instruction fetch (``fetch``: one
    16-byte row read into ``insn``, nothing written)."""
    return data.StructLayout({
        "store":    unsigned(1),
        "fetch":    unsigned(1),
        "buffer":   unsigned(2),
        "rows":     unsigned(16),
        "buf_addr": unsigned(16),
        "mem_addr": unsigned(32),
        "stride":   unsigned(32),
    })


def side_param_layout(config):
    """Per-entry output quantisation, kept beside the parameter buffer for STORE dispatch."""
    return data.StructLayout({
        "zero_point": signed(config.data_width),
        "clamp_lo":   signed(config.data_width),
        "clamp_hi":   signed(config.data_width),
    })


def in_window(m, addr, nbytes, base, limit):
    """True when bytes ``addr .. addr+nbytes-1`` all lie in ``[base, limit)``.

    ``limit - nbytes`` is kept in a register (the window registers change only between
    programs), so the check is two compares of registers, which map to carry chains,
    with no adder in front of them. ``addr`` may be a list: then a list of checks, which
    share that register.
    """
    addrs = addr if isinstance(addr, list) else [addr]
    # Written as subtractions tested by their sign, which map to carry chains.
    checks = [~(a - base)[-1] & below for a, below in zip(addrs, below_limit(m, addrs, nbytes, limit))]
    return checks if isinstance(addr, list) else checks[0]


def below_limit(m, addrs, nbytes, limit):
    """For each address of the list ``addrs``: true when bytes ``addr .. addr+nbytes-1`` lie
    below ``limit`` (the upper half of :func:`in_window`, ``limit - nbytes`` a register)."""
    last = Signal(signed(34))       # the last address a request may start at; negative: none
    m.d.sync += last.eq(limit - nbytes)
    return [~(last - a)[-1] for a in addrs]


def next_window_check(m, config, word_ok, addr_next, candidates, nbytes, base, limit):
    """Drive the register ``word_ok`` with the window check of ``addr_next``, the value a
    request address register takes next.

    ``candidates`` lists ``(condition, address)`` in priority order: the values
    ``addr_next`` takes (it keeps its value when none holds). With register slices each
    candidate is checked from registers on its own and the conditions only choose among
    the results, so the accept logic that picks the next address is not in front of the
    compares; otherwise one check of ``addr_next`` (smaller).
    """
    if not config.register_slices:
        m.d.sync += word_ok.eq(in_window(m, addr_next, nbytes, base, limit))
        return
    # The window registers copied beside the unit (a cycle later: they are written between
    # programs), so the compares do not start with a route from the register file.
    local = [register(m, base, name=f"{word_ok.name}_base"), register(m, limit, name=f"{word_ok.name}_limit")]
    oks = in_window(m, [address for _, address in candidates], nbytes, *local)
    verdict = word_ok
    for (condition, _), ok in reversed(list(zip(candidates, oks))):
        verdict = Mux(condition, ok, verdict)
    m.d.sync += word_ok.eq(verdict)


class DMAUnit(wiring.Component):
    def __init__(self, config):
        self.config = config
        c = config
        sparse = {"idx_wr": Out(stream.Signature(idx_write_layout(c)))} if c.sparse else {}
        super().__init__({
            **sparse,
            "cmd":          In(stream.Signature(dma_command_layout(c))),
            "done":         Out(1),      # pulse: the accepted command has completed
            "bus":          Out(bus_signature(c)),
            "bus_req":      Out(1),      # this unit wants the bus (to the arbiter)
            "gnt":          In(1),       # the arbiter has given this unit the bus
            "yield_bus":    In(1),       # the other master is waiting for the bus
            "window_base":  In(32),
            "window_limit": In(32),
            "act_wr":       Out(stream.Signature(act_write_layout(c))),
            "wgt_wr":       Out(stream.Signature(wgt_write_layout(c))),
            "param_wr":     Out(stream.Signature(param_write_layout(c))),
            "side_wr":      Out(stream.Signature(data.StructLayout({
                                "addr": unsigned(16), "data": side_param_layout(c)}))),
            "rows_in":      In(stream.Signature(output_layout(c))),   # post-processed rows
            "fault":        Out(1),
            "fault_code":   Out(4),
            "fault_addr":   Out(32),
            "busy":         Out(1),
            "event_bytes_read":    Out(8),
            "event_bytes_written": Out(8),
            "event_bus_wait":      Out(1),
            # Sequential dispatch: the instruction the last fetch read (until the next command).
            **({"insn": Out(INSTRUCTION_BITS)} if c.dispatch == "sequential" else {}),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        bb, bw = c.bus_bytes, c.bus_width
        addr_shift = exact_log2(bb)
        kinds = {buf: kind for buf, kind in BUFFER_KINDS.items() if kind in row_kinds(c)}
        words = {kind: row_words(c, kind) for kind in row_kinds(c)}
        fetches = c.dispatch == "sequential"
        fetch_words = INSTRUCTION_BYTES // bb
        # Streamed parameters go to the requantiser word by word: no row register for them.
        streamed = c.streamed_params
        max_words = max(*words.values(), fetch_words if fetches else 1)
        row_reg_words = max(*(n for kind, n in words.items() if not (streamed and kind == "param")),
                            fetch_words if fetches else 1)

        cmd = Signal(dma_command_layout(c))
        # Words per row of the running command, minus one: a register, loaded with the
        # command (``cmd`` is loaded while the unit waits for one, below).
        last_word_index = Signal(range(max_words))
        presented_index = Signal(range(max_words))
        p = self.cmd.payload
        with m.If(p.store):
            m.d.comb += presented_index.eq(words["out"] - 1)
        with m.Elif(p.fetch if fetches else 0):
            m.d.comb += presented_index.eq(fetch_words - 1)
        with m.Else():
            with m.Switch(p.buffer):
                for buf, kind in kinds.items():
                    with m.Case(buf):
                        m.d.comb += presented_index.eq(words[kind] - 1)
        with m.If(self.cmd.ready):
            m.d.sync += last_word_index.eq(presented_index)

        # --- Request side -----------------------------------------------------------
        req_addr = Signal(32)          # byte address of the next request
        req_row_next = Signal(32)      # byte address of the next row's first request
        req_addr_inc = Signal(32)      # req_addr + bus_bytes (a register with register slices)
        req_word = Signal(range(max_words))
        req_rows_left = Signal(17)     # rows with requests still to issue
        burst = Signal(range(MAX_BURST + 1))
        outstanding = Signal(range(MAX_BURST + 2))
        stopping = Signal()            # a fault happened: issue nothing more
        fault_code = Signal(4)
        fault_addr = Signal(32)

        # --- Response side ----------------------------------------------------------
        resp_addr = Signal(32)
        resp_row_base = Signal(32)
        resp_word = Signal(range(max_words))
        resp_row = Signal(16)
        row_reg = Signal(row_reg_words * bw)
        row_write = Signal()           # row_reg holds a complete row to write this cycle
        row_write_addr = Signal(16)

        # --- STORE row register -----------------------------------------------------
        srow = Signal(words["out"] * bw)
        srow_valid = Signal()
        capture_left = Signal(17)
        capture_some = Signal()        # capture_left != 0, kept as a register of its own

        running = Signal()
        m.d.comb += self.busy.eq(running)
        # The request address is worked out a cycle ahead (``req_addr_next``), and the window
        # check of the address presented (or, without register slices, its pick from
        # registers) and "no rows left" are registers: no compare sits between the accept
        # logic and the bus request.
        req_addr_next = Signal(32)
        m.d.comb += req_addr_next.eq(req_addr)
        m.d.sync += req_addr.eq(req_addr_next)
        req_done = Signal(init=1)
        word_ok = Signal()

        accept = self.bus.stb & ~self.bus.stall
        # Answers come only to requests outstanding (the register, not the combinational cyc).
        # ``pending`` is ``outstanding != 0`` kept as a register of its own.
        pending = Signal()
        ack = pending & self.bus.ack
        err = pending & self.bus.err
        have_data = ~cmd.store | srow_valid
        # A request held by stall stays presented, unchanged, until the bus takes it
        # (Wishbone B4), even if the unit meanwhile wants to stop or yield the bus.
        was_stalled = Signal()
        m.d.sync += was_stalled.eq(self.bus.stb & self.bus.stall)
        # After MAX_BURST requests, let the waiting instruction fetcher have the bus.
        burst_full = Signal()           # burst == MAX_BURST, kept as a register of its own
        hold = burst_full & self.yield_bus & ~was_stalled
        # With the serial requantiser the datapath takes a parameter row in several cycles
        # (``param_wr.ready``) while ``row_reg`` holds it: a parameter row's requests wait
        # until the row before it is answered and written. (Parameter rows are few.)
        held = c.requantiser == "serial" and c.requant_passes > 1 and not streamed
        row_gate = Const(0, 1)
        if held:
            row_gate = (cmd.buffer == Buffer.PARAM) & ~cmd.store & (req_word == 0) & (pending | row_write)
        want_issue = running & ((~req_done & ~stopping & ~hold & have_data & ~row_gate) | was_stalled)
        release = hold & ~pending
        # With register slices ``want_issue`` is a register of its own (``wanting``, worked
        # out from the next values of its terms: see the end), so the bus's accept is the
        # grant, that register, ``word_ok`` and the stall, and the hundred-odd registers an
        # accept steps have no request logic in front of them. (It sees the fetcher's wish
        # for the bus, ``yield_bus``, a cycle later.)
        registered_request = c.register_slices and not held
        if registered_request:
            wanting = Signal()
            requesting = wanting & word_ok
        else:
            requesting = want_issue & word_ok
        # On an ECP5 the request addresses step on an accept of their own, from a copy of
        # ``wanting`` (the same value, kept apart): the accept's fan-out split in two.
        separate = registered_request and registered_dsp(platform)
        wanting_addr = Signal()
        accept_addr = (self.gnt & wanting_addr & word_ok & ~self.bus.stall) if separate else accept
        m.d.comb += self.bus_req.eq(requesting | pending)

        m.d.comb += [
            self.bus.cyc.eq(self.gnt & self.bus_req),
            self.bus.stb.eq(self.gnt & requesting),
            self.bus.we.eq(cmd.store),
            self.bus.adr.eq(req_addr[addr_shift:]),
        ]
        # The STORE row's word (with register slices also in a LOAD's requests, where the
        # bus ignores it: no command decode in front of the bus's data register).
        # With register slices (and rows of more than one bus word) the read row register
        # shifts down a word in the cycle after each word but a row's last is accepted
        # (``shift``, a register): the word on the bus is its first or, in that cycle, its
        # second, a small multiplexer of registers in place of a word select by ``req_word``.
        shifting = c.register_slices and words["out"] > 1
        shift = Signal()
        if shifting:
            store_word = Mux(shift, srow[bw:2 * bw], srow[:bw])
        else:
            store_word = srow.word_select(req_word, bw) if words["out"] > 1 else srow
        m.d.comb += self.bus.dat_w.eq(store_word if c.register_slices else Mux(cmd.store, store_word, 0))
        take_cmd = self.cmd.valid & self.cmd.ready
        # While the unit waits for a command, its registers follow the command presented (none
        # of them is used meanwhile); taking it only sets ``running``. So ``valid``, the end
        # of the dispatch logic, enables one register, not all of them.
        idle = self.cmd.ready
        # ``req_word == last_word_index``, kept as a register of its own (it picks the next
        # request address, in front of the window check).
        row_end = Signal()
        with m.If(idle):
            m.d.sync += row_end.eq(presented_index == 0)
        with m.Elif(accept):
            m.d.sync += row_end.eq(Mux(row_end, last_word_index == 0, req_word + 1 == last_word_index))
        if c.register_slices:
            next_window_check(m, c, word_ok, req_addr_next,
                              [(idle, self.cmd.payload.mem_addr), (accept & row_end, req_row_next),
                               (accept, req_addr_inc)], bb, self.window_base, self.window_limit)
        else:
            # Without register slices (the iCE40) ``word_ok`` is picked from registers: each
            # compare's carry chain ends in a register of its own, a verdict on the value an
            # address register had the cycle before, and what became of the request address
            # since (taken from the command, moved to the next row, stepped a word, kept)
            # picks the verdict that applies to it now. These are the values the register
            # ``word_ok`` would take (the compares a cycle earlier, their pick a cycle
            # later), with no carry chain between the accept logic and a register.
            # The next word's check is of its upper bound only: ``req_addr`` was accepted, so
            # it lies in the window, and ``req_addr + bus_bytes`` is not below the base
            # and does not wrap.
            ok_cmd, ok_row = in_window(m, [self.cmd.payload.mem_addr, req_row_next],
                                       bb, self.window_base, self.window_limit)
            ok_step, = below_limit(m, [req_addr], 2 * bb, self.window_limit)
            verdicts = {name: Signal(name=f"word_ok_{name}") for name in ("cmd", "row", "step", "kept")}
            came = {name: Signal(name=f"req_addr_{name}") for name in verdicts}
            m.d.sync += [
                verdicts["cmd"].eq(ok_cmd), verdicts["row"].eq(ok_row), verdicts["step"].eq(ok_step),
                verdicts["kept"].eq(word_ok),
                # (A command is taken only while no request is: no accept while idle.)
                came["cmd"].eq(idle), came["row"].eq(accept & row_end), came["step"].eq(accept & ~row_end),
                came["kept"].eq(~idle & ~accept),
            ]
            m.d.comb += word_ok.eq(Cat(*(came[n] & verdicts[n] for n in verdicts)).any())
        if c.register_slices:
            # req_addr + bus_bytes for the next request address, each candidate's sum from registers.
            m.d.sync += req_addr_inc.eq(Mux(idle, self.cmd.payload.mem_addr + bb,
                                            Mux(accept_addr, Mux(row_end, req_row_next + bb, req_addr_inc + bb),
                                                req_addr_inc)))
        else:
            m.d.comb += req_addr_inc.eq(req_addr + bb)      # (one adder, no register)
        # "No rows left to request", registered: from the rows left now, not the count's next value.
        # ``req_rows_left == 1`` kept as a register of its own (set with the count, stepped
        # with it): no compare between the accept and ``req_done``'s next value.
        rows_one = Signal()
        with m.If(idle):
            m.d.sync += rows_one.eq(self.cmd.payload.rows == 1)
        with m.Elif(accept_addr & row_end):
            m.d.sync += rows_one.eq(req_rows_left == 2)
        req_done_next = Mux(idle, self.cmd.payload.rows == 0, Mux(accept & row_end, rows_one, req_done))
        m.d.sync += req_done.eq(req_done_next)
        # Byte selects: a STORE's last word of a row carries only the row's data bytes.
        tail_bytes = row_bytes(c, "out") - (words["out"] - 1) * bb
        full_sel = (1 << bb) - 1
        m.d.comb += self.bus.sel.eq(Mux(cmd.store & (req_word == words["out"] - 1),
                                        (1 << tail_bytes) - 1, full_sel))

        # Window refusal: the request never reaches the bus.
        with m.If(want_issue & ~word_ok):
            m.d.sync += [stopping.eq(1), fault_code.eq(ErrorCode.WINDOW), fault_addr.eq(req_addr)]
        with m.If(err & ~stopping):
            m.d.sync += [stopping.eq(1), fault_code.eq(ErrorCode.BUS_ERROR), fault_addr.eq(resp_addr)]
        with m.If(release):
            m.d.sync += [burst.eq(0), burst_full.eq(0)]
        with m.Elif(accept & ~burst_full):
            m.d.sync += [burst.eq(burst + 1), burst_full.eq(burst == MAX_BURST - 1)]

        with m.If(accept_addr):
            with m.If(row_end):
                m.d.sync += [req_word.eq(0), req_row_next.eq(req_row_next + cmd.stride),
                             req_rows_left.eq(req_rows_left - 1)]
                m.d.comb += req_addr_next.eq(req_row_next)
            with m.Else():
                m.d.sync += req_word.eq(req_word + 1)
                m.d.comb += req_addr_next.eq(req_addr_inc)
        m.d.sync += outstanding.eq(step_count(outstanding, accept, ack | err))
        with m.If(accept):
            m.d.sync += pending.eq(1)
        with m.Elif((ack | err) & (outstanding == 1)):
            m.d.sync += pending.eq(0)

        # STORE rows: ``srow`` holds the row being written out.
        last_accept = accept & row_end
        # From registers only: the row stream's ``ready`` crosses the device to the datapath.
        can_take = running & cmd.store & ~stopping & capture_some
        eb = c.element_bytes
        out_bytes = Cat(*(_sign_extend(self.rows_in.payload[n], 8 * eb) for n in range(c.cols)))
        if c.register_slices:
            # Two row registers, written in turn and read in turn: a row is taken whenever
            # one is free (registered). The bus's accept moves only the read slot and the
            # count of rows held, never a row register's enable (a slot is written while it
            # is free, whether or not a row comes: only ``taken`` counts it).
            slots = [Signal.like(srow, name=f"srow_slot{i}") for i in range(2)]
            wr_slot, rd_slot = Signal(), Signal()
            full = Signal()             # both slots hold a row (srow_valid: at least one)
            # ``ready`` from three registers: ``can_take`` but ``stopping`` is registered, from
            # this cycle's ``running`` and command and the next ``capture_some`` (``taken`` only
            # picks it): late by one cycle only as a command starts (a cycle per STORE).
            # (``capture_left == 1`` is a register of its own too, ``capture_last``: not a
            # 17-bit compare behind ``taken``.)
            take_ok = Signal()
            capture_last = Signal()
            take_row = take_ok & ~stopping & ~full
            taken = take_row & self.rows_in.valid
            m.d.sync += take_ok.eq(running & cmd.store & Mux(taken, ~capture_last, capture_some))
            with m.If(idle):
                m.d.sync += capture_last.eq(self.cmd.payload.store & (self.cmd.payload.rows == 1))
            with m.Elif(taken):
                m.d.sync += capture_last.eq(capture_left == 2)
            m.d.comb += [self.rows_in.ready.eq(take_row), srow.eq(Mux(rd_slot, slots[1], slots[0]))]
            for i, slot in enumerate(slots):
                with m.If(~full & (wr_slot == i)):
                    m.d.sync += slot.eq(out_bytes)
                if shifting:
                    # The read slot holds a row (it is not free) while its words go out.
                    with m.Elif(shift & (rd_slot == i)):
                        m.d.sync += slot.eq(slot[bw:])
            # After k words of a row accepted, the slot has shifted k - 1 times with a shift
            # pending (word k is its second) or k times (its first).
            m.d.sync += shift.eq(accept & ~row_end)
            with m.If(taken):
                m.d.sync += [capture_left.eq(capture_left - 1), capture_some.eq(~capture_last),
                             wr_slot.eq(~wr_slot)]
            with m.If(last_accept):
                m.d.sync += rd_slot.eq(~rd_slot)
            srow_valid_next = Mux(idle, 0, Mux(taken & ~last_accept, 1, Mux(last_accept & ~taken, full, srow_valid)))
            m.d.sync += srow_valid.eq(srow_valid_next)
            with m.If(taken & ~last_accept):
                m.d.sync += full.eq(srow_valid)
            with m.Elif(last_accept & ~taken):
                m.d.sync += full.eq(0)
            with m.If(idle):
                m.d.sync += [full.eq(0), wr_slot.eq(0), rd_slot.eq(0)]
        else:
            # One row register: a row is taken when it is free or its last word is being
            # accepted. After a serial requantiser (a row in 17 cycles or more) only when it
            # is free, which costs nothing and keeps the bus's stall out of the datapath.
            with m.If(last_accept):
                m.d.sync += srow_valid.eq(0)
            if c.requantiser == "serial":
                take_row = can_take & ~srow_valid
            else:
                take_row = can_take & (~srow_valid | last_accept)
            m.d.comb += self.rows_in.ready.eq(take_row)
            with m.If(take_row & self.rows_in.valid):
                m.d.sync += [srow.eq(out_bytes), srow_valid.eq(1), capture_left.eq(capture_left - 1),
                             capture_some.eq(capture_left != 1)]

        # Responses, in request order.
        if c.register_slices:
            # ``resp_word == last_word_index`` and the next row's address kept as registers
            # of their own (as on the request side): the answer only picks among registers.
            resp_end = Signal()
            resp_row_next = Signal(32)
            with m.If(idle):
                m.d.sync += [resp_end.eq(presented_index == 0),
                             resp_row_next.eq(self.cmd.payload.mem_addr + self.cmd.payload.stride)]
            with m.Elif(ack | err):
                m.d.sync += resp_end.eq(Mux(resp_end, last_word_index == 0, resp_word + 1 == last_word_index))
                with m.If(resp_end):
                    m.d.sync += resp_row_next.eq(resp_row_next + cmd.stride)
            resp_row_start = resp_row_next
        else:
            resp_end = resp_word == last_word_index
            resp_row_start = resp_row_base + cmd.stride
        with m.If(ack | err):
            with m.If(resp_end):
                m.d.sync += [resp_word.eq(0), resp_row_base.eq(resp_row_start),
                             resp_addr.eq(resp_row_start), resp_row.eq(resp_row + 1)]
            with m.Else():
                m.d.sync += [resp_word.eq(resp_word + 1), resp_addr.eq(resp_addr + bb)]
        # A row is written in the cycle after its last word, or (a parameter row into the
        # serial requantiser) over the cycles until the datapath takes it.
        if held:
            m.d.sync += row_write.eq(row_write & (cmd.buffer == Buffer.PARAM) & ~self.param_wr.ready)
        else:
            m.d.sync += row_write.eq(0)
        param_word = Const(0, 1)
        if streamed:
            param_word = (cmd.buffer == Buffer.PARAM) & ~cmd.fetch
        # With register slices an answer's word goes into the row register a cycle later,
        # from registers: the word, and one enable register per word of the row (not the
        # bus's ack decoded into the enables of hundreds of flip-flops spread over the
        # device, beside the buffers they feed).
        staged = c.register_slices and not held and not streamed
        if staged:
            word_data = Signal(bw)
            word_en = Signal(row_reg_words)
            row_staged = Signal()       # a row's last word is on its way into the row register
            staged_addr = Signal.like(row_write_addr)
            m.d.sync += [word_data.eq(self.bus.dat_r),
                         word_en.eq(Cat(*(ack & ~cmd.store & (resp_word == k) for k in range(row_reg_words)))),
                         row_staged.eq(ack & ~cmd.store & resp_end & ~stopping & ~err),
                         staged_addr.eq(cmd.buf_addr + resp_row)]
            for k in range(row_reg_words):
                with m.If(word_en[k]):
                    m.d.sync += row_reg.word_select(k, bw).eq(word_data)
            with m.If(row_staged):
                m.d.sync += [row_write.eq(1), row_write_addr.eq(staged_addr)]
        else:
            with m.If(ack & ~cmd.store):
                with m.If(~param_word):
                    m.d.sync += row_reg.word_select(resp_word[:max(1, (row_reg_words - 1).bit_length())], bw).eq(
                        self.bus.dat_r)
                with m.If((resp_word == last_word_index) & ~stopping & ~err):
                    m.d.sync += [row_write.eq(1), row_write_addr.eq(cmd.buf_addr + resp_row)]

        # Buffer writes of complete rows, fields cut out of the row per the row format.
        def field_value(f):
            return row_reg[8 * f.offset:8 * f.offset + f.width]

        full_mask_r, full_mask_c = (1 << c.act_lanes) - 1, (1 << c.cols) - 1
        if fetches:
            # A fetched instruction is read from the row register; no buffer is written.
            m.d.comb += self.insn.eq(row_reg[:INSTRUCTION_BITS])
            row_write = row_write & ~cmd.fetch
        m.d.comb += [
            self.act_wr.valid.eq(row_write & (cmd.buffer == Buffer.ACT)),
            self.act_wr.payload.addr.eq(row_write_addr),
            self.act_wr.payload.mask.eq(full_mask_r),
            self.wgt_wr.valid.eq(row_write & (cmd.buffer == Buffer.WGT)),
            self.wgt_wr.payload.addr.eq(row_write_addr),
            self.wgt_wr.payload.mask.eq(full_mask_c),
        ]
        if streamed:
            # Each word of a parameter row as it comes; the word holding the zero point and
            # clamps goes to the side memory too.
            side_fields = [f for f in row_format(c, "param") if f.name not in ("bias", "mult", "shift")]
            side_word = side_fields[0].offset // bb
            assert all(f.offset // bb == side_word for f in side_fields)
            word_addr = Signal.like(row_write_addr)
            m.d.comb += word_addr.eq(cmd.buf_addr + resp_row)
            write_word = ack & param_word & ~stopping
            m.d.comb += [
                self.param_wr.valid.eq(write_word),
                self.param_wr.payload.addr.eq(word_addr),
                self.param_wr.payload.word.eq(resp_word),
                self.param_wr.payload.data.eq(self.bus.dat_r),
                self.side_wr.valid.eq(write_word & (resp_word == side_word)),
                self.side_wr.payload.addr.eq(word_addr),
            ]
            for f in side_fields:
                offset = 8 * (f.offset - side_word * bb)
                m.d.comb += getattr(self.side_wr.payload.data, f.name).eq(self.bus.dat_r[offset:offset + f.width])
        else:
            m.d.comb += [
                self.param_wr.valid.eq(row_write & (cmd.buffer == Buffer.PARAM)),
                self.param_wr.payload.addr.eq(row_write_addr),
                self.param_wr.payload.mask.eq(full_mask_c),
                self.side_wr.valid.eq(row_write & (cmd.buffer == Buffer.PARAM) & self.param_wr.ready),
                self.side_wr.payload.addr.eq(row_write_addr),
            ]
        if c.sparse:
            m.d.comb += [self.idx_wr.valid.eq(row_write & (cmd.buffer == Buffer.IDX)),
                         self.idx_wr.payload.addr.eq(row_write_addr)]
            for f in row_format(c, "idx"):
                m.d.comb += self.idx_wr.payload.data[f.index].eq(field_value(f))
        for f in row_format(c, "act"):
            m.d.comb += self.act_wr.payload.data[f.index].eq(field_value(f))
        for f in row_format(c, "wgt"):
            m.d.comb += self.wgt_wr.payload.data[f.index].eq(field_value(f))
        for f in row_format(c, "param") if not streamed else ():
            if f.name in ("bias", "mult", "shift"):
                m.d.comb += getattr(self.param_wr.payload.data[f.index], f.name).eq(field_value(f))
            else:
                m.d.comb += getattr(self.side_wr.payload.data, f.name).eq(field_value(f))

        # --- Command sequencing -----------------------------------------------------
        finished = running & req_done & ~pending & ~row_write & ~stopping
        if staged:
            finished = finished & ~row_staged
        m.d.comb += self.cmd.ready.eq(~running & ~stopping)
        with m.If(take_cmd):
            m.d.sync += running.eq(1)
        with m.If(idle):
            p = self.cmd.payload
            m.d.comb += req_addr_next.eq(p.mem_addr)
            m.d.sync += [
                cmd.eq(p), req_rows_left.eq(p.rows),
                req_row_next.eq(p.mem_addr + p.stride), req_word.eq(0),
                resp_addr.eq(p.mem_addr), resp_row_base.eq(p.mem_addr),
                resp_word.eq(0), resp_row.eq(0), capture_left.eq(Mux(p.store, p.rows, 0)),
                capture_some.eq(p.store & (p.rows != 0)),
                srow_valid.eq(0), burst.eq(0), burst_full.eq(0),
            ]
        with m.If(finished):
            m.d.sync += running.eq(0)
        m.d.comb += self.done.eq(finished)
        if registered_request:
            # ``want_issue`` of the next cycle, from the next values of its terms (the idle
            # unit's from the command presented, which it loads when it takes it): these
            # are the values the assignments above give the registers.
            stopping_next = stopping | (want_issue & ~word_ok) | err
            burst_full_next = Mux(idle | release, 0, Mux(accept & ~burst_full, burst == MAX_BURST - 1, burst_full))
            running_next = Mux(take_cmd, 1, running & ~finished)
            stalled_next = self.bus.stb & self.bus.stall
            hold_next = burst_full_next & self.yield_bus & ~stalled_next
            have_data_next = Mux(idle, ~self.cmd.payload.store, ~cmd.store | srow_valid_next)
            wanting_next = running_next & (stalled_next | (~req_done_next & ~stopping_next & ~hold_next
                                                            & have_data_next))
            m.d.sync += wanting.eq(wanting_next)
            if separate:
                m.d.comb += wanting_addr.eq(register(m, wanting_next, name="wanting_addr_ff", separate=True))
        m.d.comb += [
            self.fault.eq(stopping & ~pending & ~was_stalled),   # no request presented
            self.fault_code.eq(fault_code),
            self.fault_addr.eq(fault_addr),
        ]

        # --- Events -----------------------------------------------------------------
        m.d.comb += [
            self.event_bytes_read.eq(Mux(ack & ~cmd.store, bb, 0)),
            self.event_bytes_written.eq(Mux(ack & cmd.store,
                                            Mux(resp_word == words["out"] - 1, tail_bytes, bb), 0)),
            self.event_bus_wait.eq(self.bus.cyc & ((self.bus.stb & self.bus.stall)
                                                   | (~self.bus.stb & ~self.bus.ack & pending))),
        ]
        return m


def _sign_extend(value, width):
    """The signed element ``value`` sign-extended to ``width`` bits."""
    return Cat(value, *([value[-1]] * (width - len(value))))
