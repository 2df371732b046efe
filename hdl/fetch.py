"""Instruction fetch: reads command-ring slots ahead of dispatch into a small FIFO.

Slots ``RING_HEAD ..`` up to (not including) ``RING_TAIL`` are read, wrapping at
``RING_SIZE``, through the shared Wishbone master; each instruction leaves with its slot
number (instructions leave in ring order from ``head``, so a counter beside the FIFO
tells it: the FIFO holds the instructions alone). Every request is checked against the
DMA window first. A refused request, an ERR answer or a bad ring register stops
fetching and raises ``fault`` (with code, byte address and slot); the dispatcher
reports it once every instruction fetched before it has been dispatched, so errors
surface in program order.
"""

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from .dma import bus_signature, next_window_check
from .isa import INSTRUCTION_BITS, INSTRUCTION_BYTES, ErrorCode
from .pe import registered_dsp
from .pipeline import register, step_count

__all__ = ["Fetcher", "fetched_layout", "FETCH_DEPTH"]

#: Instructions fetched ahead of dispatch.
FETCH_DEPTH = 8
#: The fetcher asks for the bus when at least this many FIFO slots are free (or it is empty).
FETCH_BATCH = 4

fetched_layout = data.StructLayout({"insn": INSTRUCTION_BITS, "slot": 32})


class Fetcher(wiring.Component):
    def __init__(self, config):
        self.config = config
        super().__init__({
            "enable":       In(1),     # fetching allowed (running, not stopping)
            "restart":      In(1),     # pulse: drop everything fetched, continue at ``head``
            "head":         In(32),
            "tail":         In(32),
            "ring_base":    In(32),
            "ring_size":    In(32),
            "window_base":  In(32),
            "window_limit": In(32),
            "insn":         Out(stream.Signature(fetched_layout)),
            "bus":          Out(bus_signature(config)),
            "bus_req":      Out(1),
            "gnt":          In(1),
            "idle":         Out(1),    # no request outstanding (as of the previous cycle)
            "caught_up":    Out(1),    # every slot before ``tail`` has been requested
            "fault":        Out(1),
            "fault_code":   Out(4),
            "fault_addr":   Out(32),
            "fault_slot":   Out(32),
            "event_bytes_read": Out(8),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        bb, bw = c.bus_bytes, c.bus_width
        words = INSTRUCTION_BYTES // bb

        # The FIFO holds bus words (a narrow FIFO is a few block RAMs, a 128-bit one is eight
        # on an iCE40): each answer goes in as it comes, and the instruction at the head is
        # gathered on the way out, its last word read straight from the FIFO.
        flush = Signal()
        m.submodules.queue = queue = ResetInserter(flush)(
            fifo.SyncFIFOBuffered(width=bw, depth=FETCH_DEPTH * words))
        S = c.ring_bits             # slot numbers: the ring has at most 2**S slots
        out_slot = Signal(S)        # the slot of the instruction at the FIFO's head
        if words > 1:
            out_word = Signal(range(words))             # words gathered of the head instruction
            gathered = Signal((words - 1) * bw)
            last = out_word == words - 1
            m.d.comb += [
                self.insn.valid.eq(queue.r_rdy & last),
                self.insn.payload.insn.eq(Cat(gathered, queue.r_data)),
                queue.r_en.eq(~last | self.insn.ready),
            ]
            with m.If(queue.r_rdy & queue.r_en):
                m.d.sync += out_word.eq(Mux(last, 0, out_word + 1))
                with m.If(~last):
                    m.d.sync += gathered.word_select(out_word, bw).eq(queue.r_data)
            with m.If(flush):
                m.d.sync += out_word.eq(0)
        else:
            m.d.comb += [
                self.insn.valid.eq(queue.r_rdy),
                self.insn.payload.insn.eq(queue.r_data),
                queue.r_en.eq(self.insn.ready),
            ]
        m.d.comb += self.insn.payload.slot.eq(out_slot)

        fetch_slot = Signal(S)
        at_last = Signal()          # fetch_slot is the ring's last slot
        resp_at_last = Signal()     # resp_slot is the ring's last slot
        req_word = Signal(range(max(words, 2)))
        resp_slot = Signal(S)
        resp_word = Signal(range(max(words, 2)))
        reserved = Signal(range(FETCH_DEPTH + 1))   # FIFO entries plus slots being fetched
        outstanding = Signal(range(2 * words * FETCH_DEPTH + 1))
        stopped = Signal()                          # a fault: fetch nothing more
        discard = Signal()                          # an ERR answer: push nothing more
        fault_code = Signal(4)
        fault_addr = Signal(32)
        fault_slot = Signal(S)
        holding = Signal()                          # this fetcher holds the bus (cyc high)

        # Byte addresses of the next request and the next answer, kept as running pointers
        # (ring_base + slot * 16 + word * bus_bytes) so no adder sits in front of the bus.
        req_addr = Signal(32)
        resp_addr = Signal(32)
        # The next request address is worked out a cycle ahead, so its window check comes
        # from a register: no compare sits in front of the bus request.
        req_addr_next = Signal(32)
        # The ring head's byte address, registered: ``head`` and ``ring_base`` do not change
        # in the cycle before a restart (CSR writes land at least two cycles before START
        # takes effect; a program's END restarts long after its last dispatch moved ``head``).
        head_addr = Signal(32)
        req_addr_inc = Signal(32)   # req_addr + bus_bytes
        m.d.comb += req_addr_next.eq(req_addr)
        m.d.sync += req_addr.eq(req_addr_next)

        mid_slot = req_word != 0
        free = FETCH_DEPTH - reserved
        # Slots left before ``tail``, registered: false for a cycle after a slot's last word is
        # requested (then worked out again from the new ``fetch_slot``).
        slots_left = Signal()
        more = slots_left & self.enable & ~stopped
        # Registered (a cycle late): a bad RING_TAIL written while running faults a cycle later.
        # With register slices the compares are registered first (two cycles late; the slot's
        # is set at a restart from the head's), so the registered request's next value
        # (below) has no compare of the ring registers in front of it.
        bad_ring = Signal()
        if c.register_slices:
            ring_bad, slot_bad = Signal(), Signal()
            m.d.sync += ring_bad.eq((self.tail >= self.ring_size) | (self.ring_size > (1 << S)))
            with m.If(self.restart):
                m.d.sync += slot_bad.eq(self.head >= self.ring_size)
            with m.Else():
                m.d.sync += slot_bad.eq(fetch_slot >= self.ring_size)
            bad_ring_value = ring_bad | slot_bad
        else:
            bad_ring_value = ((self.tail >= self.ring_size) | (fetch_slot >= self.ring_size)
                              | (self.ring_size > (1 << S)))
        m.d.sync += bad_ring.eq(bad_ring_value)
        full = Signal()             # reserved == FETCH_DEPTH, kept as a register of its own
        can_issue = mid_slot | (more & ~bad_ring & ~full)
        word_ok = Signal()
        # A request held by stall stays presented, unchanged, until the bus takes it.
        was_stalled = Signal()
        m.d.sync += was_stalled.eq(self.bus.stb & self.bus.stall)
        go = ~stopped | was_stalled
        # Ask for the bus for a batch of slots; once holding it, keep fetching while there is room.
        # When to ask for the bus: a hint, registered (``more`` and ``can_issue`` are current).
        batch = Signal()
        if c.register_slices:
            # Slots up to the tail, registered first (a cycle older: a hint either way).
            ahead = Signal(signed(S + 1))
            m.d.sync += ahead.eq(self.tail[:S] - fetch_slot)
        else:
            ahead = self.tail[:S] - fetch_slot
        m.d.sync += batch.eq((free >= FETCH_BATCH) | (reserved == 0) | (ahead < free))
        start = more & batch
        want = (mid_slot | (holding & can_issue) | start) & word_ok & ~stopped & ~bad_ring
        asking = Signal()           # registered: no request logic in front of ``cyc``
        m.d.sync += asking.eq(want)
        pending = Signal()          # ``outstanding != 0``, kept as a register of its own
        m.d.comb += self.bus_req.eq(asking | was_stalled | pending)
        # With register slices the request but its window check is a register of its own
        # (``wanting``, worked out from the next values of its terms: see below), so the
        # bus's accept is the grant, that register, ``word_ok`` and the stall: no request
        # logic in front of the registers an accept steps. (It sees ``enable`` a cycle later:
        # the fetcher may ask for one more instruction after a stop, as it may anyway.)
        if c.register_slices:
            wanting = Signal()
            wanting_addr = Signal()
        else:
            wanting = self.bus_req & (can_issue | was_stalled) & go
        requesting = wanting & word_ok
        m.d.comb += [
            self.bus.cyc.eq(self.gnt & self.bus_req),
            self.bus.stb.eq(self.gnt & requesting),
            self.bus.we.eq(0),
            self.bus.adr.eq(req_addr[exact_log2(bb):]),
            self.bus.sel.eq((1 << bb) - 1),
        ]
        m.d.sync += holding.eq(self.bus.cyc)
        accept = self.bus.stb & ~self.bus.stall
        # On an ECP5 the request addresses step on an accept of their own, from a copy of
        # ``wanting`` (the same value, kept apart): the accept's fan-out split in two.
        separate = c.register_slices and registered_dsp(platform)
        accept_addr = (self.gnt & wanting_addr & word_ok & ~self.bus.stall) if separate else accept
        # Answers come only to requests outstanding (the register, not the combinational cyc).
        answer = pending & (self.bus.ack | self.bus.err)
        # With register slices the counts' next values only pick among sums of registers
        # (``step_count``): the accept, the end of the longest request path, meets no adder.
        count = step_count if c.register_slices else (lambda n, up, down: n + up - down)
        outstanding_next = count(outstanding, accept, answer)
        m.d.sync += outstanding.eq(outstanding_next)
        # ``outstanding == 1`` as a register of its own (from compares of the count, the
        # step picking one).
        out_one = Signal()
        m.d.sync += out_one.eq(Mux(accept == answer, out_one, Mux(accept, outstanding == 0, outstanding == 2)))
        with m.If(accept):
            m.d.sync += pending.eq(1)
        with m.Elif(answer & (outstanding == 1)):
            m.d.sync += pending.eq(0)
        # Answers to requests made before a restart are dropped: restart does not wait for
        # the bus, so whoever restarts the fetcher may look at a registered ``idle``.
        stale = Signal.like(outstanding)
        with m.If(self.restart):
            m.d.sync += stale.eq(outstanding_next)
        with m.Elif(answer & (stale != 0)):
            m.d.sync += stale.eq(stale - 1)
        if c.register_slices:
            # ``stale == 0`` kept as a register of its own, its next value from compares of
            # the counts alone (an answer means one is outstanding; after an accept one is).
            fresh = Signal(init=1)
            with m.If(self.restart):
                m.d.sync += fresh.eq(~accept & Mux(answer, outstanding == 1, outstanding == 0))
            with m.Elif(answer & ~fresh):
                m.d.sync += fresh.eq(stale == 1)
        else:
            fresh = stale == 0
        ack = pending & self.bus.ack & fresh
        err = pending & self.bus.err & fresh

        # The ring's last slot, registered: a wrap is an equality, not an add and a compare.
        last_slot, last_but_one = Signal(S), Signal(S)
        m.d.sync += [last_slot.eq(self.ring_size - 1), last_but_one.eq(self.ring_size - 2)]

        def advance(word, slot, addr, target=None, domain="sync", wrap=None, addr_inc=None):
            """Next bus word of an instruction; after its last, the next ring slot (wrapping).
            The next address goes to ``target`` in ``domain`` (``addr`` itself by default);
            ``wrap`` (slot is the ring's last) and ``addr_inc`` (addr + bus_bytes) may be given."""
            target = addr if target is None else target
            wrap = slot == last_slot if wrap is None else wrap
            addr_inc = addr + bb if addr_inc is None else addr_inc
            with m.If(word == words - 1):
                m.d.sync += [word.eq(0), slot.eq(Mux(wrap, 0, slot + 1))]
                m.d[domain] += target.eq(Mux(wrap, self.ring_base, addr_inc))
            with m.Else():
                m.d.sync += word.eq(word + 1)
                m.d[domain] += target.eq(addr_inc)

        ahead_of_tail = c.register_slices and words > 1
        if ahead_of_tail:
            # ``fetch_slot != tail`` as a register of its own (``differs``), picked from
            # compares registered a cycle before: the head's (for a restart; the head does
            # not change in the cycle before one), the next slot's (for a slot's last word:
            # the slot was the same a cycle before, slots last two words or more) and this
            # slot's (else; in the cycle after the slot moved, the value stays); the next
            # slot's against ``tail - 1``, registered (no adder in front of the compare). A
            # RING_TAIL write is seen up to three cycles later (a hint either way: ``tail``
            # only moves on, past slots the fetcher has not reached). Compares kept apart,
            # not one compare behind a multiplexer (which synthesis builds as a LUT chain).
            differs, moved = Signal(), Signal()
            head_differs, succ_differs, this_differs = Signal(), Signal(), Signal()
            tail_before = Signal.like(self.tail)
            slot_done = accept & (req_word == words - 1)
            m.d.sync += [tail_before.eq(self.tail - 1),
                         head_differs.eq(self.head != self.tail),
                         succ_differs.eq(Mux(at_last, self.tail != 0, fetch_slot != tail_before)),
                         this_differs.eq(fetch_slot != self.tail),
                         moved.eq(self.restart | slot_done),
                         differs.eq(Mux(self.restart, head_differs,
                                        Mux(slot_done, succ_differs, Mux(moved, differs, this_differs))))]
            m.d.sync += slots_left.eq(differs & ~slot_done)
        else:
            m.d.sync += slots_left.eq((fetch_slot != self.tail) & ~(accept & (req_word == words - 1)))
        with m.If(accept_addr):
            advance(req_word, fetch_slot, req_addr, req_addr_next, domain="comb", wrap=at_last, addr_inc=req_addr_inc)
        slot_end = req_word == words - 1
        next_window_check(m, c, word_ok, req_addr_next,
                          [(self.restart, head_addr), (accept & slot_end & at_last, self.ring_base),
                           (accept, req_addr_inc)], bb, self.window_base, self.window_limit)
        # ``at_last``: fetch_slot == last_slot, kept as a register of its own (worked out from
        # the slot's next value: the ring's first after the last, else the next one).
        def after(last, slot, name):
            """Whether the slot after ``slot`` is the ring's last (``last``: ``slot`` is). With
            register slices and more than one bus word per instruction, a register worked
            out a cycle ahead (so built outside any ``If``): a slot's last word comes at
            least two cycles after the last slot change, and the ring registers do not
            change while fetching."""
            value = Mux(last, last_slot == 0, slot == last_but_one)
            if not (c.register_slices and words > 1):
                return value
            ahead = Signal(name=name)
            m.d.sync += ahead.eq(value)
            return ahead
        next_at_last = after(at_last, fetch_slot, "next_at_last")
        next_resp_at_last = after(resp_at_last, resp_slot, "next_resp_at_last")
        with m.If(accept & slot_end):
            m.d.sync += at_last.eq(next_at_last)
        # req_addr + bus_bytes for the next request address, each candidate's sum from registers.
        m.d.sync += req_addr_inc.eq(Mux(self.restart, head_addr + bb,
                                        Mux(accept_addr, Mux(slot_end & at_last, self.ring_base + bb,
                                                             req_addr_inc + bb),
                                            req_addr_inc)))

        # Faults, in the order the requests would have been made.
        with m.If(~stopped & ~mid_slot & more & bad_ring):
            m.d.sync += [stopped.eq(1), fault_code.eq(ErrorCode.BAD_RING), fault_addr.eq(0),
                         fault_slot.eq(fetch_slot)]
        with m.Elif(~stopped & can_issue & ~word_ok):
            m.d.sync += [stopped.eq(1), fault_code.eq(ErrorCode.WINDOW), fault_addr.eq(req_addr),
                         fault_slot.eq(fetch_slot)]
        with m.If(err & ~discard):
            m.d.sync += [stopped.eq(1), discard.eq(1), fault_code.eq(ErrorCode.BUS_ERROR),
                         fault_addr.eq(resp_addr), fault_slot.eq(resp_slot)]

        with m.If(ack | err):
            advance(resp_word, resp_slot, resp_addr, wrap=resp_at_last)
            with m.If(resp_word == words - 1):
                m.d.sync += resp_at_last.eq(next_resp_at_last)
        # Every word answered goes in. After an ERR nothing more does: the words of the
        # instruction it cut short stay in the FIFO, never a whole instruction, so never
        # dispatched (a restart empties the FIFO).
        m.d.comb += [queue.w_en.eq(ack & ~discard), queue.w_data.eq(self.bus.dat_r)]
        with m.If(self.insn.valid & self.insn.ready):
            m.d.sync += out_slot.eq(Mux(out_slot == last_slot, 0, out_slot + 1))

        first_accept = accept & ~mid_slot
        popped = self.insn.valid & self.insn.ready
        m.d.sync += reserved.eq(count(reserved, first_accept, popped))
        with m.If(first_accept & ~popped & (reserved == FETCH_DEPTH - 1)):
            m.d.sync += full.eq(1)
        with m.Elif(popped & ~first_accept):
            m.d.sync += full.eq(0)

        m.d.sync += head_addr.eq(self.ring_base + (self.head << exact_log2(INSTRUCTION_BYTES)))
        # ``head == last_slot`` for a restart, registered like ``head_addr`` (and for the same
        # reason; RING_SIZE is written cycles before a START, so ``last_slot`` is settled).
        head_at_last = Signal()
        m.d.sync += head_at_last.eq(self.head == last_slot)
        idle = Signal()             # registered: a cycle late

        m.d.sync += idle.eq(~pending & ~self.bus.stb)
        with m.If(self.restart):
            m.d.comb += flush.eq(1)
            m.d.comb += req_addr_next.eq(head_addr)
            m.d.sync += resp_addr.eq(head_addr)
            m.d.sync += [fetch_slot.eq(self.head), resp_slot.eq(self.head), out_slot.eq(self.head),
                         at_last.eq(head_at_last), resp_at_last.eq(head_at_last),
                         req_word.eq(0), resp_word.eq(0),
                         reserved.eq(0), full.eq(0), stopped.eq(0), discard.eq(0), bad_ring.eq(0), asking.eq(0),
                         slots_left.eq(0)]

        if c.register_slices:
            # The request of the next cycle, from the next values of its terms (as the
            # assignments above make them; ``enable``'s is taken to be its present one).
            restart = self.restart
            mid_slot_next = ~restart & Mux(accept, ~slot_end, mid_slot) if words > 1 else Const(0, 1)
            stopped_next = ~restart & (stopped | (~mid_slot & more & bad_ring) | (can_issue & ~word_ok)
                                       | (err & ~discard))
            bad_ring_next = ~restart & bad_ring_value
            # (Taken to be full after a slot's first accept as if nothing were popped: the
            # decode register's pop, from across the device, is not in front of ``wanting``;
            # a pop then frees the entry for the request a cycle later.)
            full_next = ~restart & (full | (first_accept & (reserved == FETCH_DEPTH - 1)))
            slots_left_next = ~restart & (differs if ahead_of_tail else fetch_slot != self.tail) & ~(accept & slot_end)
            pending_next = Mux(accept, 1, Mux(answer & out_one, 0, pending))
            stalled_next = self.bus.stb & self.bus.stall
            can_issue_next = mid_slot_next | (slots_left_next & self.enable & ~stopped_next & ~bad_ring_next
                                              & ~full_next)
            wanting_next = ((Mux(restart, 0, want) | stalled_next | pending_next)
                            & (can_issue_next | stalled_next) & (~stopped_next | stalled_next))
            m.d.sync += wanting.eq(wanting_next)
            if separate:
                m.d.comb += wanting_addr.eq(register(m, wanting_next, name="wanting_addr_ff", separate=True))

        m.d.comb += [
            self.idle.eq(idle),
            self.caught_up.eq(~differs if ahead_of_tail else fetch_slot == self.tail),
            self.fault.eq(stopped & ~pending),
            self.fault_code.eq(fault_code),
            self.fault_addr.eq(fault_addr),
            self.fault_slot.eq(fault_slot),
            self.event_bytes_read.eq(Mux(pending & self.bus.ack, bb, 0)),   # stale answers too
        ]
        return m
