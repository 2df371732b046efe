"""The NPU datapath: banked buffers, the systolic array, accumulators and post-processing."""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .layouts import (PPU_COMMAND_FIELDS, TileOp, act_write_layout, command_layout, idx_entry_layout,
                      idx_write_layout, output_layout, param_write_layout, wgt_write_layout)
from .pe import registered_dsp
from .pipeline import delay, fanout, register
from .ram import CollisionFreeReadPort
from .ppu import PIPELINE_STAGES as PPU_STAGES, PostProcessor
from .systolic_array import SystolicArray

__all__ = ["Datapath", "PERF_COUNTERS", "PERF_COUNTER_WIDTH"]

#: Performance counters, in the order they are documented and exported.
PERF_COUNTERS = {
    "active_cycles":       "cycles with any accepted command still in progress",
    "rows_issued":         "activation rows fed into the array (each row is rows*cols MAC slots)",
    "weight_stall_cycles": "cycles the array waited for a tile's weights to load",
    "output_stall_cycles": "cycles an output row was held back by the consumer (out.ready low)",
}
PERF_COUNTER_WIDTH = 32


class Datapath(wiring.Component):
    """Weight-stationary NPU datapath driven by a stream of tile operations.

    Buffers are written through ``act_wr``, ``wgt_wr`` and ``param_wr`` (one row per
    cycle, never back-pressured; except ``param_wr`` with the serial requantiser, which
    takes a row in ``requant_passes`` cycles: hold it until ``ready``). Commands on
    ``cmd`` run in order with the semantics of the golden model (``npu.sim.golden``):

    * ``COMPUTE``: load weight rows ``wgt_addr .. wgt_addr+rows-1`` into the array, then
      for ``m < count``: ``acc[acc_addr+m][n] = (acc if accumulate else 0) +
      sum_k act[k][act_addr+m] * wgt[wgt_addr+k][n]``. The weights of the next COMPUTE
      load into the second weight bank while this one streams, so consecutive tiles
      follow each other without stall cycles (given ``count >= 2*rows + cols + 3``).
    * ``OUTPUT``: post-process ``count`` accumulator rows from ``acc_addr`` with the
      parameter entry ``param_addr`` into rows on ``out``. It starts when every earlier
      COMPUTE has written its results; a later COMPUTE starts once this command has
      read its last accumulator row.

    ``idle`` is high when every accepted command has finished and its output has left
    (with register slices a cycle later, and low in the cycle after a command is offered).

    On an N:M configuration (the sparse front end) an activation entry holds
    ``act_lanes`` elements and an index buffer is written through ``idx_wr``. A
    COMPUTE with ``sparse`` set loads index entry ``idx_addr`` with its weights; array
    row r then receives the M activations of its group (elements ``(r//N)*M ..``) and
    each PE picks the one its weight's index names. A dense COMPUTE (``sparse`` clear)
    gives every PE of row r element ``part*rows + r``, broadcast over the group.
    """

    def __init__(self, config):
        self.config = config
        # 3 with register slices (the 100 MHz settings): operand and product registers beside the DSP blocks'
        # long routes. (5 was measured no faster on the ULX3S-25F: the placer keeps the
        # cells' registers beside the array, not beside a distant DSP block.)
        self.pe_pipeline = 3 if config.register_slices else 1
        self.array_latency = SystolicArray.latency_of(config.rows, config.cols, self.pe_pipeline,
                                                      config.activations == "broadcast")
        # An accumulator read of the post-processor: 1, or 3 with register slices and the
        # pipelined requantiser (a copy of the address per column, the read, its register).
        self.ppu_read_latency = 3 if config.register_slices and config.requantiser == "pipelined" else 1
        # Array output to accumulator written: read, (register the read data,) add and write.
        self.accumulate_latency = 3 if config.register_slices else 2
        ports = {
            "cmd":      In(stream.Signature(command_layout(config))),
            "act_wr":   In(stream.Signature(act_write_layout(config))),
            "wgt_wr":   In(stream.Signature(wgt_write_layout(config))),
            "param_wr": In(stream.Signature(param_write_layout(config))),
            "out":      Out(stream.Signature(output_layout(config))),
            "idle":     Out(1),
            # One-cycle pulses for the command processor and its performance counters.
            "compute_retire": Out(1),   # a COMPUTE issued its last row (its buffer reads are done)
            "event_row_issued": Out(1),
            "event_weight_stall": Out(1),
            "event_output_stall": Out(1),
            "event_ppu_busy": Out(1),
        }
        if config.sparse:
            ports["idx_wr"] = In(stream.Signature(idx_write_layout(config)))
        ports.update({f"perf_{name}": Out(PERF_COUNTER_WIDTH) for name in PERF_COUNTERS})
        super().__init__(ports)

    @property
    def drain_cycles(self):
        """Drain timer of a weight bank: set when its tile's last row issues (or when an empty
        tile is taken); the bank may be reloaded ``drain_cycles + 1`` cycles later."""
        # The last use of the bank is cycle L+R+C (PE (R-1, C-1), behind the array's input
        # register); the loader's first write into it comes in L+R+C+3 at the earliest.
        return self.config.rows + self.config.cols

    @property
    def latencies(self):
        """Pipeline latencies in cycles, as exported to the manifest."""
        return {
            "array": self.array_latency,
            "activation_read": 1,
            "accumulate": self.accumulate_latency,
            "compute_row_to_accumulator": 1 + self.array_latency + self.accumulate_latency,
            "weight_load": self.config.rows + 1,
            # Accept, one read per weight row, queue, hand over: what only the first tile waits.
            "first_tile_weight_stall": self.config.rows + 3,
            "weight_bank_drain": self.drain_cycles,
            # The pipelined requantiser's depth (a serial one takes a varying number of cycles).
            **({"ppu_pipeline": PPU_STAGES + self.ppu_read_latency - 1}
               if self.config.requantiser == "pipelined" else {}),
            # (With one weight bank every tile waits for the one before to drain.)
            **({"min_stall_free_tile_rows": 2 * self.config.rows + self.config.cols + 3}
               if self.config.weight_banks == 2 else {}),
        }

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        R, C = cfg.rows, cfg.cols

        # Buffer writes complete in one cycle: never back-pressured.
        m.d.comb += [self.act_wr.ready.eq(1), self.wgt_wr.ready.eq(1)]

        # --- Buffers ------------------------------------------------------------------
        # The activation and weight buffers are never read at an address written in the same
        # cycle: a COMPUTE reads them only after the LOADs before it have finished, and a LOAD
        # into rows an unfinished COMPUTE reads waits for it (the scoreboard; with sequential
        # dispatch nothing overlaps). So their read ports need no read-during-write logic.
        act_banks = []
        for k in range(cfg.act_lanes):
            bank = Memory(shape=signed(cfg.data_width), depth=cfg.act_depth, init=[],
                          attrs=CollisionFreeReadPort.ATTRS)
            m.submodules[f"act_bank{k}"] = bank
            wp, rp = bank.write_port(), CollisionFreeReadPort(m, bank, name=f"act_r{k}")
            m.d.comb += [wp.addr.eq(self.act_wr.payload.addr), wp.data.eq(self.act_wr.payload.data[k]),
                         wp.en.eq(self.act_wr.valid & self.act_wr.payload.mask[k])]
            act_banks.append(rp)

        m.submodules.wgt_buf = wgt_buf = Memory(shape=output_layout(cfg), depth=cfg.wgt_depth, init=[],
                                                attrs=CollisionFreeReadPort.ATTRS)
        wgt_w, wgt_r = wgt_buf.write_port(granularity=1), CollisionFreeReadPort(m, wgt_buf, name="wgt_r")
        m.d.comb += [wgt_w.addr.eq(self.wgt_wr.payload.addr), wgt_w.data.eq(self.wgt_wr.payload.data),
                     wgt_w.en.eq(Mux(self.wgt_wr.valid, self.wgt_wr.payload.mask, 0))]

        acc_w, acc_r = [], []
        for n in range(C):
            # Transparent: a row written this cycle is read back as written (the next
            # tile may accumulate into the same row one cycle later). With one weight bank
            # the next tile leaves the array only after its weights have loaded, rows of a
            # tile have addresses of their own, and an OUTPUT reads only rows written
            # before it starts: no row is read in the cycle it is written.
            one_bank = cfg.weight_banks == 1
            bank = Memory(shape=signed(cfg.acc_width), depth=cfg.acc_depth, init=[],
                          attrs=CollisionFreeReadPort.ATTRS if one_bank else {})
            m.submodules[f"acc_bank{n}"] = bank
            wp = bank.write_port()
            acc_w.append(wp)
            acc_r.append(CollisionFreeReadPort(m, bank, name=f"acc_r{n}") if one_bank
                         else bank.read_port(transparent_for=(wp,)))

        sparse_n, group = cfg.sparse_nm
        if cfg.sparse:
            m.submodules.idx_buf = idx_buf = Memory(shape=idx_entry_layout(cfg), depth=cfg.idx_depth, init=[])
            idx_w, idx_r = idx_buf.write_port(), idx_buf.read_port()
            m.d.comb += [idx_w.addr.eq(self.idx_wr.payload.addr), idx_w.data.eq(self.idx_wr.payload.data),
                         idx_w.en.eq(self.idx_wr.valid), self.idx_wr.ready.eq(1)]
        m.submodules.array = array = SystolicArray(
            rows=R, cols=C, data_width=cfg.data_width, psum_width=cfg.psum_width, group=max(group, 1),
            pe_pipeline=self.pe_pipeline, banks=cfg.weight_banks, broadcast=cfg.activations == "broadcast",
            weight_chain=cfg.register_slices, row_valid=cfg.register_slices)
        m.submodules.ppu = ppu = PostProcessor(cfg, acc_read_latency=self.ppu_read_latency)
        m.d.comb += [ppu.param_wr.valid.eq(self.param_wr.valid), ppu.param_wr.payload.eq(self.param_wr.payload),
                     self.param_wr.ready.eq(ppu.param_wr.ready)]
        wiring.connect(m, ppu.out, wiring.flipped(self.out))

        # --- Weight loader: fills the free weight bank, then queues the command ---------
        cmd_layout = command_layout(cfg)
        q_valid = Signal()
        q_cmd = Signal(cmd_layout)
        q_bank = Signal()
        q_pop = Signal()
        # With register slices the loader pushes only into an empty slot, not into one
        # emptying this cycle: the slot's enable then comes from registers, not from the
        # streamer's and the post-processor's state (a pushed command waits for the tile
        # streaming anyway, so this costs at most a cycle per tile).
        push_ok = ~q_valid if cfg.register_slices else ~q_valid | q_pop

        next_bank = Signal()
        banks = cfg.weight_banks
        bank_busy = Signal(banks)   # a loaded bank in use until its last tile drains
        # One bank: a COMPUTE is taken only into an empty queue slot, and the loader's
        # command register is the slot's (nothing overlaps the weight load).
        load_cmd = Signal(cmd_layout) if banks == 2 else q_cmd
        load_row = Signal(range(R + 1))
        loading = Signal()          # a COMPUTE is accepted and waiting for / loading weights

        is_compute = self.cmd.payload.op == TileOp.COMPUTE
        # Pop first; a push in the same cycle (below) overrides, keeping the slot full.
        with m.If(q_pop):
            m.d.sync += q_valid.eq(0)
        with m.FSM(name="loader") as loader:
            with m.State("WAIT"):
                with m.If(is_compute):
                    m.d.comb += self.cmd.ready.eq(~bank_busy.bit_select(next_bank, 1) & (~q_valid if banks == 1 else 1))
                    with m.If(self.cmd.valid & self.cmd.ready):
                        m.d.sync += [load_cmd.eq(self.cmd.payload), load_row.eq(0)]
                        m.next = "LOAD"
                with m.Else():
                    # Taken into an empty slot only (not into one emptying this cycle): the
                    # command interface's ready then comes from registers, not from the
                    # streamer's and the post-processor's state.
                    m.d.comb += self.cmd.ready.eq(~q_valid)
                    with m.If(self.cmd.valid & ~q_valid):
                        m.d.sync += [q_valid.eq(1), q_cmd.eq(self.cmd.payload)]
                m.d.comb += loading.eq(self.cmd.valid & is_compute)
            with m.State("LOAD"):
                m.d.comb += [wgt_r.addr.eq(load_cmd.wgt_addr + load_row), wgt_r.en.eq(1), loading.eq(1)]
                m.d.sync += load_row.eq(load_row + 1)
                with m.If(load_row == R - 1):
                    m.next = "PUSH"
            with m.State("PUSH"):
                m.d.comb += loading.eq(1)
                with m.If(push_ok):
                    m.d.sync += [q_valid.eq(1), q_cmd.eq(load_cmd), q_bank.eq(next_bank)]
                    if banks == 2:
                        m.d.sync += next_bank.eq(~next_bank)
                    m.next = "WAIT"
        # The read issued for row r arrives one cycle later and is written into the array.
        load_rd_valid = Signal()
        load_rd_row = Signal.like(load_row)
        m.d.sync += [load_rd_valid.eq(loader.ongoing("LOAD")), load_rd_row.eq(load_row)]
        m.d.comb += [array.w_load.eq(load_rd_valid), array.w_row.eq(load_rd_row),
                     array.w_bank.eq(next_bank)]
        m.d.comb += [array.w_data[n].eq(wgt_r.data[n]) for n in range(C)]
        if cfg.sparse:
            # The tile's index entry is read with its first weight row and held.
            m.d.comb += [idx_r.addr.eq(load_cmd.idx_addr), idx_r.en.eq(loader.ongoing("LOAD") & (load_row == 0))]
            idx_row = Signal(data.ArrayLayout(unsigned(cfg.idx_bits), C))
            m.d.comb += idx_row.eq(idx_r.data.as_value().word_select(load_rd_row, C * cfg.idx_bits))
            m.d.comb += [array.w_idx[n].eq(idx_row[n]) for n in range(C)]

        # --- Streamer: feeds activation rows to the array, one per cycle ----------------
        s_active = Signal()
        s_remaining = Signal.like(q_cmd.count)
        s_act_addr = Signal.like(q_cmd.act_addr)
        s_acc_addr = Signal.like(q_cmd.acc_addr)
        s_accumulate = Signal()
        s_bank = Signal()
        in_flight = Signal(range(self.array_latency + 8))  # rows issued, not yet accumulated
        acc_write = Signal()

        issue = s_active
        s_last = Signal()           # s_remaining == 1, kept as a register of its own
        last_issue = s_active & s_last
        q_is_compute = q_cmd.op == TileOp.COMPUTE
        take_compute = q_valid & q_is_compute & (~s_active | last_issue) & ~ppu.reading
        # "No row in the array" (in_flight == 0); with register slices a register of its own,
        # from the count's next value (the streamer and the post-processor sit far apart).
        if cfg.register_slices:
            drained = Signal(init=1)
            m.d.sync += drained.eq(~issue & ((in_flight == 0) | ((in_flight == 1) & acc_write)))
        else:
            drained = in_flight == 0
        m.d.comb += [
            ppu.cmd.valid.eq(q_valid & ~q_is_compute & ~s_active & drained),
            *(getattr(ppu.cmd.payload, name).eq(getattr(q_cmd, name)) for name in PPU_COMMAND_FIELDS),
            q_pop.eq(take_compute | (ppu.cmd.valid & ppu.cmd.ready)),
        ]

        with m.If(issue):
            m.d.sync += [s_remaining.eq(s_remaining - 1), s_act_addr.eq(s_act_addr + 1),
                         s_acc_addr.eq(s_acc_addr + 1), s_last.eq(s_remaining == 2)]
            with m.If(last_issue):
                m.d.sync += s_active.eq(0)
        with m.If(take_compute):
            m.d.sync += [s_active.eq(q_cmd.count != 0), s_remaining.eq(q_cmd.count), s_last.eq(q_cmd.count == 1),
                         s_act_addr.eq(q_cmd.act_addr), s_acc_addr.eq(q_cmd.acc_addr),
                         s_accumulate.eq(q_cmd.accumulate), s_bank.eq(q_bank)]

        # A bank is released drain_cycles after its tile's last row (an empty tile's likewise).
        for b in range(banks):
            timer = Signal(range(self.drain_cycles + 1), name=f"drain_timer{b}")
            release = (last_issue & (s_bank == b)) | (take_compute & (q_cmd.count == 0) & (q_bank == b))
            load = self.drain_cycles
            if cfg.register_slices:
                # Registered, and the timer loaded a cycle later with one less: the bank is
                # released in the same cycle (the timer is zero when a bank is released, as a
                # bank is loaded only once free), and the command handshake does not reach
                # the timer's set and reset inputs.
                release = register(m, release, name=f"drain_release{b}")
                load = self.drain_cycles - 1
            with m.If(release):
                m.d.sync += timer.eq(load)
            with m.Elif(timer != 0):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 1):
                    m.d.sync += bank_busy[b].eq(0)
            with m.If(loader.ongoing("PUSH") & push_ok & (next_bank == b)):
                m.d.sync += bank_busy[b].eq(1)

        for bank in act_banks:
            m.d.comb += [bank.addr.eq(s_act_addr), bank.en.eq(issue)]
        # Row control, aligned with the activation read (one cycle), then the array.
        row_valid, row_sel = Signal(), Signal()
        row_addr = Signal.like(s_acc_addr)
        row_accumulate = Signal()
        m.d.sync += [row_valid.eq(issue), row_sel.eq(s_bank), row_addr.eq(s_acc_addr),
                     row_accumulate.eq(s_accumulate)]
        m.d.comb += [array.valid.eq(row_valid), array.sel.eq(row_sel)]
        if cfg.register_slices:
            # A copy of ``row_valid`` per array row for its input register's zeroing: not one
            # register routed to the rows' resets across the device.
            copies = fanout(m, issue, R, name="row_valid_row", separate=registered_dsp(platform))
            m.d.comb += [array.valid_row[k].eq(copies[k]) for k in range(R)]
        if not cfg.sparse:
            m.d.comb += [array.a_in[k].eq(act_banks[k].data) for k in range(R)]
        else:
            s_sparse, s_part = Signal(), Signal.like(q_cmd.part)
            row_sparse, row_part = Signal(), Signal.like(q_cmd.part)
            with m.If(take_compute):
                m.d.sync += [s_sparse.eq(q_cmd.sparse), s_part.eq(q_cmd.part)]
            m.d.sync += [row_sparse.eq(s_sparse), row_part.eq(s_part)]
            for k in range(R):
                # Dense tile: element part*R + k, broadcast to the whole group.
                dense = Signal(signed(cfg.data_width), name=f"dense_a{k}")
                with m.Switch(row_part):
                    for p in range(cfg.dense_parts):
                        with m.Case(p):
                            m.d.comb += dense.eq(act_banks[p * R + k].data)
                base = k // sparse_n * group
                for j in range(group):
                    m.d.comb += array.a_in[k][j].eq(Mux(row_sparse, act_banks[base + j].data, dense))
        # The rows' accumulator address and flags, beside the sums leaving the array. With
        # register slices each accumulator column gets its own registered copy (``fanout``):
        # a row of the array spans a large device, and so do the columns' accumulators.
        per_column = cfg.register_slices and banks == 2
        if banks == 2:
            early = self.array_latency - (1 if per_column else 0)
            out_valid = delay(m, row_valid, early, name="row_valid")
            out_addr = delay(m, row_addr, early, name="row_addr")
            out_accumulate = delay(m, row_accumulate, early, name="row_accumulate")
        else:
            # One bank: a tile is taken only once the tile before has left the array (its bank
            # drained, then the weights loaded), so the rows leaving the array are the taken
            # tile's, in order: their addresses count up from its first (no delay line).
            out_valid = array.valid_out
            out_addr, out_accumulate = Signal.like(row_addr, name="out_addr"), Signal(name="out_accumulate")
            with m.If(take_compute):
                m.d.sync += [out_addr.eq(q_cmd.acc_addr), out_accumulate.eq(q_cmd.accumulate)]
            with m.Elif(array.valid_out):
                m.d.sync += out_addr.eq(out_addr + 1)
        separate = registered_dsp(platform)
        row_ctl = data.StructLayout({"valid": 1, "addr": len(row_addr), "accumulate": 1})
        ctl = Signal(row_ctl)
        m.d.comb += ctl.eq(Cat(out_valid, out_addr, out_accumulate))
        col_ctl = ([row_ctl(c) for c in fanout(m, ctl.as_value(), C, name="acc_ctl", separate=separate)] if per_column
                   else [ctl] * C)
        # The post-processor's reads: with the pipelined requantiser and register slices, a
        # copy per column too, and the data taken from the registered read (``acc_q``).
        ppu_fanout = self.ppu_read_latency > 1
        rd_ctl = data.StructLayout({"en": 1, "addr": len(ppu.acc_rd_addr)})
        rd = Signal(rd_ctl)
        m.d.comb += rd.eq(Cat(ppu.acc_rd_en, ppu.acc_rd_addr))
        col_rd = ([rd_ctl(c) for c in fanout(m, rd.as_value(), C, name="acc_rd", separate=separate)] if ppu_fanout
                  else [rd] * C)

        # --- Accumulator read-modify-write (shares the read port with the PPU) ----------
        # Column n's stages: the sum leaves the array (``col_ctl[n]``), the row is read
        # (rmw), [the read data is registered,] the sum is written.
        rmw_valid = [Signal(name=f"rmw_valid{n}") for n in range(C)]
        rmw_addr = [Signal.like(row_addr, name=f"rmw_addr{n}") for n in range(C)]
        rmw_accumulate = [Signal(name=f"rmw_accumulate{n}") for n in range(C)]
        rmw_psum = [Signal(signed(cfg.psum_width), name=f"rmw_psum{n}") for n in range(C)]
        for n in range(C):
            c, r = col_ctl[n], col_rd[n]
            m.d.sync += [rmw_valid[n].eq(c.valid), rmw_addr[n].eq(c.addr), rmw_accumulate[n].eq(c.accumulate),
                         rmw_psum[n].eq(array.psum_out[n])]
            m.d.comb += [acc_r[n].addr.eq(Mux(c.valid, c.addr, r.addr)), acc_r[n].en.eq(c.valid | r.en)]
        if cfg.register_slices:
            # The read data is registered before the add (a timing cut after the block RAM's
            # output). A row read a cycle after the same row was read misses that row's write,
            # which happens in this cycle: the sum being written is forwarded in its place.
            for n in range(C):
                w_valid, w_accumulate = Signal(name=f"w_valid{n}"), Signal(name=f"w_accumulate{n}")
                w_addr = Signal.like(row_addr, name=f"w_addr{n}")
                w_psum = Signal.like(rmw_psum[n], name=f"w_psum{n}")
                acc_q = Signal(signed(cfg.acc_width), name=f"acc_q{n}")
                w_sum = Signal(signed(cfg.acc_width), name=f"w_sum{n}")
                forward = w_valid & (w_addr == rmw_addr[n])
                m.d.sync += [w_valid.eq(rmw_valid[n]), w_addr.eq(rmw_addr[n]), w_accumulate.eq(rmw_accumulate[n])]
                m.d.comb += w_sum.eq(Mux(w_accumulate, acc_q, 0) + w_psum)
                m.d.sync += [w_psum.eq(rmw_psum[n]), acc_q.eq(Mux(forward, w_sum, acc_r[n].data))]
                m.d.comb += [acc_w[n].addr.eq(w_addr), acc_w[n].data.eq(w_sum), acc_w[n].en.eq(w_valid)]
                # (No row is being written while the post-processor reads: ``forward`` is 0.)
                m.d.comb += ppu.acc_rd_data[n].eq(acc_q if ppu_fanout else acc_r[n].data)
            # The write of every column, for the count of rows in flight (a local copy).
            m.d.comb += acc_write.eq(delay(m, out_valid, 3 if per_column else 2, name="acc_write"))
        else:
            for n in range(C):
                m.d.comb += [acc_w[n].addr.eq(rmw_addr[n]),
                             acc_w[n].data.eq(Mux(rmw_accumulate[n], acc_r[n].data, 0) + rmw_psum[n]),
                             acc_w[n].en.eq(rmw_valid[n]), ppu.acc_rd_data[n].eq(acc_r[n].data)]
            m.d.comb += acc_write.eq(rmw_valid[0])
        m.d.sync += in_flight.eq(in_flight + issue - acc_write)

        # --- Status and performance counters ------------------------------------------
        idle = loader.ongoing("WAIT") & ~q_valid & ~s_active & drained & ppu.idle
        if cfg.register_slices:
            # Registered (the requantiser's counts -> ``idle`` -> the command processor's
            # "all idle", across the device, was the 85F's critical path): a cycle late, and
            # low from the cycle after a command is offered (it may be taken that cycle).
            m.d.sync += self.idle.eq(idle & ~self.cmd.valid)
        else:
            m.d.comb += self.idle.eq(idle)
        events = {
            "active_cycles": ~idle,
            "rows_issued": issue,
            # No row issued because the next tile's weights are loading or being handed over.
            "weight_stall_cycles": ~s_active & ((~q_valid & loading) | take_compute),
            "output_stall_cycles": self.out.valid & ~self.out.ready,
        }
        for name, event in events.items():
            counter = getattr(self, f"perf_{name}")
            m.d.sync += counter.eq(counter + event)
        m.d.comb += [
            self.compute_retire.eq(last_issue),
            self.event_row_issued.eq(events["rows_issued"]),
            self.event_weight_stall.eq(events["weight_stall_cycles"]),
            self.event_output_stall.eq(events["output_stall_cycles"]),
            self.event_ppu_busy.eq(~ppu.idle),
        ]
        return m
