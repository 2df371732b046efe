"""The NPU top level: registers, command processor, DMA, datapath.

* ``csr``: Wishbone B4 slave (32-bit, classic-compatible pipelined) with the registers
  of :mod:`npu.hdl.regs`.
* ``bus``: Wishbone B4 pipelined master, shared by the instruction fetcher and the
  DMA unit (an arbiter hands it over when the owner drops ``cyc``).
* ``irq``: level interrupt, ``|(IRQ_PENDING & IRQ_ENABLE)``.

The command processor fetches instructions (:mod:`npu.hdl.fetch`), checks them, and
dispatches them in order to two queues: the DMA queue (LOAD, STORE; executed in order
by :class:`~npu.hdl.dma.DMAUnit`) and the compute queue (COMPUTE, and the
post-processing half of STORE; executed in order by the
:class:`~npu.hdl.datapath.Datapath`). A scoreboard holds an instruction back while it
conflicts with an unfinished instruction in the other queue (``docs/isa.md``,
"Execution order"), so programs have sequential semantics while loads, computes
and stores of different tiles overlap.
"""

from amaranth.hdl import (Cat, ClockDomain, ClockSignal, DomainRenamer, Elaboratable, Module, Mux,
                          ResetSignal, Signal, Value)
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from . import wishbone
from .datapath import Datapath
from .dma import DMAUnit, bus_signature, dma_command_layout, side_param_layout
from .fetch import Fetcher
from .pe import registered_dsp
from .pipeline import StreamSlice, fanout, register, step_count
from .ram import CollisionFreeReadPort
from .isa import FIELDS, INSTRUCTION_BYTES, Buffer, ErrorCode, Opcode, reserved_mask
from .layouts import TileOp, command_layout
from ..generators.regmap import reset_value
from .regs import CSR_ADDR_WIDTH, PERF_COUNTERS, REGISTERS, field_of

__all__ = ["NPU"]


def csr_signature():
    return wishbone.Signature(addr_width=CSR_ADDR_WIDTH, data_width=32, with_err=False).flip()


class NPU(wiring.Component):
    """The complete NPU for ``config``.

    ``reset_buffer(m, reset)``, when given, returns the net that resets the core's
    registers (the domain's reset or ``CTRL.SOFT_RESET``): a board may put it on a global
    network (the ECP5 boards: a DCCA). The core is a clock domain of its own, ``core``, on
    the same clock.
    """

    def __init__(self, config, *, reset_buffer=None):
        self.config = config
        self._reset_buffer = reset_buffer
        super().__init__({
            "csr": In(wishbone.Signature(addr_width=CSR_ADDR_WIDTH, data_width=32, with_err=False)),
            "bus": Out(bus_signature(config)),
            "irq": Out(1),
        })

    @property
    def latencies(self):
        datapath = Datapath(self.config)
        datapath._MustUse__silence = True  # only asked for its latencies
        return datapath.latencies

    def elaborate(self, platform):
        m = Module()
        # Classic-compatible pipelined slave: a request is taken in a cycle with ack low,
        # answered in the next cycle, during which stall is high (so a classic master's
        # still-asserted stb is not taken twice). With register slices the answer comes two
        # cycles later (the read is three register stages), stall high until it has.
        ack = Signal()
        if self.config.register_slices:
            answering = Signal(2)
            accept = self.csr.cyc & self.csr.stb & ~answering.any() & ~ack
            m.d.sync += [answering.eq(Cat(accept, answering[0])), ack.eq(answering[1])]
            m.d.comb += [self.csr.ack.eq(ack), self.csr.stall.eq(answering.any() | ack)]
        else:
            accept = self.csr.cyc & self.csr.stb & ~ack
            m.d.sync += ack.eq(accept)
            m.d.comb += [self.csr.ack.eq(ack), self.csr.stall.eq(ack)]
        soft_reset = Signal()
        ctrl = field_of("CTRL", "SOFT_RESET")
        if self.config.register_slices:
            # A cycle later, from the request's registered halves (before the answer still).
            reset_write, reset_ctrl = Signal(), Signal()
            m.d.sync += [reset_write.eq(accept & self.csr.we & self.csr.dat_w[ctrl.offset]),
                         reset_ctrl.eq(self.csr.adr == _word("CTRL")),
                         soft_reset.eq(reset_write & reset_ctrl)]
        else:
            m.d.sync += soft_reset.eq(accept & self.csr.we & (self.csr.adr == _word("CTRL"))
                                      & self.csr.dat_w[ctrl.offset])
        # The core's own clock domain: the same clock, reset by the domain's reset or
        # CTRL.SOFT_RESET. That reset reaches most of the core's registers; a board can
        # put it on a global network (``reset_buffer(m, reset)`` returns the buffered net).
        m.domains.core = core = ClockDomain("core", local=True)
        reset = Signal()
        m.d.comb += [reset.eq(ResetSignal() | soft_reset), core.clk.eq(ClockSignal())]
        m.d.comb += core.rst.eq(reset if self._reset_buffer is None else self._reset_buffer(m, reset))
        m.submodules.core = DomainRenamer("core")(_Core(self, accept))
        return m


def _word(name):
    for reg in REGISTERS:
        if reg.name == name:
            return reg.offset // 4
    raise KeyError(name)


def _bit(reg, name):
    return field_of(reg, name).offset


def _field(insn, opcode, name):
    for f in FIELDS[opcode]:
        if f.name == name:
            return insn[f.offset:f.offset + f.width]
    raise KeyError(name)


def _group_registers(m, low, words, name):
    """A 32-bit register per group of eight words (word address >> 3) of ``words``
    (address -> value), loaded each cycle with the value that ``low(group)`` (the word
    address's low three bits, as that group sees them) picks in the group (0 for an
    address without one); a stage of a read whose next stage picks the group by the
    address's high bits."""
    groups = {}
    for word, value in words.items():
        groups.setdefault(word >> 3, {})[word & 7] = value
    registers = {}
    for group, entries in groups.items():
        part = registers[group] = Signal(32, name=f"{name}{group}")
        with m.Switch(low(group)):
            for index, value in entries.items():
                with m.Case(index):
                    m.d.sync += part.eq(value)
            with m.Default():
                m.d.sync += part.eq(0)
    return registers


def _overlap(lo_a, hi_a, lo_b, hi_b):
    """Half-open ranges [lo_a, hi_a) and [lo_b, hi_b) intersect."""
    return (lo_a < hi_b) & (lo_b < hi_a)


class _Core(Elaboratable):
    """Everything but the register slave's handshake: reset by CTRL.SOFT_RESET."""

    def __init__(self, npu, csr_accept):
        self.npu = npu
        self.csr_accept = csr_accept

    def elaborate(self, platform):
        m = Module()
        npu = self.npu
        cfg = npu.config
        R, C = cfg.rows, cfg.cols
        csr = npu.csr

        # Sequential dispatch: the DMA unit fetches the instructions too, one at a time (no
        # fetcher, no bus arbiter).
        sequential = cfg.dispatch == "sequential"
        fetcher = None if sequential else Fetcher(cfg)
        if fetcher is not None:
            m.submodules.fetcher = fetcher
        m.submodules.dma = dma = DMAUnit(cfg)
        m.submodules.datapath = dp = Datapath(cfg)

        # --- Registers ----------------------------------------------------------------
        ring_base, ring_size, head, tail = (Signal(32, name=n) for n in ("ring_base", "ring_size", "head", "tail"))
        window_base, window_limit = Signal(32, name="window_base"), Signal(32, name="window_limit")
        irq_enable, irq_pending = Signal(2), Signal(2)
        busy, error = Signal(), Signal()
        error_code, error_addr, error_cmd = Signal(8), Signal(32), Signal(32)
        IRQ_DONE, IRQ_ERROR = _bit("IRQ_PENDING", "DONE"), _bit("IRQ_PENDING", "ERROR")

        if cfg.register_slices:
            # A register write takes effect a cycle after it is taken, from registers (no
            # address decode between the register slave's request and the registers it
            # writes; the answer comes a cycle later still, so the next access sees it).
            write, wadr, wdata = Signal(), Signal.like(csr.adr), Signal.like(csr.dat_w)
            m.d.sync += [write.eq(self.csr_accept & csr.we), wadr.eq(csr.adr), wdata.eq(csr.dat_w)]
        else:
            write, wadr, wdata = self.csr_accept & csr.we, csr.adr, csr.dat_w
        start = Signal()
        perf_clear = Signal()
        ring_written = Signal()     # RING_HEAD or RING_TAIL is written in this cycle
        m.d.comb += ring_written.eq(write & ((wadr == _word("RING_HEAD")) | (wadr == _word("RING_TAIL"))))
        with m.If(write):
            with m.Switch(wadr):
                with m.Case(_word("CTRL")):
                    m.d.comb += [start.eq(wdata[_bit("CTRL", "START")]),
                                 perf_clear.eq(wdata[_bit("CTRL", "PERF_CLEAR")])]
                with m.Case(_word("IRQ_ENABLE")):
                    m.d.sync += irq_enable.eq(wdata[:2])
                with m.Case(_word("IRQ_PENDING")):
                    m.d.sync += irq_pending.eq(irq_pending & ~wdata[:2])
                for name, sig in (("RING_BASE", ring_base), ("RING_SIZE", ring_size), ("RING_TAIL", tail),
                                  ("WINDOW_BASE", window_base), ("WINDOW_LIMIT", window_limit)):
                    with m.Case(_word(name)):
                        m.d.sync += sig.eq(wdata)
                with m.Case(_word("RING_HEAD")):
                    with m.If(~busy):
                        m.d.sync += head.eq(wdata)
        m.d.comb += npu.irq.eq((irq_pending & irq_enable).any())

        # --- Bus arbiter: instruction fetch and DMA share the master --------------------
        # The master leaves through a register slice: no combinational path from the
        # units' address logic into the interconnect, or from its stall back, or from the
        # interconnect's answers into the units' response logic (answers a cycle later).
        m.submodules.bus_slice = bus_slice = wishbone.RequestSlice(bus_signature(cfg), registered=cfg.register_slices,
                                                                   registered_answers=True)
        wiring.connect(m, bus_slice.down, wiring.flipped(npu.bus))
        bus = bus_slice.up
        if sequential:
            wiring.connect(m, dma.bus, bus)
            m.d.comb += [dma.gnt.eq(1), dma.yield_bus.eq(0)]
        else:
            owner_dma = Signal()
            with m.If(owner_dma & ~dma.bus_req & fetcher.bus_req):
                m.d.sync += owner_dma.eq(0)
            with m.If(~owner_dma & ~fetcher.bus_req & dma.bus_req):
                m.d.sync += owner_dma.eq(1)
            # The DMA unit yields after a burst when the fetcher asks (seen a cycle late: a
            # timing cut between the two units' request logic).
            fetcher_waiting = Signal()
            m.d.sync += fetcher_waiting.eq(fetcher.bus_req)
            m.d.comb += [fetcher.gnt.eq(~owner_dma), dma.gnt.eq(owner_dma), dma.yield_bus.eq(fetcher_waiting)]
            for port in (fetcher.bus, dma.bus):
                mine = owner_dma if port is dma.bus else ~owner_dma
                m.d.comb += [port.dat_r.eq(bus.dat_r), port.ack.eq(mine & bus.ack),
                             port.err.eq(mine & bus.err), port.stall.eq(~mine | bus.stall)]
            for name in ("cyc", "stb", "we", "adr", "dat_w", "sel"):
                if name == "dat_w" and cfg.register_slices:
                    # Only the DMA unit writes: its data, whoever has the bus.
                    m.d.comb += bus.dat_w.eq(dma.bus.dat_w)
                    continue
                m.d.comb += getattr(bus, name).eq(Mux(owner_dma, getattr(dma.bus, name),
                                                          getattr(fetcher.bus, name)))
        for unit in ((dma,) if sequential else (fetcher, dma)):
            m.d.comb += [unit.window_base.eq(window_base), unit.window_limit.eq(window_limit)]

        # --- Datapath and DMA data connections ------------------------------------------
        for name in ("act_wr", "wgt_wr", "param_wr", *(("idx_wr",) if cfg.sparse else ())):
            wiring.connect(m, getattr(dma, name), getattr(dp, name))
        # Output rows reach the DMA unit through two register slices (timing cuts; the
        # first beside the post-processor's FIFO, whose level the ``ready`` steps). At half
        # rate when the requantiser makes a row in two cycles or more (its FIFO still empties
        # faster than it fills).
        m.submodules.rows_slice = rows_slice = StreamSlice(
            dp.out.payload.shape(), registered=cfg.register_slices, stages=2,
            half_rate=cfg.requantiser == "serial" or cfg.requant_passes >= 2)
        wiring.connect(m, dp.out, rows_slice.i)
        wiring.connect(m, rows_slice.o, dma.rows_in)
        m.submodules.side = side = Memory(shape=side_param_layout(cfg), depth=cfg.param_depth, init=[],
                                          attrs=CollisionFreeReadPort.ATTRS)
        side_w = side.write_port()
        # Read every cycle at the decode register's STORE entry: the data is a cycle old when
        # a STORE dispatches. That is never too old, and a read never meets a write that
        # matters: the STORE waits (``hz_store``) while a LOAD to its entry is unfinished,
        # and the DMA unit finishes a LOAD a cycle after its last write at the earliest.
        side_r = CollisionFreeReadPort(m, side, name="side_r")
        m.d.comb += side_r.en.eq(1)
        m.d.comb += [side_w.addr.eq(dma.side_wr.payload.addr), side_w.data.eq(dma.side_wr.payload.data),
                     side_w.en.eq(dma.side_wr.valid), dma.side_wr.ready.eq(1)]

        # --- Queues -----------------------------------------------------------------
        # Instructions dispatched to the array (COMPUTE, STORE's post-processing) and to the
        # DMA unit (LOAD, STORE) not yet finished. Sequential dispatch has none: the decode
        # register holds an instruction until its commands are sent, and the next one waits
        # until they have finished.
        ext = 17
        cq_layout = data.StructLayout({"cmd": command_layout(cfg), "act_hi": ext, "wgt_hi": ext})
        dq_layout = data.StructLayout({"cmd": dma_command_layout(cfg), "buf_hi": ext, "slot": 32})
        # Commands go to the units through register slices (timing cuts between the queues'
        # head multiplexers and the units' command logic). A command in a slice counts as
        # sent; "all idle" below also waits for the slices to be empty.
        # With register slices and queues, the array's commands pass two slices: the queue's
        # head multiplexer and the datapath's command logic are far apart on a large device.
        # The slices take a command every other cycle at most (an instruction dispatches every
        # other cycle at most, and a command keeps its unit busy longer): each stage's output
        # register is enabled by its own ``valid``, not by the unit's ``ready``.
        m.submodules.cq_slice = cq_slice = StreamSlice(command_layout(cfg), registered=cfg.register_slices,
                                                       stages=2 if not sequential else 1, half_rate=True)
        m.submodules.dq_slice = dq_slice = StreamSlice(dma_command_layout(cfg), registered=cfg.register_slices,
                                                       half_rate=True)
        wiring.connect(m, cq_slice.o, dp.cmd)
        wiring.connect(m, dq_slice.o, dma.cmd)
        cq_sent = cq_slice.i.valid & cq_slice.i.ready
        dq_sent = dq_slice.i.valid & dq_slice.i.ready
        dma_slot = Signal(32)       # the slot of the LOAD/STORE the DMA unit runs (for its faults)
        if not sequential:
            CQ, DQ = cfg.compute_queue, cfg.dma_queue
            cq = [Signal(cq_layout, name=f"cq{i}") for i in range(CQ)]
            cq_wr, cq_send, cq_ret = (Signal(range(CQ), name=n) for n in ("cq_wr", "cq_send", "cq_ret"))
            # Per entry: it holds an unfinished instruction (``cq_live``), which has been sent
            # to its unit (``cq_sent``). Bits, not counts: no adder on the dispatch path.
            cq_live, cq_sent_bits = Signal(CQ, name="cq_live"), Signal(CQ, name="cq_sent_bits")
            retire_credits = Signal(range(CQ + 1))

            dq = [Signal(dq_layout, name=f"dq{i}") for i in range(DQ)]
            dq_wr, dq_send, dq_ret = (Signal(range(DQ), name=n) for n in ("dq_wr", "dq_send", "dq_ret"))
            dq_live, dq_sent_bits = Signal(DQ, name="dq_live"), Signal(DQ, name="dq_sent_bits")

            def unsent(live, sent, send):
                """The entry at ``send`` holds an instruction not yet sent to its unit."""
                return live.bit_select(send, 1) & ~sent.bit_select(send, 1)

            # Sending queue heads to the units.
            cq_head = Signal(cq_layout)
            m.d.comb += cq_head.eq(Cat(*cq).word_select(cq_send, cq_layout.size))
            dq_head = Signal(dq_layout)
            m.d.comb += dq_head.eq(Cat(*dq).word_select(dq_send, dq_layout.size))
            heads = [("cq", cq_slice, unsent(cq_live, cq_sent_bits, cq_send), cq_head.cmd, cq_sent),
                     ("dq", dq_slice, unsent(dq_live, dq_sent_bits, dq_send), dq_head.cmd, dq_sent)]
            for name, slice_, ready_to_send, head_cmd, sent in heads:
                if cfg.register_slices:
                    # The head and its "unsent" verdict registered beside the queue (the
                    # head multiplexer -> the slice, across the device, was the 85F's
                    # critical path): a snapshot of the cycle before. It still holds then,
                    # except after a send (the pointer moved), so none is offered in the
                    # cycle after one. A pushed entry shows in the next snapshot; a live
                    # unsent entry is neither rewritten nor retired.
                    offer, offer_cmd = Signal(name=f"{name}_offer"), Signal.like(head_cmd, name=f"{name}_offer_cmd")
                    m.d.sync += [offer.eq(ready_to_send & ~sent), offer_cmd.eq(head_cmd)]
                    ready_to_send, head_cmd = offer, offer_cmd
                m.d.comb += [slice_.i.valid.eq(ready_to_send), slice_.i.payload.eq(head_cmd)]
            dq_oldest = Signal(dq_layout)
            m.d.comb += dq_oldest.eq(Cat(*dq).word_select(dq_ret, dq_layout.size))
            m.d.comb += dma_slot.eq(dq_oldest.slot)

            # Retiring: a COMPUTE when the array has issued its last row, a post-processing
            # command once sent (the DMA queue's STORE entry tracks its completion).
            # Which entries hold a COMPUTE: a bit each, set when the entry is written, so the
            # oldest entry's kind is one bit picked, not a field of the whole entry.
            cq_compute_bits = Signal(CQ, name="cq_compute_bits")
            oldest_sent = cq_live.bit_select(cq_ret, 1) & cq_sent_bits.bit_select(cq_ret, 1)
            oldest_is_compute = cq_compute_bits.bit_select(cq_ret, 1)
            cq_retire = oldest_sent & (~oldest_is_compute | (retire_credits != 0))
            # The array's "last row issued" is registered first: a cycle later only holds the
            # COMPUTE in the scoreboard a cycle longer.
            compute_retire = Signal()
            m.d.sync += compute_retire.eq(dp.compute_retire)
            m.d.sync += retire_credits.eq(step_count(retire_credits, compute_retire, cq_retire & oldest_is_compute))
            dq_retire = dma.done

        # --- Decode -------------------------------------------------------------------
        # The fetched instruction is checked and its buffer ranges worked out here; the
        # results wait in the decode register, and the scoreboard and dispatch work from it.
        def operands(insn):
            """The opcode and operand fields of ``insn`` (each opcode reads its own)."""
            assert FIELDS[Opcode.STORE][3].offset == FIELDS[Opcode.LOAD][3].offset     # mem_addr
            return (insn[:4], *(_field(insn, Opcode.LOAD, n) for n in ("buffer", "rows", "buf_addr")),
                    *(_field(insn, Opcode.COMPUTE, n) for n in ("count", "act_addr", "wgt_addr", "acc_addr",
                                                              "sparse", "part", "idx_addr")),
                    *(_field(insn, Opcode.STORE, n) for n in ("count", "acc_addr", "param_addr")),
                    *(_field(insn, Opcode.LOAD, n) for n in ("mem_addr", "stride")))

        # The decode register: one instruction and the ends of its ranges.
        fetch_restart = Signal()    # START or END: drop what has been fetched
        if sequential:
            # The DMA unit reads the instruction at ``head`` once it is free and nothing waits to
            # be dispatched; the instruction stays in its row register until dispatched.
            insn, slot = dma.insn, head[:cfg.ring_bits]
            fetched = Signal()      # dma.insn holds the instruction at head
            fetching = Signal()     # a fetch has been sent to the DMA unit and not finished
            fetch_idle = 1          # (a fetch is a DMA command: "all idle" covers it)
            # Registered: ``head`` moves only on a dispatch and ``tail`` on a register write,
            # and no fetch starts in the cycle after either (``dma_free`` below).
            caught_up = Signal()
            m.d.sync += caught_up.eq(head == tail)
        else:
            insn = fetcher.insn.payload.insn
            slot = fetcher.insn.payload.slot
            if cfg.register_slices:
                # The fetcher restarts a cycle after START or END, from a register (a restart
                # resets most of its registers, all over the fetcher). Its old state is not
                # used meanwhile: an instruction taken from it then is dropped (below), its
                # fault is not looked at, and it is not enabled yet.
                fetcher_restart = Signal()
                m.d.sync += fetcher_restart.eq(fetch_restart)
            else:
                fetcher_restart = fetch_restart
            m.d.comb += fetcher.restart.eq(fetcher_restart)
            fetch_idle, caught_up = fetcher.idle, fetcher.caught_up
        (opcode, ld_buf, ld_rows, ld_addr, cp_count, cp_act, cp_wgt, cp_acc, cp_sparse, cp_part, cp_idx,
         st_count, st_acc, st_param, mem_addr, stride) = operands(insn)
        # Whether the opcode exists and its reserved bits are zero: worked out from the
        # fetched instruction and loaded with it (the rest of the check follows from the
        # decode register); with two decode stages, from the decode register.
        def fields_ok(insn, op):
            """``insn``'s reserved bits and fields are legal for opcode ``op``."""
            ok = (insn & reserved_mask(op)) == 0
            if op == Opcode.LOAD and not cfg.sparse:
                ok = ok & (_field(insn, op, "buffer") != Buffer.IDX)
            if op == Opcode.COMPUTE and not cfg.sparse:
                ok = ok & ~_field(insn, op, "sparse") & (_field(insn, op, "part") == 0) \
                    & (_field(insn, op, "idx_addr") == 0)
            return ok

        def legal_check(insn, name):
            legal = Signal(name=name)
            with m.Switch(insn[:4]):
                for op in Opcode:
                    with m.Case(op):
                        m.d.comb += legal.eq(fields_ok(insn, op))
            return legal
        two_stage = cfg.register_slices and not sequential
        legal = legal_check(insn, "legal") if not two_stage else None
        fetched_opcode = insn[:4]
        dispatch = Signal()
        if sequential:
            # The DMA unit's row register is the decode register: the instruction waits there,
            # unchanged, until it is dispatched. Whether it is legal and the ends of its ranges
            # are registered from it (timing cuts before the check) and the check's verdict
            # below, so the verdict is fresh from the instruction's third cycle there.
            d_valid, d_legal = fetched, Signal()
            m.d.sync += d_legal.eq(legal)
            fetched_before = Signal()
            m.d.sync += fetched_before.eq(fetched)
            loaded = ~fetched | ~fetched_before     # (the instruction is new, or none)
            d_act_hi, d_wgt_hi, d_ld_hi = Signal(ext), Signal(ext), Signal(ext)
            d_acc_hi, d_st_hi = Signal(ext), Signal(ext)
            m.d.sync += [d_act_hi.eq(cp_act + cp_count), d_wgt_hi.eq(cp_wgt + R), d_ld_hi.eq(ld_addr + ld_rows),
                         d_acc_hi.eq(cp_acc + cp_count), d_st_hi.eq(st_acc + st_count)]
        else:
            d_legal = Signal()
            d_valid = Signal()
            d_insn, d_slot = Signal.like(insn), Signal(32)
            d_act_hi, d_wgt_hi, d_ld_hi = Signal(ext), Signal(ext), Signal(ext)
            d_acc_hi, d_st_hi = Signal(ext), Signal(ext)
            # With register slices, the next instruction is taken once the register is empty
            # (no path from dispatch back into the fetcher): a cycle per instruction more,
            # which the fetch of an instruction (four bus words on a 32-bit bus) hides.
            m.d.comb += fetcher.insn.ready.eq(~d_valid | (dispatch if not cfg.register_slices else 0))
            loaded = fetcher.insn.valid & fetcher.insn.ready
            # The opcode decoded as it is loaded (one flag per opcode: a short dispatch path).
            d_is_op = {op: Signal(name=f"d_is_{op.name.lower()}") for op in Opcode}
            if cfg.register_slices:
                # While the register is empty its fields follow the instruction presented
                # (nothing uses them then) and taking it only sets ``d_valid``: the fields'
                # enables are copies of ``d_valid`` (registers, one per group of fields), not
                # the fetcher's output logic routed to 300-odd flip-flops.
                # Each opcode's check of the reserved bits and fields is loaded with the
                # instruction too (a flag per opcode; the decode register's opcode picks one).
                d_fields_ok = {op: Signal(name=f"d_fields_ok_{op.name.lower()}") for op in Opcode}
                loads = [[d_insn.eq(insn)],
                         [d_slot.eq(slot), *(d_is_op[op].eq(fetched_opcode == op) for op in Opcode)],
                         [d_fields_ok[op].eq(fields_ok(insn, op)) for op in Opcode],
                         [d_act_hi.eq(cp_act + cp_count), d_wgt_hi.eq(cp_wgt + R), d_ld_hi.eq(ld_addr + ld_rows)],
                         [d_acc_hi.eq(cp_acc + cp_count), d_st_hi.eq(st_acc + st_count)]]
                d_valid_next = Signal()
                m.d.comb += d_valid_next.eq(Mux(fetch_restart | fetcher_restart, 0,
                                                Mux(loaded, 1, Mux(dispatch, 0, d_valid))))
                m.d.sync += d_valid.eq(d_valid_next)
                holds = fanout(m, d_valid_next, len(loads), name="decode_held", separate=registered_dsp(platform))
                for held, group in zip(holds, loads):
                    with m.If(~held):
                        m.d.sync += group
            else:
                with m.If(loaded):
                    m.d.sync += [d_is_op[op].eq(fetched_opcode == op) for op in Opcode]
                    m.d.sync += [d_valid.eq(1), d_insn.eq(insn), d_slot.eq(slot), d_legal.eq(legal),
                                 d_act_hi.eq(cp_act + cp_count), d_wgt_hi.eq(cp_wgt + R), d_ld_hi.eq(ld_addr + ld_rows),
                                 d_acc_hi.eq(cp_acc + cp_count), d_st_hi.eq(st_acc + st_count)]
                with m.Elif(dispatch):
                    m.d.sync += d_valid.eq(0)
                with m.If(fetch_restart | fetcher_restart):
                    m.d.sync += d_valid.eq(0)
            # From here on the instruction is the decode register's. It is checked there, and
            # the check's verdict is registered beside the scoreboard's (below).
            insn, slot = d_insn, d_slot
        (opcode, ld_buf, ld_rows, ld_addr, cp_count, cp_act, cp_wgt, cp_acc, cp_sparse, cp_part, cp_idx,
         st_count, st_acc, st_param, mem_addr, stride) = operands(insn)
        cp_act_hi, cp_wgt_hi, ld_hi = d_act_hi, d_wgt_hi, d_ld_hi
        is_op = {op: opcode == op for op in Opcode}
        if sequential:
            d_is_op = is_op

        def fits(end, depth):
            return end <= depth

        # A LOAD's range against its buffer's depth: a compare with each depth (a constant),
        # then the buffer's verdict picked.
        ld_fits = Signal()
        with m.Switch(ld_buf):
            depths = {Buffer.ACT: cfg.act_depth, Buffer.WGT: cfg.wgt_depth, Buffer.PARAM: cfg.param_depth}
            if cfg.sparse:
                depths[Buffer.IDX] = cfg.idx_depth
            for buf, depth in depths.items():
                with m.Case(buf):
                    m.d.comb += ld_fits.eq(fits(ld_hi, depth))
        operands_ok = Signal()
        with m.Switch(opcode):
            with m.Case(Opcode.LOAD):
                m.d.comb += operands_ok.eq((ld_rows != 0) & ld_fits)
            with m.Case(Opcode.COMPUTE):
                sparse_ok = 1
                if cfg.sparse:
                    sparse_ok = Mux(cp_sparse, (cp_part == 0) & (cp_idx < cfg.idx_depth),
                                    (cp_part < cfg.dense_parts) & (cp_idx == 0))
                m.d.comb += operands_ok.eq((cp_count != 0) & fits(cp_act_hi, cfg.act_depth)
                                           & fits(cp_wgt_hi, cfg.wgt_depth) & fits(d_acc_hi, cfg.acc_depth)
                                           & sparse_ok)
            with m.Case(Opcode.STORE):
                m.d.comb += operands_ok.eq((st_count != 0) & fits(d_st_hi, cfg.acc_depth)
                                           & (st_param < cfg.param_depth))
            with m.Default():
                m.d.comb += operands_ok.eq(1)
        bb_mask = cfg.bus_bytes - 1
        aligned = ~(is_op[Opcode.LOAD] | is_op[Opcode.STORE]) | (((mem_addr | stride) & bb_mask) == 0)
        if two_stage:
            # The operand checks are registered before the error code is picked from them:
            # a first stage, like the scoreboard's below (and covered by the same ``fresh_1``).
            # So is the opcode and reserved-bit check, of the decode register.
            operands_ok_1, aligned_1 = Signal(), Signal()
            m.d.sync += [operands_ok_1.eq(operands_ok), aligned_1.eq(aligned),
                         d_legal.eq(Cat(*(d_is_op[op] & d_fields_ok[op] for op in Opcode)).any())]
            operands_ok, aligned = operands_ok_1, aligned_1

        decode_error = Signal(8)
        with m.If(~d_legal):
            m.d.comb += decode_error.eq(ErrorCode.ILLEGAL_INSTRUCTION)
        with m.Elif(~operands_ok):
            m.d.comb += decode_error.eq(ErrorCode.BAD_OPERAND)
        with m.Elif(~aligned):
            m.d.comb += decode_error.eq(ErrorCode.MISALIGNED)


        # --- Scoreboard ---------------------------------------------------------------
        hazard_compute = Signal()   # a COMPUTE vs unfinished LOADs
        hazard_load = Signal()      # a LOAD vs unfinished COMPUTEs
        hazard_store = Signal()     # a STORE vs unfinished parameter LOADs
        # With register slices each queue entry's verdict is registered before they are
        # combined (a second stage: the compares' carry chains and the OR over the entries
        # are each a cycle), and the verdict is used a cycle later.

        def any_hit(hits, name):
            if two_stage:
                staged = []
                for i, hit in enumerate(hits):
                    reg = Signal(name=f"{name}_{i}")
                    m.d.sync += reg.eq(hit)
                    staged.append(reg)
                hits = staged
            return Cat(*hits).any()
        if not sequential:     # (sequential dispatch waits for every earlier instruction)
            compute_hits, store_hits, load_hits = [], [], []
            for i in range(DQ):
                e = dq[i]
                v = dq_live[i] & ~e.cmd.store
                act_hit = (e.cmd.buffer == Buffer.ACT) & _overlap(cp_act, cp_act_hi, e.cmd.buf_addr, e.buf_hi)
                wgt_hit = (e.cmd.buffer == Buffer.WGT) & _overlap(cp_wgt, cp_wgt_hi, e.cmd.buf_addr, e.buf_hi)
                # (A one-entry range [a, a + 1) as ``lo <= a``: no adder in front of the compare.)
                par_hit = (e.cmd.buffer == Buffer.PARAM) & (st_param < e.buf_hi) & (e.cmd.buf_addr <= st_param)
                idx_hit = 0
                if cfg.sparse:
                    idx_hit = (e.cmd.buffer == Buffer.IDX) & cp_sparse & (cp_idx < e.buf_hi) & (e.cmd.buf_addr <= cp_idx)
                compute_hits.append(v & (act_hit | wgt_hit | idx_hit))
                store_hits.append(v & par_hit)
            for i in range(CQ):
                e = cq[i]
                v = cq_live[i] & cq_compute_bits[i]
                act_hit = (ld_buf == Buffer.ACT) & _overlap(ld_addr, ld_hi, e.cmd.act_addr, e.act_hi)
                wgt_hit = (ld_buf == Buffer.WGT) & _overlap(ld_addr, ld_hi, e.cmd.wgt_addr, e.wgt_hi)
                idx_hit = 0
                if cfg.sparse:
                    idx_hit = (ld_buf == Buffer.IDX) & e.cmd.sparse & (ld_addr <= e.cmd.idx_addr) & (e.cmd.idx_addr < ld_hi)
                load_hits.append(v & (act_hit | wgt_hit | idx_hit))
            m.d.comb += [hazard_compute.eq(any_hit(compute_hits, "compute_hit")),
                         hazard_store.eq(any_hit(store_hits, "store_hit")),
                         hazard_load.eq(any_hit(load_hits, "load_hit"))]
        # The verdict is registered and used a cycle after it is worked out (two cycles with
        # two stages), while the decode register and the queues' contents are as they were
        # then: an instruction spends at least two (three) cycles in the decode register
        # (fetching one takes longer on any bus: four bus words on a 32-bit bus).
        # Entries that retire meanwhile only make the verdict stricter than it need be.
        # The instruction check's verdict (``d_error``) is registered the same way.
        hz_load, hz_compute, hz_store, hz_fresh = Signal(), Signal(), Signal(), Signal()
        d_error = Signal(8)
        # (With two stages a dispatch needs no term here: the decode register is empty in
        # the next cycle, and the next instruction's loading clears ``fresh``.)
        fresh = ~loaded & (1 if two_stage else ~dispatch) & ~fetch_restart
        if two_stage:
            fresh_1 = Signal()      # the first stage's verdicts are of this instruction
            m.d.sync += fresh_1.eq(fresh)
            fresh = fresh & fresh_1
        m.d.sync += [hz_load.eq(hazard_load), hz_compute.eq(hazard_compute), hz_store.eq(hazard_store),
                     d_error.eq(decode_error), hz_fresh.eq(fresh)]

        # --- Dispatch -----------------------------------------------------------------
        # Registered: nothing is dispatched in the cycle before it is used (an instruction
        # spends at least two cycles in the decode register), and what finishes meanwhile
        # only delays a FENCE or the end of a program by a cycle.
        all_idle = Signal()
        if not sequential:
            # Registered: an entry is taken only by a dispatch, after which nothing is
            # dispatched for two cycles; one freed meanwhile is seen a cycle later.
            cq_room, dq_room = Signal(), Signal()
            m.d.sync += [cq_room.eq(~cq_live.bit_select(cq_wr, 1)), dq_room.eq(~dq_live.bit_select(dq_wr, 1))]
            staging = Signal()      # a dispatched command on its way into its queue (two stages)
            m.d.sync += all_idle.eq(~cq_live.any() & ~dq_live.any() & ~cq_slice.holding & ~dq_slice.o.valid
                                    & ~staging & dp.idle & ~dispatch)
            wait_load, wait_compute, wait_store = hz_load, hz_compute, hz_store
        else:
            # The decode register's commands are sent once everything before has finished
            # (``sending`` from the first until the last has been taken; a STORE has two).
            # An instruction is dispatched in the cycle after its last command was taken: the
            # "room" is the registered "sent" bit, so dispatch (and what it enables: ``head``,
            # the fetch of the next instruction) works from registers only, a cycle later. (The
            # instruction is still in the DMA unit's row register then: a LOAD or STORE sent
            # there writes the register on its first answer, two cycles later at the earliest.)
            sending, cq_done, dq_done = Signal(), Signal(), Signal()
            cq_room, dq_room = cq_done, dq_done
            m.d.sync += all_idle.eq(~cq_slice.holding & ~dq_slice.o.valid & dp.idle & ~dma.busy & ~dispatch
                                    & ~sending)
            wait_load = wait_compute = wait_store = ~(all_idle | sending)
        stopping = Signal()        # no more dispatch; finishing an END or an error
        stop_end = Signal()
        pend_code, pend_addr, pend_cmd = Signal(8), Signal(32), Signal(cfg.ring_bits)   # (a slot while running)
        pend_drain = Signal()      # wait for every earlier instruction (decode and fetch errors)

        valid = busy & ~stopping & d_valid
        blocked_dep = Signal()
        blocked_room = Signal()
        push_cq, push_dq = Signal(), Signal()
        new_cq, new_dq = Signal(cq_layout), Signal(dq_layout)

        def entry_fields(op, cq_entry, dq_entry):
            """The queue entries' fields of an instruction with opcode ``op``."""
            if op == Opcode.LOAD:
                return [dq_entry.cmd.store.eq(0), dq_entry.cmd.buffer.eq(ld_buf), dq_entry.cmd.rows.eq(ld_rows),
                        dq_entry.cmd.buf_addr.eq(ld_addr), dq_entry.buf_hi.eq(ld_hi)]
            if op == Opcode.COMPUTE:
                return [cq_entry.cmd.op.eq(TileOp.COMPUTE), cq_entry.cmd.accumulate.eq(insn[4]),
                        cq_entry.cmd.count.eq(cp_count), cq_entry.cmd.act_addr.eq(cp_act),
                        cq_entry.cmd.wgt_addr.eq(cp_wgt), cq_entry.cmd.acc_addr.eq(cp_acc),
                        cq_entry.act_hi.eq(cp_act_hi), cq_entry.wgt_hi.eq(cp_wgt_hi),
                        *([cq_entry.cmd.sparse.eq(cp_sparse), cq_entry.cmd.part.eq(cp_part),
                           cq_entry.cmd.idx_addr.eq(cp_idx)] if cfg.sparse else [])]
            return [cq_entry.cmd.op.eq(TileOp.OUTPUT), cq_entry.cmd.count.eq(st_count),
                    cq_entry.cmd.acc_addr.eq(st_acc), cq_entry.cmd.param_addr.eq(st_param),
                    cq_entry.cmd.zero_point.eq(side_r_data.zero_point),
                    cq_entry.cmd.clamp_lo.eq(side_r_data.clamp_lo),
                    cq_entry.cmd.clamp_hi.eq(side_r_data.clamp_hi),
                    dq_entry.cmd.store.eq(1), dq_entry.cmd.rows.eq(st_count)]
        side_r_data = side_r.data
        m.d.comb += side_r.addr.eq(st_param)

        d_ok = Signal()             # d_error == 0, as a register of its own (short dispatch path)
        m.d.sync += d_ok.eq(d_legal & operands_ok & aligned)    # (no error code to pick)
        # With register slices, the pending fault's code, address and slot follow the decode
        # register's (or, while it is empty, the fetcher's fault) until a stop, which keeps
        # them: they are read only after a stop that set ``pend_drain``, and their enables are
        # ``~stopping`` (a register), not the dispatch logic (d_valid -> two LUTs -> the
        # enables of 50-odd flip-flops was the 85F's critical path).
        follow_pend = not sequential and cfg.register_slices
        decode_fault = [pend_code.eq(d_error), pend_cmd.eq(slot),
                        pend_addr.eq(Mux(d_error == ErrorCode.MISALIGNED, mem_addr, 0))]
        fetch_fault = [] if sequential else [pend_code.eq(fetcher.fault_code), pend_addr.eq(fetcher.fault_addr),
                                             pend_cmd.eq(fetcher.fault_slot)]
        if follow_pend:
            with m.If(~stopping):
                m.d.sync += fetch_fault
                with m.If(d_valid):
                    m.d.sync += decode_fault
        with m.If(valid & hz_fresh & ~d_ok):
            m.d.sync += [stopping.eq(1), pend_drain.eq(1)]
            if not follow_pend:
                m.d.sync += decode_fault
        with m.Elif(valid):
            with m.If(d_is_op[Opcode.LOAD]):
                m.d.comb += [blocked_dep.eq(hz_fresh & wait_load), blocked_room.eq(~dq_room),
                             dispatch.eq(hz_fresh & ~wait_load & dq_room), push_dq.eq(1)]
            with m.Elif(d_is_op[Opcode.COMPUTE]):
                m.d.comb += [blocked_dep.eq(hz_fresh & wait_compute), blocked_room.eq(~cq_room),
                             dispatch.eq(hz_fresh & ~wait_compute & cq_room), push_cq.eq(1)]
            with m.Elif(d_is_op[Opcode.STORE]):
                m.d.comb += [blocked_dep.eq(hz_fresh & wait_store), blocked_room.eq(~(cq_room & dq_room)),
                             dispatch.eq(hz_fresh & ~wait_store & cq_room & dq_room), push_cq.eq(1),
                             push_dq.eq(1)]
            with m.Elif(d_is_op[Opcode.FENCE]):
                m.d.comb += [blocked_room.eq(~all_idle), dispatch.eq(hz_fresh & all_idle)]
            with m.Elif(d_is_op[Opcode.END]):
                m.d.comb += dispatch.eq(hz_fresh)
                with m.If(hz_fresh):
                    m.d.sync += [stopping.eq(1), stop_end.eq(1)]
        # The queue entries' fields follow the decode register's opcode alone (they are read
        # only with a dispatch): the dispatch conditions are not in front of the fields, nor
        # of the command logic that follows them without register slices.
        with m.If(d_is_op[Opcode.LOAD]):
            m.d.comb += entry_fields(Opcode.LOAD, new_cq, new_dq)
        with m.Elif(d_is_op[Opcode.COMPUTE]):
            m.d.comb += entry_fields(Opcode.COMPUTE, new_cq, new_dq)
        with m.Elif(d_is_op[Opcode.STORE]):
            m.d.comb += entry_fields(Opcode.STORE, new_cq, new_dq)

        def dq_common(dq_entry):
            """The DMA queue entry's fields every instruction gives (a LOAD's or a STORE's)."""
            return [dq_entry.cmd.mem_addr.eq(mem_addr), dq_entry.cmd.stride.eq(stride), dq_entry.slot.eq(slot)]

        m.d.comb += dq_common(new_dq)
        last_slot = Signal(cfg.ring_bits)   # the ring's last slot, registered (an equality below)
        m.d.sync += last_slot.eq(ring_size - 1)
        if sequential or cfg.register_slices:
            # The slot after ``head``, registered: ``head`` changes only on a dispatch, a
            # register write or an error, and the next dispatch is many cycles later (a fetch).
            # (Overlapped: from the decode register's slot, which has been there for two
            # cycles at least when the instruction dispatches.)
            next_slot = Signal(cfg.ring_bits)
            m.d.sync += next_slot.eq(Mux(slot == last_slot, 0, slot + 1))
        else:
            next_slot = Mux(slot == last_slot, 0, slot + 1)
        if cfg.register_slices and not sequential:
            # A cycle after the dispatch, from a register (``next_slot`` is still the
            # dispatched instruction's then): ``head`` is read only by the fetcher's restart
            # and by register reads.
            dispatched = Signal()
            m.d.sync += dispatched.eq(dispatch)
            with m.If(dispatched):
                m.d.sync += head.eq(next_slot)
        else:
            with m.If(dispatch):
                m.d.sync += head.eq(next_slot)

        # Queue bookkeeping: write at wr, send to the unit at send, retire at ret.
        def bookkeeping(entries, wr, send, ret, live_bits, sent_bits, push, new, sent, retire, name):
            # Pushed at wr (a free entry), sent at send, retired at ret (a live one): three
            # different entries whenever two of these happen in one cycle.
            # A free entry follows the command being pushed (nothing reads a free entry), so
            # the push only sets the entry's live bit: each entry's enable is its own live
            # bit (a register), not the push logic routed to a hundred-odd flip-flops. On an
            # ECP5 a copy of the live bit per 36 bits of the entry (the next value of the
            # live bit, kept apart): not one register routed to them all.
            separate = registered_dsp(platform)
            for i, entry in enumerate(entries):
                if not separate:
                    with m.If(~live_bits[i]):
                        m.d.sync += entry.eq(new)
                    continue
                live_next = (live_bits[i] | (push & (wr == i))) & ~(retire & (ret == i))
                bits, new_bits = Value.cast(entry), Value.cast(new)
                for j, lo in enumerate(range(0, len(bits), 36)):
                    live = register(m, live_next, name=f"{name}{i}_live{j}", separate=True)
                    with m.If(~live):
                        m.d.sync += bits[lo:lo + 36].eq(new_bits[lo:lo + 36])
            with m.If(push):
                for i in range(len(entries)):
                    with m.If(wr == i):
                        m.d.sync += [live_bits[i].eq(1), sent_bits[i].eq(0)]
                m.d.sync += wr.eq(wr + 1)
            with m.If(sent):
                m.d.sync += [sent_bits.bit_select(send, 1).eq(1), send.eq(send + 1)]
            with m.If(retire):
                m.d.sync += [live_bits.bit_select(ret, 1).eq(0), ret.eq(ret + 1)]

        if not sequential:
            cq_push, dq_push = dispatch & push_cq, dispatch & push_dq
            if two_stage:
                # The dispatched commands enter their queues a cycle later, from registers
                # (dispatch drives no queue entry's enable). The next instruction's checks
                # start two cycles after a dispatch: they see the entries.
                cq_push, dq_push = Signal(name="cq_push"), Signal(name="dq_push")
                staged_cq, staged_dq = Signal(cq_layout), Signal(dq_layout)
                # The staged fields are picked by the opcode alone (they matter only when
                # pushed): no dispatch condition reaches the staging registers.
                raw_cq, raw_dq = Signal(cq_layout), Signal(dq_layout)
                m.d.comb += dq_common(raw_dq)
                for op in (Opcode.LOAD, Opcode.COMPUTE, Opcode.STORE):
                    with m.If(d_is_op[op]):
                        m.d.comb += entry_fields(op, raw_cq, raw_dq)
                m.d.sync += [cq_push.eq(dispatch & push_cq), dq_push.eq(dispatch & push_dq),
                             staged_cq.eq(raw_cq), staged_dq.eq(raw_dq)]
                new_cq, new_dq = staged_cq, staged_dq
            m.d.comb += staging.eq(cq_push | dq_push if two_stage else 0)
            bookkeeping(cq, cq_wr, cq_send, cq_ret, cq_live, cq_sent_bits, cq_push, new_cq, cq_sent, cq_retire, "cq")
            with m.If(cq_push):
                m.d.sync += cq_compute_bits.bit_select(cq_wr, 1).eq(new_cq.cmd.op == TileOp.COMPUTE)
            bookkeeping(dq, dq_wr, dq_send, dq_ret, dq_live, dq_sent_bits, dq_push, new_dq, dq_sent, dq_retire, "dq")
        else:
            # Straight from the decode register to the units.
            go = hz_fresh & ~wait_load      # (the same for every opcode)
            send_cq = push_cq & go & ~cq_done
            send_dq = push_dq & go & ~dq_done
            m.d.comb += [cq_slice.i.valid.eq(send_cq), cq_slice.i.payload.eq(new_cq.cmd)]
            with m.If(dispatch | ~busy):
                m.d.sync += [sending.eq(0), cq_done.eq(0), dq_done.eq(0)]
            with m.Elif(send_cq | send_dq):
                m.d.sync += [sending.eq(1), cq_done.eq(cq_done | cq_sent), dq_done.eq(dq_done | (send_dq & dq_sent))]

        # --- Start, stop, errors ------------------------------------------------------
        # START takes effect a cycle after its write, with the ring check registered: the
        # registers it reads cannot change in between (the NPU is idle and the register
        # slave takes no write in the cycle after one).
        bad_ring = Signal()
        S = cfg.ring_bits

        def beyond(slot):
            """``slot >= ring_size``, compared on S + 1 bits when RING_SIZE is at most 2**S
            (a larger one is BAD_RING whatever the slot)."""
            if S >= 31:
                return slot >= ring_size
            return slot[S + 1:].any() | (slot[:S + 1] >= ring_size[:S + 1])
        m.d.sync += bad_ring.eq((ring_size == 0) | (ring_size > (1 << S)) | (ring_base[:4] != 0)
                                | beyond(head) | beyond(tail))
        if not sequential:
            if cfg.register_slices:
                # Registered (a timing cut into the fetcher's request logic): the fetcher may ask
                # for one more instruction after a stop; it is not dispatched, and the stop waits
                # for the fetcher to be idle.
                m.d.sync += fetcher.enable.eq(busy & ~stopping)
            else:
                m.d.comb += fetcher.enable.eq(busy & ~stopping)
            m.d.comb += [fetcher.head.eq(head), fetcher.tail.eq(tail), fetcher.ring_base.eq(ring_base),
                         fetcher.ring_size.eq(ring_size)]
            # A fetch fault surfaces once everything fetched before it has been dispatched.
            with m.If(busy & ~stopping & ~d_valid & ~fetcher.insn.valid & fetcher.fault & ~fetcher_restart):
                m.d.sync += [stopping.eq(1), pend_drain.eq(1)]
                if not follow_pend:
                    m.d.sync += fetch_fault
        else:
            # Fetching: the slot at ``head`` is read by the DMA unit once it is free, nothing is
            # in the decode register and ``head`` has not caught up with ``tail`` (a RING_TAIL
            # written bad meanwhile is BAD_RING, after everything before has finished).
            ring_addr = Signal(32)      # the byte address of slot ``head``, registered
            m.d.sync += ring_addr.eq(ring_base + (head << exact_log2(INSTRUCTION_BYTES)))
            # Registered: no LOAD/STORE/fetch sent or running, and no dispatch a cycle ago (then
            # ``ring_addr`` is a cycle behind ``head``).
            dma_free = Signal()
            m.d.sync += dma_free.eq(~dma.busy & ~dq_slice.o.valid & ~dq_sent & ~dispatch & ~ring_written)
            want_fetch = busy & ~stopping & ~fetched & ~fetching & ~caught_up & dma_free
            fetch_now = want_fetch & ~bad_ring
            with m.If(want_fetch & bad_ring):
                m.d.sync += [stopping.eq(1), pend_code.eq(ErrorCode.BAD_RING), pend_addr.eq(0), pend_cmd.eq(head),
                             pend_drain.eq(1)]
            # The decode register's LOAD or STORE, else a fetch. (``fetch`` is driven from a signal:
            # a bit of ``new_dq`` nothing drives would be X in Icarus.)
            # The command's fields are picked by ``fetch_cmd``, ``~fetched`` kept as a register of
            # its own: the 80-odd selects stay off ``fetched``'s paths into dispatch.
            fetch_cmd = Signal(init=1)
            m.d.comb += [dq_slice.i.valid.eq(Mux(fetched, send_dq, fetch_now)), dq_slice.i.payload.eq(new_dq.cmd),
                         dq_slice.i.payload.fetch.eq(fetch_cmd)]
            with m.If(fetch_cmd):
                m.d.comb += [dq_slice.i.payload.rows.eq(1), dq_slice.i.payload.mem_addr.eq(ring_addr),
                             dq_slice.i.payload.stride.eq(0), dq_slice.i.payload.store.eq(0)]
            with m.If(fetch_now & dq_sent):
                m.d.sync += fetching.eq(1)
            with m.If(fetching & dma.done):
                m.d.sync += [fetching.eq(0), fetched.eq(1), fetch_cmd.eq(0)]
            with m.If(dispatch):
                m.d.sync += [fetched.eq(0), fetch_cmd.eq(1)]
            with m.If(fetch_restart):
                m.d.sync += [fetching.eq(0), fetched.eq(0), fetch_cmd.eq(1)]
            # The slot of the DMA unit's command, for its faults.
            running_slot = Signal(cfg.ring_bits)
            with m.If(dq_sent):
                m.d.sync += running_slot.eq(head)
            m.d.comb += dma_slot.eq(running_slot)
        start_now = Signal()
        m.d.sync += start_now.eq(start & ~busy & ~error)

        def finish_error(code, addr, cmd):
            m.d.sync += [busy.eq(0), error.eq(1), error_code.eq(code), error_addr.eq(addr),
                         error_cmd.eq(cmd), head.eq(cmd), irq_pending[IRQ_ERROR].eq(1), stopping.eq(0)]

        with m.If(start_now):
            with m.If(bad_ring):
                finish_error(ErrorCode.BAD_RING, 0, head)
            with m.Else():
                m.d.sync += [busy.eq(1), stopping.eq(0), stop_end.eq(0), pend_drain.eq(0)]
                m.d.comb += fetch_restart.eq(1)

        # The end of a run: on the DMA unit's fault (it comes from the oldest unfinished
        # LOAD/STORE: it wins), on a pending fault once everything before it has drained,
        # or at END once all is idle.
        end_pend = busy & stopping & ~stop_end & pend_drain & all_idle & fetch_idle
        end_done = busy & stopping & stop_end & all_idle & fetch_idle
        if cfg.register_slices:
            # Each verdict registered and acted on a cycle later (not the units' idle flags
            # driving the 100-odd registers an end writes); a verdict taken is not taken
            # again in the cycle it is acted on.
            verdicts = Signal(3)
            m.d.sync += verdicts.eq(Mux(verdicts.any(), 0, Cat(busy & dma.fault & fetch_idle,
                                                                  ~dma.fault & end_pend, ~dma.fault & end_done)))
            with m.If(busy & dma.fault):
                m.d.sync += stopping.eq(1)
            with m.If(verdicts[0]):
                finish_error(dma.fault_code, dma.fault_addr, dma_slot)
            with m.Elif(verdicts[1]):
                finish_error(pend_code, pend_addr, pend_cmd)
            with m.Elif(verdicts[2]):
                m.d.sync += [busy.eq(0), stopping.eq(0), irq_pending[IRQ_DONE].eq(1)]
                m.d.comb += fetch_restart.eq(1)
        else:
            with m.If(busy & dma.fault):
                m.d.sync += stopping.eq(1)
                with m.If(fetch_idle):
                    finish_error(dma.fault_code, dma.fault_addr, dma_slot)
            with m.Elif(end_pend):
                finish_error(pend_code, pend_addr, pend_cmd)
            with m.Elif(end_done):
                m.d.sync += [busy.eq(0), stopping.eq(0), irq_pending[IRQ_DONE].eq(1)]
                m.d.comb += fetch_restart.eq(1)

        # --- Performance counters -----------------------------------------------------
        dp_rows = dp.event_row_issued
        fetch_waiting = busy & ~stopping & ~d_valid
        if sequential:
            stall_fetch = fetch_waiting & ~caught_up
        else:
            fetch_more = ~(caught_up & fetch_idle & ~fetcher.insn.valid)     # more is coming
            if cfg.register_slices:
                # Its halves registered apart (``caught_up`` is a compare, ``insn.valid`` the
                # fetcher's FIFO): counted a cycle after the other events, the same in total.
                stall_fetch = register(m, fetch_waiting, name="fetch_waiting") & register(m, fetch_more, name="fetch_more")
            else:
                stall_fetch = fetch_waiting & fetch_more
        events = {
            "cycles":           busy,
            "dma_busy":         dma.busy,
            "fetch_busy":       fetching if sequential else fetcher.bus.cyc,
            "array_busy":       dp_rows,
            "ppu_busy":         dp.event_ppu_busy,
            "macs":             Mux(dp_rows, R * C, 0),
            "bytes_read":       dma.event_bytes_read + (0 if sequential else fetcher.event_bytes_read),
            "bytes_written":    dma.event_bytes_written,
            "instructions":     dispatch,
            "stall_weight":     dp.event_weight_stall,
            "stall_output":     dp.event_output_stall,
            "stall_dependency": valid & blocked_dep,
            "stall_queue_full": valid & ~blocked_dep & blocked_room,
            "stall_fetch":      stall_fetch,
            "stall_bus":        dma.event_bus_wait,
        }
        assert list(events) == list(PERF_COUNTERS)
        counters = {}
        built = [name for name in events if cfg.builds_counter(name)]
        if cfg.register_slices:
            # PERF_CLEAR takes effect a cycle after its write, from a register per counter
            # (not the write's decode driving the resets of 720 flip-flops).
            clears = dict(zip(built, fanout(m, perf_clear, len(built), name="perf_clear")))
        else:
            clears = dict.fromkeys(built, perf_clear)
        for name, event in events.items():
            if not cfg.builds_counter(name):
                continue        # its registers read 0
            # Events are registered before they are counted: counts land a cycle later, and
            # no event logic sits in front of a 48-bit adder.
            seen = Signal(event.shape(), name=f"event_{name}")
            m.d.sync += seen.eq(event)
            counter = counters[name] = Signal(cfg.perf_counter_bits, name=f"perf_{name}")
            with m.If(clears[name]):
                m.d.sync += counter.eq(0)
            with m.Else():
                m.d.sync += counter.eq(counter + seen)

        # --- Register reads -----------------------------------------------------------
        hi_latch = Signal(32)
        rdata = Signal(32)
        status = Signal(32)
        m.d.comb += [
            status[_bit("STATUS", "BUSY")].eq(busy),
            status[_bit("STATUS", "DONE")].eq(irq_pending[IRQ_DONE]),
            status[_bit("STATUS", "ERROR")].eq(error),
            status[_bit("STATUS", "WAITING")].eq(busy & caught_up),
            status[_bit("STATUS", "ERROR_CODE"):_bit("STATUS", "ERROR_CODE") + 8].eq(error_code),
        ]
        # Identification: the values the generated npu_regs.h documents for this config.
        constants = {reg.name: reset_value(reg, cfg) for reg in REGISTERS if reg.name.startswith("ID_")}
        readable = {
            "STATUS": status, "IRQ_ENABLE": irq_enable, "IRQ_PENDING": irq_pending, "ERROR_ADDR": error_addr,
            "ERROR_CMD": error_cmd, "RING_BASE": ring_base, "RING_SIZE": ring_size, "RING_HEAD": head,
            "RING_TAIL": tail, "WINDOW_BASE": window_base, "WINDOW_LIMIT": window_limit,
        }
        words = {_word(name): value for name, value in constants.items()}
        words.update({_word(name): sig for name, sig in readable.items()})
        for name, counter in counters.items():
            words[_word(f"PERF_{name.upper()}_LO")] = counter[:32]
            words[_word(f"PERF_{name.upper()}_HI")] = hi_latch
        # Reading a counter's low word latches its high word as it was in that cycle; with
        # register slices in two stages (the latch is read by a later access): the addressed
        # counter's high word of each group of eight counters, registered, then the group's.
        if not cfg.register_slices:
            with m.If(self.csr_accept & ~csr.we):
                with m.Switch(csr.adr):
                    for name, counter in counters.items():
                        with m.Case(_word(f"PERF_{name.upper()}_LO")):
                            m.d.sync += hi_latch.eq(counter[32:])
        else:
            # The request registered first (``read_adr``, ``read_we``, ``read_taken``), with
            # a copy of the address's low bits per group of eight words (each beside its
            # group's registers; separate flip-flops on an ECP5).
            read_adr, read_we, read_taken = Signal.like(csr.adr), Signal(), Signal()
            m.d.sync += [read_adr.eq(csr.adr), read_we.eq(csr.we), read_taken.eq(self.csr_accept)]
            low_copies = {}

            def low(group):
                if group not in low_copies:
                    low_copies[group] = register(m, csr.adr[:3], name=f"read_low{group}",
                                                 separate=registered_dsp(platform))
                return low_copies[group]
            hi_parts = _group_registers(m, low, {_word(f"PERF_{name.upper()}_LO"): counter[32:]
                                                 for name, counter in counters.items()}, "hi_group")
            latch, latch_group = Signal(), Signal(len(csr.adr) - 3)
            lo_read = read_taken & ~read_we & Cat(*(read_adr == _word(f"PERF_{name.upper()}_LO")
                                                    for name in counters)).any()
            m.d.sync += [latch.eq(lo_read), latch_group.eq(read_adr[3:])]
            with m.If(latch):
                with m.Switch(latch_group):
                    for group, part in hi_parts.items():
                        with m.Case(group):
                            m.d.sync += hi_latch.eq(part)
        dat_r = Signal(32)
        if not cfg.register_slices:
            with m.Switch(csr.adr):
                for word, value in words.items():
                    with m.Case(word):
                        m.d.comb += rdata.eq(value)
            with m.If(self.csr_accept):
                m.d.sync += dat_r.eq(Mux(csr.we, 0, rdata))
        else:
            # Three stages (the answer comes three cycles after the request): the request
            # (above), each group of eight words read into a register by the address's low
            # bits, then the group picked by the high bits.
            parts = _group_registers(m, low, words, "read_group")
            high, we, taken = Signal(len(csr.adr) - 3), Signal(), Signal()
            m.d.sync += [high.eq(read_adr[3:]), we.eq(read_we), taken.eq(read_taken)]
            with m.Switch(high):
                for group, part in parts.items():
                    with m.Case(group):
                        m.d.comb += rdata.eq(part)
            with m.If(taken):
                m.d.sync += dat_r.eq(Mux(we, 0, rdata))
        m.d.comb += csr.dat_r.eq(dat_r)
        return m
