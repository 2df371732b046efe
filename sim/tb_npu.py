"""cocotb tests of the whole NPU (generated Verilog): programs in memory, registers, DMA.

Every test compares the complete memory image after a program with the golden
model's (:class:`npu.sim.golden.NPUModel`) run on the same initial image, plus the
status registers and the counters the model predicts. Memory outside the DMA window
(guard bytes) must stay unchanged, and the bus model must see no access outside it.

Environment: ``NPU_CONFIG`` (JSON), ``NPU_SEED``, ``NPU_WAITS`` ("lo,hi" wait states),
``NPU_STALL`` (stall probability), ``NPU_GEMM`` ("M,K,N"), ``NPU_RESULT`` (JSON out).
"""

import json
import os
import random

import cocotb
import numpy as np

from ..firmware.gemm import plan_gemm
from ..firmware.isa import INSTRUCTION_BYTES, Buffer, Compute, End, Fence, Load, Store, encode
from ..firmware.quant import quantize_multiplier
from ..generators.config import NPUConfig
from ..hdl.isa import BUFFER_KINDS, ErrorCode, row_words
from ..hdl.regs import MAGIC, VERSION
from .golden import NPUModel, reference_gemm
from .host import SimHost
from .memory import MemoryImage
from .testbench import write_result

GUARD = 256          # guard bytes on each side of the window
GUARD_FILL = 0xA5


def _config():
    return NPUConfig.from_dict(json.loads(os.environ["NPU_CONFIG"]))


def _env_waits():
    lo, hi = (int(v) for v in os.environ.get("NPU_WAITS", "0,0").split(","))
    return (lo, hi), float(os.environ.get("NPU_STALL", "0"))


def _seed():
    return int(os.environ.get("NPU_SEED", "1"))


def _memory(window_bytes, base=0x0010_0000):
    """A memory image with guard bytes around a window of ``window_bytes``."""
    size = -(-(window_bytes + 2 * GUARD) // 64) * 64
    mem = MemoryImage(base, size, fill=GUARD_FILL)
    lo, hi = base + GUARD, base + size - GUARD
    mem.write(lo, bytes(hi - lo))
    return mem, (lo, hi)


class Harness:
    """A SimHost plus the golden model, run side by side on the same memory."""

    def __init__(self, dut, config, mem, window, **bus):
        self.config = config
        self.window = window
        self.host = SimHost(dut, config, mem, **bus)
        self.model_memory = mem.copy()
        self.model = NPUModel(config, self.model_memory)
        self.ring_base = window[0]
        self.ring_size = 0

    async def start(self):
        await self.host.start()

    async def setup(self, ring_size, *, head=0, window=None):
        window = window or self.window
        self.ring_size = ring_size
        await self.host.configure(ring_base=self.ring_base, ring_size=ring_size, window=window, head=head)
        m = self.model
        m.ring_base, m.ring_size, m.head = self.ring_base, ring_size, head
        m.window_base, m.window_limit = window

    def write(self, addr, data):
        self.host.memory.write(addr, data)
        self.model_memory.write(addr, data)

    def load_program(self, program, first_slot=0):
        data = b"".join(encode(i).to_bytes(INSTRUCTION_BYTES, "little") for i in program)
        self.write(self.ring_base + first_slot * INSTRUCTION_BYTES, data)
        return first_slot + len(program)

    def load_raw(self, words, first_slot=0):
        """Raw 128-bit instruction words (possibly illegal)."""
        self.write(self.ring_base + first_slot * INSTRUCTION_BYTES,
                   b"".join(w.to_bytes(INSTRUCTION_BYTES, "little") for w in words))
        return first_slot + len(words)

    async def run(self, tail, *, timeout_cycles=200_000, check_memory=True, exact_bytes_read=True):
        """Run on both; compare status, head, counters and the memory image."""
        self.model.tail = tail
        self.model.clear_counters()     # the host starts with CTRL.PERF_CLEAR
        expected = self.model.run()
        status = await self.host.run(tail, timeout_cycles=timeout_cycles)
        counters = await self.host.counters()
        where = f"(RTL status {status}, model {expected} {self.model.error_code!r})"
        if expected == "error":
            assert status["error"] == 1 and status["busy"] == 0, f"expected an error {where}"
            assert status["error_code"] == self.model.error_code, f"error code {where}"
            assert status["error_cmd"] == self.model.error_cmd, f"ERROR_CMD {where}"
            assert status["error_addr"] == self.model.error_addr, f"ERROR_ADDR {where}"
            assert status["irq_pending"] & 0b10, f"IRQ_PENDING.ERROR not set {where}"
        else:
            assert expected == "done", expected
            assert status["error"] == 0, f"unexpected error {where}"
            assert status["done"] == 1 and status["busy"] == 0, f"END not reached {where}"
        assert status["ring_head"] == self.model.head, f"RING_HEAD {status['ring_head']} != {self.model.head}"
        names = ["macs", "bytes_written", "instructions"] + (["bytes_read"] if exact_bytes_read else [])
        if expected != "error":
            for name in names:
                assert counters[name] == self.model.counter(name), \
                    f"counter {name}: RTL {counters[name]}, model {self.model.counter(name)}"
        if check_memory:
            self.compare_memory()
        self.check_bus()
        return status, counters

    def compare_memory(self):
        diff = self.host.memory.diff(self.model_memory)
        assert not diff, f"memory differs from the golden model at (addr, rtl, model): " \
                         f"{[(hex(a), r, m) for a, r, m in diff]}"

    def check_bus(self):
        bus = self.host.bus
        assert not bus.violations, f"bus protocol violations: {bus.violations[:3]}"
        lo, hi = self.window
        outside = [a for a in bus.log if not lo <= a.addr < hi]
        assert not outside, f"{len(outside)} accesses outside the window, first {outside[0]}"
        assert not bus.out_of_range, f"accesses outside the memory: {bus.out_of_range[:3]}"
        mem = self.host.memory
        guard = mem.read(mem.base, lo - mem.base) + mem.read(hi, mem.base + mem.size - hi)
        assert guard == bytes([GUARD_FILL]) * len(guard), "guard bytes outside the window changed"

    async def recover(self):
        """Soft reset; the model's buffers persist (the RTL's memories are not cleared)."""
        await self.host.soft_reset()
        self.model.soft_reset()


def _gemm_operands(config, M, K, N, rng, *, sparse=False):
    lo, hi = -(1 << (config.data_width - 1)), (1 << (config.data_width - 1))
    a = rng.integers(lo, hi, size=(M, K))
    w = random_nm_weights(config, K, N, rng) if sparse else rng.integers(lo, hi, size=(K, N))
    bias = rng.integers(-(1 << 12), 1 << 12, size=N)
    scale = 1.0 / (K * (1 << (config.data_width - 1)) * 2)
    mult, shift = quantize_multiplier(scale * 4)
    return a, w, bias, mult, shift


def random_nm_weights(config, K, N, rng):
    """Random weights obeying the config's N:M pattern along K, with the cases the front
    end must get right: groups of 0 .. N non-zeros (some all zero), non-zeros on both
    group edges, extreme values, and a short last group when K % M != 0."""
    n, m = config.sparse_nm
    lo, hi = -(1 << (config.data_width - 1)), (1 << (config.data_width - 1))
    groups = -(-K // m)
    w = np.zeros((groups * m, N), dtype=np.int64)
    for g in range(groups):
        for col in range(N):
            kind = rng.integers(0, 4)
            if kind == 0:
                continue                                        # all zero
            if kind == 1:
                pos = [0, m - 1][:n] if n > 1 else [rng.choice([0, m - 1])]      # the edges
            else:
                pos = rng.choice(m, size=rng.integers(1, n + 1), replace=False)
            values = rng.integers(lo, hi, size=len(pos))
            values[values == 0] = lo                            # a kept weight is a non-zero one
            w[g * m + np.asarray(pos), col] = values
    return w[:K]


async def _run_gemm(dut, M, K, N, *, result_name=None):
    config = _config()
    rng = np.random.default_rng(_seed())
    waits, stall = _env_waits()
    sparse = os.environ.get("NPU_SPARSE") == "1"
    a, w, bias, mult, shift = _gemm_operands(config, M, K, N, rng, sparse=sparse)
    probe = plan_gemm(config, a, w, bias, mult, shift, base=0, sparse=sparse)
    ring_bytes = len(probe.program) * INSTRUCTION_BYTES
    mem, window = _memory(probe.end + ring_bytes + 64)
    gemm = plan_gemm(config, a, w, bias, mult, shift, base=window[0] + ring_bytes, sparse=sparse)
    h = Harness(dut, config, mem, window, wait_states=waits, stall_prob=stall, seed=_seed())
    await h.start()
    for addr, data in gemm.image:
        h.write(addr, data)
    await h.setup(len(gemm.program) + 1)
    tail = h.load_program(gemm.program)
    status, counters = await h.run(tail, timeout_cycles=50 * (gemm.macs // config.macs_per_cycle) + 100_000)
    assert not status["error"], \
        f"the GEMM stopped on error code {status['error_code']} ({len(gemm.program)} instructions)"
    y = gemm.read_result(config, h.host.memory.read)
    want = reference_gemm(a, w, bias, mult, shift, 0, -(1 << (config.data_width - 1)),
                          (1 << (config.data_width - 1)) - 1, acc_width=config.acc_width)
    mismatches = int(np.sum(y != want))
    assert mismatches == 0, f"{mismatches} of {y.size} results differ from reference_gemm"
    peak = counters["cycles"] * config.macs_per_cycle
    result = {
        "config": config.to_dict(), "gemm": {"M": M, "K": K, "N": N}, "tiles": gemm.tiles,
        "sparse": sparse, "nonzero_weights": int(np.count_nonzero(w)),
        "instructions": len(gemm.program), "wait_states": list(waits), "stall_prob": stall,
        "counters": counters, "useful_macs": gemm.macs,
        "mac_utilisation": gemm.macs / peak if peak else 0.0,
        "mismatches": mismatches, "elements": int(y.size),
    }
    write_result(result)
    return result


@cocotb.test()
async def gemm(dut):
    """A memory-to-memory GEMM (NPU_GEMM, default ragged 37x50x19) against the reference;
    with NPU_SPARSE=1 its weights are random N:M and it runs as sparse tiles."""
    M, K, N = (int(v) for v in os.environ.get("NPU_GEMM", "37,50,19").split(","))
    await _run_gemm(dut, M, K, N)


@cocotb.test()
async def mixed_sparse_dense(dut):
    """One program on an N:M NPU: a dense GEMM, a sparse GEMM, then a dense one again,
    back to back through the command processor (their loads and computes overlap);
    memory vs the golden model and each result vs reference_gemm."""
    config = _config()
    rng = np.random.default_rng(_seed())
    waits, stall = _env_waits()
    shapes = [(21, 2 * config.act_lanes + 3, 13, False), (21, 13, 2 * config.cols + 1, True),
              (21, 2 * config.cols + 1, 9, False)]
    gemms, operands = [], []
    for M, K, N, sparse in shapes:
        operands.append(_gemm_operands(config, M, K, N, rng, sparse=sparse))
        gemms.append((M, K, N, sparse))
    probes = [plan_gemm(config, *ops, base=0, sparse=sp) for ops, (_, _, _, sp) in zip(operands, gemms)]
    program_len = 1 + sum(len(probe.program) - 1 for probe in probes)
    ring_bytes = -(-program_len * INSTRUCTION_BYTES // 64) * 64
    mem, window = _memory(ring_bytes + sum(probe.end for probe in probes) + 64 * len(gemms))
    h = Harness(dut, config, mem, window, wait_states=waits, stall_prob=stall, seed=_seed())
    await h.start()
    addr = window[0] + ring_bytes
    plans, program = [], []
    for ops, (_, _, _, sparse) in zip(operands, gemms):
        plan = plan_gemm(config, *ops, base=addr, sparse=sparse)
        for where, data in plan.image:
            h.write(where, data)
        program += plan.program[:-1]                    # without its END
        plans.append(plan)
        addr = plan.end
    program.append(End())
    await h.setup(len(program) + 1)
    tail = h.load_program(program)
    await h.run(tail, timeout_cycles=400_000)
    for plan, (a, w, bias, mult, shift), (M, K, N, sparse) in zip(plans, operands, gemms):
        y = plan.read_result(config, h.host.memory.read)
        want = reference_gemm(a, w, bias, mult, shift, 0, -(1 << (config.data_width - 1)),
                              (1 << (config.data_width - 1)) - 1, acc_width=config.acc_width)
        assert np.array_equal(y, want), f"{'sparse' if sparse else 'dense'} {M}x{K}x{N} GEMM differs"
    dut._log.info(f"dense, sparse and dense GEMMs in one {len(program)}-instruction program matched")


def _random_program(config, rng, data_lo, data_hi, scratch_lo, scratch_hi, length):
    """Random legal instructions over the whole buffer space and memory regions."""
    c, bb = config, config.bus_bytes
    depth = {Buffer.ACT: c.act_depth, Buffer.WGT: c.wgt_depth, Buffer.PARAM: c.param_depth}
    if c.sparse:
        depth[Buffer.IDX] = c.idx_depth
    kind = BUFFER_KINDS
    program = []
    for _ in range(length):
        r = rng.random()
        if r < 0.35:
            buf = rng.choice(list(depth))
            rows = rng.randint(1, min(depth[buf], 24))
            start = rng.randint(0, depth[buf] - rows)
            size = row_words(c, kind[buf]) * bb
            stride = rng.choice([size, size * rng.randint(1, 4), 0 if rows == 1 else size])
            span = stride * (rows - 1) + size
            lo, hi = (scratch_lo, scratch_hi) if rng.random() < 0.3 else (data_lo, data_hi)
            addr = lo + rng.randrange(0, (hi - lo - span) // bb) * bb
            program.append(Load(buf, rows, start, addr, stride))
        elif r < 0.75:
            count = rng.randint(1, min(c.act_depth, c.acc_depth, 40))
            sparse = c.sparse and rng.random() < 0.5
            program.append(Compute(count, rng.randint(0, c.act_depth - count),
                                   rng.randint(0, c.wgt_depth - c.rows), rng.randint(0, c.acc_depth - count),
                                   accumulate=rng.random() < 0.5, sparse=sparse,
                                   part=0 if sparse else rng.randint(0, c.dense_parts - 1),
                                   idx_addr=rng.randint(0, c.idx_depth - 1) if sparse else 0))
        elif r < 0.95:
            count = rng.randint(1, min(c.acc_depth, 24))
            size = row_words(c, "out") * bb
            stride = size * rng.randint(1, 3)
            span = stride * (count - 1) + size
            addr = scratch_lo + rng.randrange(0, (scratch_hi - scratch_lo - span) // bb) * bb
            program.append(Store(count, rng.randint(0, c.acc_depth - count), rng.randint(0, c.param_depth - 1),
                                 addr, stride))
        else:
            program.append(Fence())
    return program + [End()]


@cocotb.test()
async def random_programs(dut):
    """Random legal programs (LOAD/COMPUTE/STORE/FENCE), memory image vs the golden model."""
    config = _config()
    seed = _seed()
    rng = random.Random(seed)
    waits, stall = _env_waits()
    count, length = int(os.environ.get("NPU_PROGRAMS", "3")), int(os.environ.get("NPU_LENGTH", "150"))
    mem, window = _memory(64 * 1024)
    h = Harness(dut, config, mem, window, wait_states=waits, stall_prob=stall, seed=seed)
    ring_slots = length + 2
    data_lo = window[0] + ring_slots * INSTRUCTION_BYTES + 64
    data_lo -= data_lo % 64
    data_hi = data_lo + 24 * 1024
    scratch_lo, scratch_hi = data_hi, window[1]
    h.write(data_lo, bytes(rng.getrandbits(8) for _ in range(data_hi - data_lo)))
    await h.start()
    total = 0
    for n in range(count):
        program = _random_program(config, rng, data_lo, data_hi, scratch_lo, scratch_hi, length)
        await h.setup(ring_slots)
        tail = h.load_program(program)
        await h.run(tail, timeout_cycles=400 * length + 20_000)
        await h.host.ack_irq()
        total += len(program)
    dut._log.info(f"{total} instructions in {count} random programs matched the golden model")


@cocotb.test()
async def errors_and_recovery(dut):
    """Every error code: status, ERROR_CMD/ADDR, irq, no hang; a soft reset recovers each time."""
    config = _config()
    c, bb = config, config.bus_bytes
    rng = random.Random(_seed())
    mem, window = _memory(16 * 1024)
    fail_addr = {"value": None}
    h = Harness(dut, config, mem, window, error_if=lambda addr, we: fail_addr["value"] == addr, seed=_seed())
    await h.start()
    data = window[0] + 4096
    h.write(data, bytes(rng.getrandbits(8) for _ in range(4096)))
    act = row_words(c, "act") * bb
    out = row_words(c, "out") * bb
    good = [Load(Buffer.ACT, 4, 0, data, act), Load(Buffer.WGT, c.rows, 0, data + 256, row_words(c, "wgt") * bb),
            Load(Buffer.PARAM, 1, 0, data + 1024, row_words(c, "param") * bb), Compute(4, 0, 0, 0),
            Store(4, 0, 0, window[0] + 8192, out)]
    illegal = [0, 7 | 1 << 40, encode(Compute(1, 0, 0, 0)) | 1 << 100, encode(End()) | 1 << 8]
    if not c.sparse:    # the sparse front end's buffer and fields do not exist on a dense NPU
        illegal += [encode(Load(0, 1, 0, data, act)) | 3 << 4, encode(Compute(1, 0, 0, 0, sparse=True)),
                    encode(Compute(1, 0, 0, 0, part=1)), encode(Compute(1, 0, 0, 0, idx_addr=1))]
    bad = [Load(Buffer.ACT, 0, 0, data, act), Load(Buffer.ACT, 2, c.act_depth - 1, data, act),
           Load(Buffer.PARAM, 1, c.param_depth, data, act), Compute(1, 0, c.wgt_depth - c.rows + 1, 0),
           Compute(2, c.act_depth - 1, 0, 0), Compute(2, 0, 0, c.acc_depth - 1), Compute(0, 0, 0, 0),
           Store(1, 0, c.param_depth, data, out), Store(2, c.acc_depth - 1, 0, data, out)]
    if c.sparse:
        bad += [Load(Buffer.IDX, 2, c.idx_depth - 1, data, act), Compute(1, 0, 0, 0, part=c.dense_parts),
                Compute(1, 0, 0, 0, idx_addr=1), Compute(1, 0, 0, 0, sparse=True, idx_addr=c.idx_depth),
                Compute(1, 0, 0, 0, sparse=True, part=1)]
    misaligned = [Load(Buffer.ACT, 1, 0, data + 1, act), Store(1, 0, 0, data, out + bb // 2 or 1)]
    if bb == 4:
        misaligned.append(Load(Buffer.WGT, 1, 0, data + 2, act))
    outside = [Load(Buffer.ACT, 4, 0, window[1] - act, act),            # row 1 leaves the window
               Store(3, 0, 0, window[1] - 2 * out, out),                  # row 2 leaves the window
               Load(Buffer.WGT, 2, 0, window[0] - 64, act)]               # below the window
    # A row whose first word is the window's last: its second word leaves it.
    if row_words(c, "act") > 1:
        outside.append(Load(Buffer.ACT, 2, 0, window[1] - act - bb, act))
    if row_words(c, "out") > 1:
        outside.append(Store(2, 0, 0, window[1] - out - bb, out))
    cases = [("illegal", [w]) for w in illegal] + [("program", [i]) for i in bad + misaligned + outside]
    for kind, body in cases:
        await h.setup(16)
        if kind == "illegal":
            tail = h.load_program(good[:2])
            tail = h.load_raw(body, tail)
            tail = h.load_program([End()], tail)
        else:
            tail = h.load_program(good[:2] + body + [End()])
        status, _ = await h.run(tail)
        assert status["error"], f"no error for {body}"
        assert int(dut.irq.value) == 1, "irq not raised on an error"
        await h.recover()
        assert (await h.host.status())["error"] == 0, "soft reset did not clear the error"
        await h.setup(16)
        tail = h.load_program(good + [End()])
        await h.run(tail)
        await h.recover()

    # Window faults in instruction fetch: the ring runs past the window's end.
    top_slots = 4
    h.ring_base = window[1] - top_slots * INSTRUCTION_BYTES
    await h.setup(8)
    tail = h.load_program([Fence()] * top_slots)
    tail = 6
    status, _ = await h.run(tail)
    assert status["error_code"] == ErrorCode.WINDOW, status
    h.ring_base = window[0]
    await h.recover()

    # Bad ring registers are refused at START: no slots, or more than 2**ring_bits.
    for slots in (0, 1 << config.ring_bits) if config.ring_bits < 32 else (0,):
        await h.setup(slots + (slots != 0))
        status, _ = await h.run(0)
        assert status["error_code"] == ErrorCode.BAD_RING, (slots, status)
        await h.recover()

    # Bus errors (ERR) on a LOAD, a STORE and an instruction fetch: code, address, slot.
    for name, addr, slot in (("load", data + act, 0), ("store", window[0] + 8192 + out, 5),
                             ("fetch", window[0] + 3 * INSTRUCTION_BYTES, 3)):
        await h.setup(16)
        tail = h.load_program([Load(Buffer.ACT, 4, 0, data, act)] + good + [End()])
        fail_addr["value"] = addr
        status = await h.host.run(tail, timeout_cycles=20_000)
        fail_addr["value"] = None
        assert status["error"] and status["error_code"] == ErrorCode.BUS_ERROR, f"{name}: {status}"
        assert status["error_addr"] == addr, f"{name}: ERROR_ADDR {status['error_addr']:#x} != {addr:#x}"
        assert status["error_cmd"] == slot, f"{name}: ERROR_CMD {status['error_cmd']} != {slot}"
        await h.host.soft_reset()
        # The model has no bus errors: run it up to the same point from scratch.
        h.model_memory.data[:] = h.host.memory.data
        await h.setup(16)
        tail = h.load_program(good + [End()])
        await h.run(tail)
        await h.recover()
    h.check_bus()


@cocotb.test()
async def soft_reset_mid_program(dut):
    """A soft reset in the middle of a long program stops it; the next program is exact."""
    config = _config()
    rng = np.random.default_rng(_seed())
    waits, stall = _env_waits()
    a, w, bias, mult, shift = _gemm_operands(config, 48, 40, 24, rng)
    probe = plan_gemm(config, a, w, bias, mult, shift, base=0)
    ring = (len(probe.program) + 1) * INSTRUCTION_BYTES
    mem, window = _memory(probe.end + ring + 64)
    gemm = plan_gemm(config, a, w, bias, mult, shift, base=window[0] + ring)
    h = Harness(dut, config, mem, window, wait_states=waits, stall_prob=stall, seed=_seed())
    await h.start()
    for addr, data in gemm.image:
        h.write(addr, data)
    for delay in (50, 300, 1500):
        await h.setup(len(gemm.program) + 1)
        tail = h.load_program(gemm.program)
        await h.host.write("RING_TAIL", tail)
        await h.host.write("CTRL", 1)
        await cocotb.triggers.ClockCycles(dut.clk, delay)
        await h.host.soft_reset()
        status = await h.host.status()
        assert status["busy"] == 0 and status["error"] == 0 and status["ring_head"] == 0, status
        assert await h.host.read("WINDOW_LIMIT") == 0, "soft reset must clear the window"
        # Whatever the aborted program wrote, the full program now runs exactly.
        h.model_memory.data[:] = h.host.memory.data
        h.model = NPUModel(config, h.model_memory)
        await h.setup(len(gemm.program) + 1)
        await h.run(tail, timeout_cycles=400_000)
        await h.host.ack_irq()


@cocotb.test()
async def registers(dut):
    """Identification, read/write registers, W1C interrupts, classic-mode CSR cycles."""
    config = _config()
    mem, window = _memory(4096)
    h = Harness(dut, config, mem, window, classic_csr=True)
    await h.start()
    host = h.host
    assert await host.read("ID_MAGIC") == MAGIC
    assert await host.read("ID_VERSION") == VERSION
    array = await host.read("ID_ARRAY")
    assert array == config.rows | config.cols << 8 | config.data_width << 16 | config.acc_width << 24
    for name, value in (("ID_ACT_DEPTH", config.act_depth), ("ID_WGT_DEPTH", config.wgt_depth),
                        ("ID_ACC_DEPTH", config.acc_depth), ("ID_PARAM_DEPTH", config.param_depth)):
        assert await host.read(name) == value, name
    assert (await host.read("ID_BUS")) & 0xFF == config.bus_width
    for name in ("RING_BASE", "RING_SIZE", "RING_TAIL", "WINDOW_BASE", "WINDOW_LIMIT", "RING_HEAD"):
        await host.write(name, 0x1234_5670)
        assert await host.read(name) == 0x1234_5670, name
    await host.write("IRQ_ENABLE", 0b11)
    assert await host.read("IRQ_ENABLE") == 0b11
    assert await host.read("CTRL") == 0
    # A program: DONE pending, irq high, W1C clears it.
    await h.setup(4)
    tail = h.load_program([Fence(), End()])
    await h.run(tail)
    assert int(dut.irq.value) == 1
    await host.write("IRQ_PENDING", 0b10)   # the other bit: no effect
    assert await host.read("IRQ_PENDING") == 0b01
    await host.write("IRQ_ENABLE", 0)
    assert int(dut.irq.value) == 0, "irq must follow IRQ_ENABLE"
    await host.write("IRQ_PENDING", 0b01)
    assert await host.read("IRQ_PENDING") == 0
    # Continue the ring: HEAD is after the END; a second program from there.
    assert await host.read("RING_HEAD") == 2
    await host.write("IRQ_ENABLE", 0b11)
    h.load_program([Compute(3, 0, 0, 0), End()], first_slot=2)
    h.model.head = 2
    await h.run(0)      # tail 0: slots 2, 3 then wrap to 0 == tail
    assert await host.read("RING_HEAD") == 0

