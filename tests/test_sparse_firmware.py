"""N:M sparsity in the firmware: pruning, the compressed format and sparse GEMM programs,
run on the instruction-set golden model (NPUModel) against the dense GEMM and the
untiled reference, bit for bit."""

import time

import numpy as np
import pytest

from npu.firmware.gemm import GemmPlan, choose_tiles
from npu.firmware.isa import Buffer, Compute, End, Load
from npu.firmware.quant import quantize_multiplier
from npu.firmware.sparse import SparsityError, check_pattern, compress, decompress, fits_pattern, prune
from npu.generators.config import NPUConfig
from npu.sim.golden import reference_gemm
from test_golden_npu import RING, machine

DENSE = NPUConfig()
SPARSE = {
    "2:4": NPUConfig(sparsity="2:4"),
    "1:4": NPUConfig(sparsity="1:4"),
    "2:8": NPUConfig(sparsity="2:8"),
    "2:4_4x4_b64": NPUConfig(rows=4, cols=4, bus_width=64, sparsity="2:4"),
    # dense_parts = 1 with two activation lanes a dense tile does not use
    "3:4_6x4": NPUConfig(rows=6, cols=4, sparsity="3:4"),
    # small buffers: choose_tiles must split M, N and K into several blocks
    "2:4_small": NPUConfig(sparsity="2:4", act_depth=64, wgt_depth=32, acc_depth=32, param_depth=4),
}


# -- helpers ------------------------------------------------------------------------------

def nm_weights(rng, K, N, n, m, data_width=8):
    """Random K x N weights obeying n:m, with every kind of group: full, all zero, one
    non-zero, non-zeros at the first and last position, extreme values."""
    lo, hi = -(1 << (data_width - 1)), (1 << (data_width - 1)) - 1
    w = rng.integers(lo, hi + 1, (K, N))
    w[w == 0] = 1
    w = prune(w, n, m)
    for g in range(-(-K // m)):
        first, last = g * m, min(g * m + m, K) - 1
        for col in range(N):
            kind = rng.integers(5)
            if kind == 0:                                   # all zero
                w[first:last + 1, col] = 0
            elif kind == 1:                                 # at the group's edges
                w[first:last + 1, col] = 0
                edges = [first, last][:n] if n > 1 else [(first, last)[col % 2]]
                w[edges, col] = lo
            elif kind == 2 and n > 1:                       # fewer than n non-zeros
                w[first:last + 1, col] = 0
                w[rng.integers(first, last + 1), col] = hi
    assert fits_pattern(w, n, m)
    return w


def quant_params(rng, K, N, data_width=8):
    """Per-column bias, multiplier, shift and the output zero point and clamp."""
    typical = np.sqrt(K) * (1 << (2 * data_width - 3))
    mult, shift = zip(*(quantize_multiplier(s) for s in rng.uniform(0.5, 2, N) * (1 << (data_width - 1)) / typical))
    bias = rng.integers(-5000, 5000, N)
    return bias, mult, shift, -3, -120, 117


def run_gemms(config, jobs):
    """Run GEMMs ``(a, w, params, sparse, tiles)`` one after another in one program (END
    at the end) on the golden model; return each result (M x N)."""
    def plans(base):
        out = []
        for a, w, _, sparse, tiles in jobs:
            out.append(GemmPlan(config, a.shape[0], a.shape[1], w.shape[1], base=base, tiles=tiles, sparse=sparse))
            base = out[-1].end
        return out
    slots = sum(len(p.program) for p in plans(0)) + 1
    placed = plans(RING + 16 * (slots + 1))
    program = [insn for p in placed for insn in p.program] + [End()]
    model, memory = machine(config, program, mem_size=-(-placed[-1].end // 16) * 16)
    for plan, (a, w, params, _, _) in zip(placed, jobs):
        for addr, data in plan.act_image(a) + plan.weight_image(w, *params):
            memory.write(addr, data)
    assert model.run() == "done"
    assert model.counters["macs"] == sum(p.array_macs for p in placed)
    return [p.read_result(memory.read) for p in placed], placed


def run_gemm(config, a, w, params, *, sparse=False, tiles=None):
    (result,), (plan,) = run_gemms(config, [(a, w, params, sparse, tiles)])
    return result, plan


# -- GEMM programs ------------------------------------------------------------------------

@pytest.mark.parametrize("tiles", [None, (16, 2, 2)], ids=["auto", "blocks"])
@pytest.mark.parametrize("shape", [(37, 75, 19), (5, 203, 9)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", SPARSE)
def test_sparse_gemm_equals_dense_and_reference(name, shape, tiles):
    config = SPARSE[name]
    if tiles and name == "2:4_small":
        tiles = (8, 1, 1)
    M, K, N = shape
    n, m = config.sparse_nm
    rng = np.random.default_rng([M, K, N, n, m, config.rows])
    a = rng.integers(-128, 128, (M, K))
    a[0] = -128
    w = nm_weights(rng, K, N, n, m)
    params = quant_params(rng, K, N)
    expected = reference_gemm(a, w, *params, acc_width=32)
    assert len(np.unique(expected)) > 5                         # not everything clamped

    sparse, plan = run_gemm(config, a, w, params, sparse=True, tiles=tiles)
    dense_here, dense_plan = run_gemm(config, a, w, params, tiles=tiles)
    dense_default, _ = run_gemm(DENSE, a, w, params)
    assert np.array_equal(sparse, expected)
    assert np.array_equal(dense_here, expected)
    assert np.array_equal(dense_default, expected)

    # One sparse tile per (K-tile of act_lanes positions, N-tile), each with its index entry.
    R, C = config.rows, config.cols
    k_tiles, n_tiles = -(-K // config.act_lanes), -(-N // C)
    computes = [i for i in plan.program if isinstance(i, Compute)]
    assert all(i.sparse and i.part == 0 for i in computes)
    assert sum(i.count for i in computes) == M * k_tiles * n_tiles
    assert plan.array_macs == M * k_tiles * n_tiles * R * C and plan.macs == M * K * N
    idx_loads = [i for i in plan.program if isinstance(i, Load) and i.buffer == Buffer.IDX]
    assert sum(i.rows for i in idx_loads) == -(-M // plan.mt) * k_tiles * n_tiles
    assert {i.idx_addr for i in computes} <= set(range(config.idx_depth))
    # The dense plan on the sparse NPU: dense_parts tiles per activation entry.
    parts = {i.part for i in dense_plan.program if isinstance(i, Compute)}
    assert parts == set(range(config.dense_parts))
    assert not any(i.sparse for i in dense_plan.program if isinstance(i, Compute))
    assert dense_plan.k_tiles == -(-K // (config.dense_parts * R))


def test_choose_tiles_fits_weight_and_index_halves():
    for config in SPARSE.values():
        for sparse in (False, True):
            for M, K, N in [(37, 75, 19), (300, 1000, 100), (1, 8, 1)]:
                mt, nt, kb = choose_tiles(config, M, K, N, sparse=sparse)
                w_rows = config.rows if sparse else config.dense_parts * config.rows
                assert nt * kb * w_rows <= config.wgt_depth // 2
                assert not sparse or nt * kb <= config.idx_depth // 2
                assert kb * mt <= config.act_depth // 2 and nt * mt <= config.acc_depth


def test_dense_and_sparse_gemms_in_one_program():
    config = SPARSE["2:4"]
    rng = np.random.default_rng(7)
    jobs, expected = [], []
    for (M, K, N), sparse in [((9, 40, 11), False), ((12, 50, 17), True), ((6, 21, 8), False)]:
        a = rng.integers(-128, 128, (M, K))
        w = nm_weights(rng, K, N, 2, 4) if sparse else rng.integers(-128, 128, (K, N))
        params = quant_params(rng, K, N)
        jobs.append((a, w, params, sparse, None))
        expected.append(reference_gemm(a, w, *params, acc_width=32))
    results, plans = run_gemms(config, jobs)
    assert [p.sparse for p in plans] == [False, True, False]
    for got, want in zip(results, expected):
        assert np.array_equal(got, want)


def test_sparse_plan_needs_a_sparse_configuration():
    with pytest.raises(ValueError, match=r"sparse = True needs an N:M configuration; this one has "
                                         r"sparsity = 'dense'"):
        GemmPlan(DENSE, 4, 16, 8, base=0, sparse=True)
    with pytest.raises(ValueError, match="sparse = True needs"):
        choose_tiles(DENSE, 4, 16, 8, sparse=True)


def test_sparse_plan_refuses_weights_off_pattern():
    plan = GemmPlan(SPARSE["2:4"], 4, 16, 8, base=0, sparse=True)
    w = np.zeros((16, 8), dtype=np.int64)
    w[4:7, 2] = 1
    with pytest.raises(SparsityError, match=r"^weights break the 2:4 pattern: column 2, K group 1 \(k = 4\.\.7\) "
                                            r"has 3 non-zeros; at most 2 allowed"):
        plan.weight_image(w, 0, 1, 0)


# -- pruning and checking ------------------------------------------------------------------

def prune_by_hand(w, n, m):
    out = np.zeros_like(w)
    for col in range(w.shape[1]):
        for first in range(0, w.shape[0], m):
            group = range(first, min(first + m, w.shape[0]))
            keep = sorted(group, key=lambda k: (-abs(int(w[k, col]) if w.dtype.kind in "iu" else w[k, col]), k))[:n]
            out[keep, col] = w[keep, col]
    return out


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.float64])
@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (2, 8), (3, 4), (1, 2)])
def test_prune_keeps_the_largest(dtype, n, m):
    rng = np.random.default_rng([n, m])
    K = 4 * m + m // 2 + 1                                  # a short last group
    if dtype == np.float64:
        w = rng.normal(size=(K, 7))
    else:
        w = rng.integers(-128, 128, (K, 7)).astype(dtype)
        w[rng.random(w.shape) < 0.3] = 5                    # ties
    pruned = prune(w, n, m)
    assert pruned.dtype == w.dtype and pruned.shape == w.shape
    assert np.array_equal(pruned, prune_by_hand(w, n, m))
    assert fits_pattern(pruned, n, m) and not fits_pattern(w, n, m)
    check_pattern(pruned, n, m)
    assert np.count_nonzero(pruned) == np.count_nonzero(prune_by_hand(w, n, m))


def test_prune_ties_and_extremes():
    assert prune(np.ones((6, 2), dtype=np.int64), 2, 4)[:, 0].tolist() == [1, 1, 0, 0, 1, 1]
    w = np.array([[127], [-128], [5], [-128]], dtype=np.int8)
    assert prune(w, 1, 4)[:, 0].tolist() == [0, -128, 0, 0]
    assert prune(w, 2, 4)[:, 0].tolist() == [0, -128, 0, -128]
    assert np.array_equal(prune(w, 4, 4), w)


def test_check_pattern_names_the_first_bad_group():
    w = np.zeros((16, 8), dtype=np.int64)
    w[0:4, 7] = 1                       # a later column
    w[12:15, 5] = [1, -1, 2]            # the first bad group
    w[4:6, 5] = 3                       # at most 2: fine
    with pytest.raises(SparsityError) as e:
        check_pattern(w, 2, 4)
    assert str(e.value) == ("weights break the 2:4 pattern: column 5, K group 3 (k = 12..15) has 3 non-zeros; "
                            "at most 2 allowed (prune them with npu.firmware.sparse.prune)")
    assert isinstance(e.value, ValueError)
    assert not fits_pattern(w, 2, 4) and not fits_pattern(w, 3, 4) and fits_pattern(w, 4, 4)
    short = np.zeros((14, 2))
    short[12:14, 0] = 0.5
    with pytest.raises(SparsityError) as e:
        check_pattern(short, 1, 4)
    assert str(e.value) == ("weights break the 1:4 pattern: column 0, K group 3 (k = 12..13) has 2 non-zeros; "
                            "at most 1 allowed (prune them with npu.firmware.sparse.prune)")


@pytest.mark.parametrize("n, m, match", [(0, 4, "n = 0 is invalid"), (5, 4, "n = 5 is invalid for m = 4"),
                                         (2, 1.5, "m = 1.5 is invalid")])
def test_bad_pattern_arguments(n, m, match):
    with pytest.raises(ValueError, match=match):
        prune(np.zeros((4, 4)), n, m)


# -- compressed format ---------------------------------------------------------------------

def test_compressed_format_by_hand():
    config = SPARSE["2:4_4x4_b64"]              # 4 rows: groups 0 and 1 of 4 positions per K-tile
    w = np.array([[0, 5, 0, -3, 0, 0, 0, 7]]).T
    values, indices = compress(config, w)
    assert values.shape == indices.shape == (1, 1, 4, 4)
    assert values[0, 0, :, 0].tolist() == [5, -3, 7, 0]            # rows g*N + i
    assert indices[0, 0, :, 0].tolist() == [1, 3, 3, 0]            # padding: first unused position
    assert values[0, 0, :, 1:].tolist() == [[0] * 3] * 4
    assert indices[0, 0, :, 1:].tolist() == [[0] * 3, [1] * 3] * 2


@pytest.mark.parametrize("name", SPARSE)
def test_compress_round_trip(name):
    config = SPARSE[name]
    n, m = config.sparse_nm
    rng = np.random.default_rng(len(name))
    K, N = 3 * config.act_lanes + m + 1, 2 * config.cols + 3
    w = nm_weights(rng, K, N, n, m)
    values, indices = compress(config, w)
    kt, nt = -(-K // config.act_lanes), -(-N // config.cols)
    assert values.shape == indices.shape == (kt, nt, config.rows, config.cols)
    assert np.array_equal(decompress(config, values, indices, K, N), w)
    # Per group: distinct indices; the non-zeros first, ascending.
    groups = indices.reshape(kt, nt, -1, n, config.cols)
    assert (np.diff(np.sort(groups, axis=3), axis=3) > 0).all()
    vals = values.reshape(groups.shape)
    nz = vals != 0
    assert (nz[:, :, :, :-1] >= nz[:, :, :, 1:]).all()
    assert (np.diff(groups, axis=3)[nz[:, :, :, 1:]] > 0).all()
    with pytest.raises(SparsityError):
        compress(config, np.ones((K, N), dtype=np.int64))


def test_compress_is_fast():
    config = SPARSE["2:4"]
    w = prune(np.random.default_rng(3).integers(-128, 128, (256, 256)), 2, 4)
    start = time.perf_counter()
    values, indices = compress(config, w)
    back = decompress(config, values, indices, 256, 256)
    assert time.perf_counter() - start < 0.5
    assert np.array_equal(back, w)


def test_compress_needs_a_sparse_configuration():
    with pytest.raises(ValueError, match="need an N:M configuration"):
        compress(DENSE, np.zeros((8, 8)))
