"""The instruction-set golden model (NPUModel) against docs/isa.md, by hand computation."""

import numpy as np
import pytest

from npu.firmware.isa import (Compute, End, Fence, Load, Store, encode, pack_row, pack_rows,
                              unpack_rows)
from npu.firmware.quant import quantize_multiplier
from npu.generators.config import NPUConfig
from npu.hdl.isa import ErrorCode
from npu.sim.golden import ModelError, NPUModel, reference_gemm
from npu.sim.memory import MemoryImage

RING = 0x100          # ring base used by most tests
GUARD = 0xEE          # fill byte of memory, to see which bytes were written


def words(program):
    """Bytes of ``program``: instructions, or raw 128-bit integers for illegal words."""
    return b"".join((w if isinstance(w, int) else encode(w)).to_bytes(16, "little") for w in program)


def machine(config, program, *, ring_size=None, head=0, tail=None, mem_size=0x10000, fill=GUARD):
    """A model with ``program`` in its ring from slot ``head`` and the window on all memory."""
    memory = MemoryImage(0, mem_size, fill)
    ring_size = len(program) + 1 if ring_size is None else ring_size
    for i, w in enumerate(program):
        memory.write(RING + 16 * ((head + i) % ring_size), words([w]))
    model = NPUModel(config, memory)
    model.ring_base, model.ring_size, model.head = RING, ring_size, head
    model.tail = (head + len(program)) % ring_size if tail is None else tail
    model.window_base, model.window_limit = 0, mem_size
    return model, memory


def param_row(config, bias=0, mult=1, shift=0, zero_point=0, clamp_lo=None, clamp_hi=None):
    C, dw = config.cols, config.data_width
    lanes = (lambda v: list(v) if np.ndim(v) else [v] * C)
    return {"bias": lanes(bias), "mult": lanes(mult), "shift": lanes(shift), "zero_point": zero_point,
            "clamp_lo": -(1 << (dw - 1)) if clamp_lo is None else clamp_lo,
            "clamp_hi": (1 << (dw - 1)) - 1 if clamp_hi is None else clamp_hi}


# -- GEMM programs --------------------------------------------------------------------------

def ceil_div(a, b):
    return -(-a // b)


def gemm(config, a, w, bias, mult, shift, zp, lo, hi):
    """Run a tiled GEMM program on the model; return (result M x N, model, memory, sizes)."""
    c, R, C = config, config.rows, config.cols
    M, K = a.shape
    N = w.shape[1]
    KT, NT = ceil_div(K, R), ceil_div(N, C)
    bb, eb, bias_b = c.bus_bytes, c.element_bytes, c.bias_bytes
    # Row sizes in memory, from the tables of docs/isa.md.
    act_row = ceil_div(R * eb, bb) * bb
    wgt_row = ceil_div(C * eb, bb) * bb
    param_row_size = ceil_div(C * (bias_b + 5) + 3 * eb, bb) * bb
    out_row = wgt_row
    ap = np.zeros((M, KT * R), dtype=np.int64)
    ap[:, :K] = a
    wp = np.zeros((KT * R, NT * C), dtype=np.int64)
    wp[:K, :N] = w
    pad = lambda v, fill: np.concatenate([np.broadcast_to(np.asarray(v, dtype=object), N),
                                          [fill] * (NT * C - N)])
    bias_p, mult_p, shift_p = pad(bias, 0), pad(mult, 0), pad(shift, 0)

    param_base = 0x1000
    act_base = param_base + NT * param_row_size
    wgt_base = act_base + KT * M * act_row
    out_base = wgt_base + KT * NT * R * wgt_row + 64
    out_stride = NT * out_row + bb          # a guard word between output rows
    ring = ceil_div(out_base + M * out_stride + 64, 16) * 16
    n_insns = 1 + KT + NT * (2 * KT + 1) + 1
    memory = MemoryImage(0, ring + 16 * (n_insns + 1), GUARD)
    memory.write(param_base, pack_rows(c, "param", [
        param_row(c, bias_p[u * C:(u + 1) * C], mult_p[u * C:(u + 1) * C], shift_p[u * C:(u + 1) * C],
                  zp, lo, hi) for u in range(NT)]))
    for t in range(KT):
        memory.write(act_base + t * M * act_row, pack_rows(c, "act", ap[:, t * R:(t + 1) * R]))
        for u in range(NT):
            memory.write(wgt_base + (t * NT + u) * R * wgt_row,
                         pack_rows(c, "wgt", wp[t * R:(t + 1) * R, u * C:(u + 1) * C]))

    program = [Load(2, NT, 0, param_base, param_row_size)]
    program += [Load(0, M, t * M, act_base + t * M * act_row, act_row) for t in range(KT)]
    for u in range(NT):
        for t in range(KT):
            half = (t % 2) * R
            program += [Load(1, R, half, wgt_base + (t * NT + u) * R * wgt_row, wgt_row),
                        Compute(M, t * M, half, 0, accumulate=t > 0)]
        program.append(Store(M, 0, u, out_base + u * out_row, out_stride))
    program.append(End())
    assert len(program) == n_insns

    memory.write(ring, words(program))
    model = NPUModel(config, memory)
    model.ring_base, model.ring_size, model.head, model.tail = ring, len(program) + 1, 0, len(program)
    model.window_base, model.window_limit = 0, memory.size
    assert model.run() == "done"
    assert model.head == len(program)
    span = out_stride * (M - 1) + out_row
    tiles = [unpack_rows(c, "out", memory.read(out_base + u * out_row, span), M, stride=out_stride)
             for u in range(NT)]
    result = np.concatenate(tiles, axis=1)[:, :N]
    sizes = dict(KT=KT, NT=NT, act_row=act_row, wgt_row=wgt_row, param_row=param_row_size,
                 out_base=out_base, out_stride=out_stride, instructions=len(program))
    return result, model, memory, sizes


GEMM_CASES = [
    # config, (M, K, N)
    (NPUConfig(), (37, 20, 13)),
    (NPUConfig(rows=3, cols=5, data_width=6, acc_width=16, act_depth=160, wgt_depth=6, acc_depth=16,
               param_depth=2), (10, 40, 9)),
    (NPUConfig(rows=4, cols=3, data_width=12, acc_width=40, act_depth=64, wgt_depth=8, acc_depth=16,
               param_depth=4, bus_width=64), (9, 11, 10)),
    (NPUConfig(rows=2, cols=3, data_width=16, acc_width=64, act_depth=64, wgt_depth=4, acc_depth=16,
               param_depth=4, bus_width=128), (7, 5, 8)),
    (NPUConfig(rows=5, cols=7, data_width=7, acc_width=24, act_depth=64, wgt_depth=10, acc_depth=16,
               param_depth=4, bus_width=64), (6, 12, 15)),
]


@pytest.mark.parametrize("config, shape", GEMM_CASES,
                         ids=lambda v: f"{v.rows}x{v.cols}_d{v.data_width}_a{v.acc_width}_b{v.bus_width}"
                         if isinstance(v, NPUConfig) else "x".join(map(str, v)))
def test_gemm_program_equals_reference(config, shape):
    M, K, N = shape
    dw, aw = config.data_width, config.acc_width
    rng = np.random.default_rng(M * K * N)
    lo_v, hi_v = -(1 << (dw - 1)), (1 << (dw - 1)) - 1
    a = rng.integers(lo_v, hi_v + 1, (M, K))
    w = rng.integers(lo_v, hi_v + 1, (K, N))
    a[0], w[:, 0] = lo_v, lo_v                  # extreme products in row 0 / column 0
    # Large biases on even columns (the whole range when acc_width is 64: the bias add wraps),
    # small ones on odd columns.
    lim = (1 << (aw - 1)) if aw == 64 else 1 << (aw - 2)
    bias = np.array([int(x) for x in rng.integers(-lim, lim - 1, N, endpoint=True)], dtype=object)
    bias[1::2] = [int(x) for x in rng.integers(-1000, 1000, len(bias[1::2]))]
    typical = np.sqrt(K) * (1 << (2 * dw - 2))
    scales = rng.uniform(0.3, 3, N) * (1 << (dw - 1)) / typical
    mult, shift = zip(*(quantize_multiplier(s) for s in scales))
    zp, lo, hi = 2, lo_v + 3, hi_v - 1
    result, model, memory, sizes = gemm(config, a, w, bias, mult, shift, zp, lo, hi)

    expected = reference_gemm(a, w, bias, mult, shift, zp, lo, hi, acc_width=aw)
    assert (result == expected).all()
    assert len(np.unique(result)) > 5                 # not everything clamped
    if aw == 16:                                      # the accumulators really wrapped
        assert abs(int(a[0] @ w[:, 0])) >= 1 << 15
    # Guard bytes: padding of output rows and the gap word between rows stay untouched.
    eb, C = config.element_bytes, config.cols
    for m in range(M):
        row = memory.read(sizes["out_base"] + m * sizes["out_stride"], sizes["out_stride"])
        for u in range(sizes["NT"]):
            tile = row[u * sizes["wgt_row"]:(u + 1) * sizes["wgt_row"]]
            assert set(tile[C * eb:]) <= {GUARD}
        assert set(row[sizes["NT"] * sizes["wgt_row"]:]) == {GUARD}
    # Counters, from the instruction list.
    KT, NT, R = sizes["KT"], sizes["NT"], config.rows
    assert model.counters["instructions"] == sizes["instructions"] == 1 + KT + NT * (2 * KT + 1) + 1
    assert model.counters["macs"] == NT * KT * M * R * C
    assert model.counters["bytes_read"] == (16 * sizes["instructions"] + NT * sizes["param_row"]
                                            + KT * M * sizes["act_row"] + NT * KT * R * sizes["wgt_row"])
    assert model.counters["bytes_written"] == NT * M * C * eb
    assert model.error_code == ErrorCode.NONE


def test_long_program_is_fast_and_exact():
    # 2000+ instructions, then a few hundred activation rows per COMPUTE.
    config = NPUConfig(act_depth=4096, acc_depth=512, param_depth=64)
    rng = np.random.default_rng(5)
    for M, K, N in [(3, 256, 256), (300, 64, 64)]:
        a, w = rng.integers(-128, 128, (M, K)), rng.integers(-128, 128, (K, N))
        bias = rng.integers(-10000, 10000, N)
        result, model, _, sizes = gemm(config, a, w, bias, 1 << 30, 43, -1, -128, 127)
        assert (result == reference_gemm(a, w, bias, 1 << 30, 43, -1, -128, 127, acc_width=32)).all()
    assert sizes["instructions"] > 100


# -- single instructions, computed by hand -------------------------------------------------

SMALL = NPUConfig(rows=2, cols=3, act_depth=8, wgt_depth=4, acc_depth=8, param_depth=2)


def test_load_takes_low_bits_sign_extended():
    c = NPUConfig(rows=4, cols=2, data_width=6, acc_width=40, act_depth=4, wgt_depth=8, acc_depth=4,
                  param_depth=1)
    model, memory = machine(c, [Load(0, 1, 2, 0x400, 0), Load(2, 1, 0, 0x500, 0), End()])
    memory.write(0x400, bytes([0xFF, 0x20, 0x1F, 0xC1]))
    # param row (bias 8 bytes, 2 columns): bias, bias, mult, mult, shift, shift, zp, lo, hi
    memory.write(0x500, (0xFFFFFF8000000000).to_bytes(8, "little") + (5).to_bytes(8, "little")
                 + (0xFFFFFFFF).to_bytes(4, "little") + (0x80000003).to_bytes(4, "little")
                 + bytes([0xFF, 0x41, 0x3F, 0x60, 0x9F]))
    assert model.run() == "done"
    assert model.act[2].tolist() == [-1, -32, 31, 1]
    assert model.act[[0, 1, 3]].tolist() == [[0] * 4] * 3
    assert model.bias[0].tolist() == [-(1 << 39), 5]
    assert model.mult[0].tolist() == [(1 << 31) - 1, 3]
    assert model.shift[0].tolist() == [63, 1]
    assert (model.zero_point[0], model.clamp_lo[0], model.clamp_hi[0]) == (-1, -32, 31)


def test_load_two_byte_elements_and_strides():
    c = NPUConfig(rows=2, cols=3, data_width=12, acc_width=32, act_depth=8, wgt_depth=4, acc_depth=4,
                  param_depth=1)
    # act row = 4 bytes = 1 word; stride 0 repeats it; "negative" stride walks down.
    model, memory = machine(c, [Load(0, 3, 0, 0x480, 0), Load(0, 3, 3, 0x420, (1 << 32) - 16),
                                Load(1, 2, 0, 0x600, 12), End()])
    memory.write(0x480, bytes([0x00, 0xF8, 0xFF, 0x07]))                       # -2048, 2047
    for i, (x, y) in enumerate([(1, 2), (3, 4), (5, 6)]):
        memory.write(0x420 - 16 * i, x.to_bytes(2, "little") + (0xF000 | y).to_bytes(2, "little"))
    memory.write(0x600, bytes([0xFF, 0xFF, 0x01, 0x10, 0x00, 0x08, 0, 0]))     # -1, 1, -2048
    memory.write(0x60C, bytes([0x34, 0x12, 0, 0, 0xFF, 0x0F]))                  # 0x234, 0, -1
    assert model.run() == "done"
    assert model.act[:6].tolist() == [[-2048, 2047]] * 3 + [[1, 2], [3, 4], [5, 6]]
    assert model.wgt[:2].tolist() == [[-1, 1, -2048], [0x234, 0, -1]]


@pytest.mark.parametrize("data_width, acc_width", [(8, 32), (12, 40), (16, 64), (6, 16)])
def test_compute_accumulates_and_wraps(data_width, acc_width):
    c = NPUConfig(rows=2, cols=2, data_width=data_width, acc_width=acc_width, act_depth=4, wgt_depth=4,
                  acc_depth=4, param_depth=1)
    top = (1 << (acc_width - 1)) - 1
    model, _ = machine(c, [Compute(2, 1, 2, 1, accumulate=True), Compute(1, 0, 0, 3), End()])
    model.act[1:3] = [[1, 2], [-3, 1]]
    model.wgt[2:4] = [[5, -1], [7, 1]]
    model.act[0] = [1, 1]
    model.wgt[0:2] = [[1, 1], [1, 1]]
    model.acc[1] = [top, -top - 1]
    model.acc[2] = [100, 200]
    model.acc[3] = [55, 66]
    assert model.run() == "done"
    # row 1: (1*5 + 2*7, 1*-1 + 2*1) = (19, 1) added to (top, -top-1): the first wraps.
    assert model.acc[1].tolist() == [-top - 1 + 18, -top]
    assert model.acc[2].tolist() == [100 + (-15 + 7), 200 + (3 + 1)]
    assert model.acc[3].tolist() == [2, 2]                                # overwritten
    assert model.acc[0].tolist() == [0, 0]
    assert model.counters["macs"] == 3 * 2 * 2


@pytest.mark.parametrize("data_width, acc_width", [(8, 32), (12, 40), (16, 64)])
def test_store_requantises_and_writes_data_bytes_only(data_width, acc_width):
    c = NPUConfig(rows=2, cols=4, data_width=data_width, acc_width=acc_width, act_depth=4,
                  wgt_depth=4, acc_depth=4, param_depth=2, bus_width=64)
    eb = c.element_bytes
    model, memory = machine(c, [Store(2, 1, 1, 0x400, 0x18), End()])
    model.acc[1] = [5, 7, -5, 1000]
    model.acc[2] = [-7, 6, 3, -(1 << (acc_width - 1))]
    model.bias[1] = [0, 0, 0, 10]
    model.mult[1] = [1, 1, 1, 3]
    model.shift[1] = [1, 1, 1, 0]
    model.zero_point[1], model.clamp_lo[1], model.clamp_hi[1] = 1, -4, 100
    assert model.run() == "done"
    # col 0..2: x/2 rounded half to even, + 1; col 3: (x + 10) * 3 + 1 clamped to -4..100
    rows = [[3, 5, -1, 100], [-3, 4, 3, -4]]
    for m, row in enumerate(rows):
        data = b"".join(v.to_bytes(eb, "little", signed=True) for v in row)
        assert memory.read(0x400 + 0x18 * m, 0x18) == data + bytes([GUARD]) * (0x18 - len(data))
    assert memory.read(0x3F0, 16) == bytes([GUARD]) * 16
    assert model.counters["bytes_written"] == 2 * 4 * eb
    assert model.acc[1].tolist() == [5, 7, -5, 1000]                      # not changed


def test_store_bias_add_wraps_at_acc_width():
    c = NPUConfig(rows=2, cols=2, acc_width=20, act_depth=4, wgt_depth=4, acc_depth=4, param_depth=1)
    model, memory = machine(c, [Store(1, 0, 0, 0x400, 0), End()])
    model.acc[0] = [(1 << 19) - 1, -(1 << 19)]
    model.bias[0] = [1, -1]
    model.mult[0], model.shift[0] = [1, 1], [12, 12]
    model.clamp_lo[0], model.clamp_hi[0] = -128, 127
    assert model.run() == "done"
    assert memory.read(0x400, 2) == bytes([(-128) & 0xFF, 127])          # -2**19/4096, 2**19-1 / 4096


# -- program flow: ring, END, waiting -------------------------------------------------------

def test_ring_wraps_around():
    # slots 2, 3, 0 hold LOAD, COMPUTE, END; slot 1 a STORE that must not run.
    model, memory = machine(SMALL, [Load(0, 1, 0, 0x400, 0), Compute(1, 0, 0, 0), End(),
                                    Store(1, 0, 0, 0x500, 0)], ring_size=4, head=2, tail=1)
    memory.write(0x400, bytes([3, 0xFE]))
    model.wgt[0:2] = [[1, 2, 3], [4, 5, 6]]
    assert memory.read(RING + 16, 16) == words([Store(1, 0, 0, 0x500, 0)])
    assert model.run() == "done"
    assert model.head == 1
    assert model.acc[0].tolist() == [3 - 8, 6 - 10, 9 - 12]
    assert memory.read(0x500, 4) == bytes([GUARD]) * 4
    assert model.counters["instructions"] == 3


def test_waiting_then_continue():
    model, memory = machine(SMALL, [Load(0, 1, 0, 0x400, 0), Fence()], ring_size=4, head=3)
    memory.write(0x400, bytes([1, 2]))
    assert model.tail == 1
    assert model.run() == "waiting"
    assert model.head == 1 and model.act[0].tolist() == [1, 2]
    assert model.counters["instructions"] == 2 and model.counters["bytes_read"] == 2 * 16 + 4
    assert model.run() == "waiting"                      # nothing to do: nothing fetched
    assert model.counters["instructions"] == 2
    memory.write(RING + 16 * 1, words([End()]))
    model.tail = 2
    assert model.run() == "done"
    assert model.head == 2
    assert model.counters["instructions"] == 3 and model.counters["bytes_read"] == 3 * 16 + 4


def test_end_stops_before_later_slots():
    model, memory = machine(SMALL, [Fence(), End(), Load(0, 1, 0, 0x400, 0)], ring_size=8)
    memory.write(0x400, bytes([7, 7]))
    assert model.run() == "done"
    assert model.head == 2 and model.act[0].tolist() == [0, 0]
    assert model.counters["instructions"] == 2
    assert model.run() == "waiting"                      # the next START continues after END
    assert model.head == 3 and model.act[0].tolist() == [7, 7]


# -- errors ---------------------------------------------------------------------------------

def fault(model):
    """What the host reads after an error: code, address, slot, and RING_HEAD."""
    return model.error_code, model.error_addr, model.error_cmd, model.head


def run_error(config, program, code, addr, slot, **kw):
    model, memory = machine(config, program, **kw)
    before = bytes(memory.data)
    assert model.run() == "error"
    assert fault(model) == (code, addr, slot, slot)
    return model, memory, before


@pytest.mark.parametrize("ring_base, ring_size, head, tail", [
    (RING, 0, 0, 0), (RING + 8, 4, 1, 2), (RING, 4, 4, 1), (RING, 4, 1, 4), (RING, 4, 6, 7)])
def test_bad_ring(ring_base, ring_size, head, tail):
    model, memory = machine(SMALL, [Fence(), End()])
    model.ring_base, model.ring_size, model.head, model.tail = ring_base, ring_size, head, tail
    assert model.run() == "error"
    assert fault(model) == (ErrorCode.BAD_RING, 0, head, head)
    assert model.counters == {"macs": 0, "bytes_read": 0, "bytes_written": 0, "instructions": 0}


ILLEGAL = [
    0,                                                      # opcode 0: zeroed memory
    6, 15, 0xF | 1 << 64,                                   # unknown opcodes
    encode(Fence()) | 1 << 127,
    encode(End()) | 1 << 4,
    encode(Compute(1, 0, 0, 0)) | 1 << 5,
    encode(Compute(1, 0, 0, 0)) | 1 << 80,
    encode(Compute(0, 0, 0, 0)) | 1 << 15,                  # ILLEGAL before BAD_OPERAND
    encode(Load(0, 1, 0, 0x400, 0)) | 1 << 6,
    encode(Load(0, 1, 0, 0x400, 0)) | 1 << 48,
    encode(Load(3, 1, 0, 0x400, 0)),                        # buffer 3
    encode(Store(1, 0, 0, 0x400, 0)) | 1 << 4,
    encode(Store(1, 0, 0, 0x401, 0)) | 1 << 12,             # ILLEGAL before MISALIGNED
]

BAD_OPERAND = [
    Load(0, 0, 0, 0x400, 0), Load(0, 8, 1, 0x400, 4), Load(1, 1, 4, 0x400, 4), Load(2, 1, 2, 0x400, 4),
    Compute(0, 0, 0, 0), Compute(2, 7, 0, 0), Compute(1, 0, 3, 0), Compute(2, 0, 0, 7),
    Store(0, 0, 0, 0x400, 4), Store(3, 6, 0, 0x400, 4), Store(1, 0, 2, 0x400, 4),
    Load(0, 0, 0, 0x402, 0), Store(1, 8, 0, 0x401, 3),      # BAD_OPERAND before MISALIGNED
]

MISALIGNED = [
    (Load(0, 1, 0, 0x402, 0), 0x402), (Load(1, 2, 0, 0x400, 6), 0x400), (Load(2, 1, 0, 0x401, 5), 0x401),
    (Store(1, 0, 0, 0x403, 4), 0x403), (Store(2, 0, 0, 0x404, 2), 0x404),
]


def assert_did_nothing(model, memory, before):
    assert bytes(memory.data) == before
    for name in ("act", "wgt", "acc", "bias", "mult", "shift", "zero_point", "clamp_lo", "clamp_hi"):
        assert not getattr(model, name).any(), name
    # Only the FENCE before the faulting slot was dispatched.
    assert model.counters == {"macs": 0, "bytes_read": 16, "bytes_written": 0, "instructions": 1}


@pytest.mark.parametrize("word", ILLEGAL, ids=hex)
def test_illegal_instruction(word):
    model, memory, before = run_error(SMALL, [Fence(), word, End()], ErrorCode.ILLEGAL_INSTRUCTION, 0, 1)
    assert_did_nothing(model, memory, before)


@pytest.mark.parametrize("insn", BAD_OPERAND, ids=repr)
def test_bad_operand(insn):
    model, memory, before = run_error(SMALL, [Fence(), insn, End()], ErrorCode.BAD_OPERAND, 0, 1)
    assert_did_nothing(model, memory, before)


@pytest.mark.parametrize("insn, addr", MISALIGNED, ids=repr)
def test_misaligned(insn, addr):
    model, memory, before = run_error(SMALL, [Fence(), insn, End()], ErrorCode.MISALIGNED, addr, 1)
    assert_did_nothing(model, memory, before)


def test_misaligned_for_wider_bus_only():
    c64 = SMALL.replace(bus_width=64)
    run_error(c64, [Fence(), Load(0, 1, 0, 0x404, 0), End()], ErrorCode.MISALIGNED, 0x404, 1)
    run_error(c64, [Fence(), Store(2, 0, 0, 0x408, 4), End()], ErrorCode.MISALIGNED, 0x408, 1)
    model, _ = machine(SMALL, [Load(0, 1, 0, 0x404, 4), End()])             # 32-bit bus: aligned
    assert model.run() == "done"


def test_ranges_that_just_fit_are_legal():
    model, _ = machine(SMALL, [Load(0, 8, 0, 0x400, 4), Load(1, 4, 0, 0x400, 4), Load(2, 2, 0, 0x400, 32),
                               Compute(8, 0, 2, 0), Store(8, 0, 1, 0x800, 4), End()])
    assert model.run() == "done"


@pytest.mark.parametrize("bus_width, window, addr", [
    (32, (RING, RING + 16 * 2 + 8), RING + 16 * 2 + 8),      # slot 2, third word
    (32, (RING, RING + 16 * 2 + 6), RING + 16 * 2 + 4),      # a word only partly inside is outside
    (64, (RING, RING + 16 * 2 + 8), RING + 16 * 2 + 8),
    (128, (RING, RING + 16 * 2 + 8), RING + 16 * 2),
])
def test_window_on_fetch(bus_width, window, addr):
    c = SMALL.replace(bus_width=bus_width)
    model, memory = machine(c, [Fence(), Fence(), Fence(), End()])
    model.window_base, model.window_limit = window
    assert model.run() == "error"
    assert fault(model) == (ErrorCode.WINDOW, addr, 2, 2)
    assert model.counters["instructions"] == 2 and model.counters["bytes_read"] == 32


def test_window_below_base_on_fetch():
    model, _ = machine(SMALL, [Fence(), End()])
    model.window_base = RING + 4
    assert model.run() == "error"
    assert fault(model) == (ErrorCode.WINDOW, RING, 0, 0)
    assert model.counters["instructions"] == 0


def test_window_during_load_writes_only_whole_rows():
    # SMALL param row: 3*4 bias + 3*4 mult + 3 shift + 3 bytes = 30 bytes = 8 words of 4.
    rows = {0x300: param_row(SMALL, [1, 2, 3], [4, 5, 6], [7, 8, 9], 1, -2, 3),
            0x320: param_row(SMALL, [-1, -2, -3], [10, 11, 12], [13, 14, 15], -1, -3, 4),
            0x400: param_row(SMALL, [100, 200, 300], 77, 5, 9, -9, 99),
            0x420: param_row(SMALL, 555, 66, 6, 0, 0, 0)}
    model, memory = machine(SMALL, [Load(2, 2, 0, 0x300, 32), Load(2, 2, 0, 0x400, 32), End()])
    for addr, row in rows.items():
        memory.write(addr, pack_row(SMALL, "param", row))
    model.window_limit = 0x430
    assert model.run() == "error"
    assert fault(model) == (ErrorCode.WINDOW, 0x430, 1, 1)
    assert model.bias.tolist() == [[100, 200, 300], [-1, -2, -3]]
    assert model.mult.tolist() == [[77] * 3, [10, 11, 12]]
    assert model.shift.tolist() == [[5] * 3, [13, 14, 15]]
    assert (model.zero_point.tolist(), model.clamp_lo.tolist(), model.clamp_hi.tolist()) == \
        ([9, -1], [-9, -3], [99, 4])
    # fetch of slot 0 + two whole rows + slot 1's row 0 and 4 words of row 1
    assert model.counters["bytes_read"] == 16 + 64 + 32 + 16
    assert model.counters["instructions"] == 1
    assert model.run() == "error"                               # sticky until soft reset
    assert model.counters["instructions"] == 1


def test_window_during_store_writes_earlier_words_only():
    c = NPUConfig(rows=2, cols=5, act_depth=4, wgt_depth=4, acc_depth=4, param_depth=1)  # out: 2 words
    model, memory = machine(c, [Store(3, 0, 0, 0x400, 16), End()])
    model.acc[:3] = [[1, 2, 3, 4, 5], [-1, -2, -3, -4, -5], [10, 20, 30, 40, 50]]
    model.mult[0], model.clamp_lo[0], model.clamp_hi[0] = 1, -128, 127
    model.window_limit = 0x414                                     # refuses row 1, word 1
    assert model.run() == "error"
    assert fault(model) == (ErrorCode.WINDOW, 0x414, 0, 0)
    g = [GUARD]
    assert memory.read(0x3F0, 0x40) == bytes(g * 16 + [1, 2, 3, 4, 5] + g * 11
                                             + [0xFF, 0xFE, 0xFD, 0xFC] + g * 12 + g * 16)
    assert model.counters["bytes_written"] == 9
    assert model.counters["instructions"] == 0


def test_window_during_store_at_first_word():
    model, memory = machine(SMALL, [Fence(), Store(2, 0, 0, 0x400, 4), End()])
    model.window_limit = 0x400
    assert model.run() == "error"
    assert fault(model) == (ErrorCode.WINDOW, 0x400, 1, 1)
    assert memory.read(0x400, 8) == bytes([GUARD]) * 8 and model.counters["bytes_written"] == 0


def test_soft_reset_clears_error():
    model, _ = machine(SMALL, [0, End()])
    assert model.run() == "error" and model.error_code == ErrorCode.ILLEGAL_INSTRUCTION
    model.soft_reset()
    assert (model.error_code, model.head, model.window_limit, model.counters["instructions"]) == \
        (ErrorCode.NONE, 0, 0, 0)


def test_unbacked_memory_inside_window_is_a_test_bug():
    model, _ = machine(SMALL, [Load(0, 1, 0, 0x10000, 0), End()])
    model.window_limit = 0x20000
    with pytest.raises(ModelError, match="outside the memory image"):
        model.run()
