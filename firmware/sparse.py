"""N:M structured sparsity of weight matrices: pruning, checking and the compressed tiles.

A K x N weight matrix obeys the N:M pattern when, in every output column, every group
of M consecutive K positions (``k = g*M .. g*M+M-1``; the last group is shorter when
``K % M != 0``) holds at most N non-zeros. Such a matrix runs on an NPU configured with
``sparsity="N:M"`` as sparse tiles (``Compute(sparse=True)``, ``docs/isa.md``).

Compressed format (what :func:`compress` returns and the NPU's buffers hold):

* K is cut into K-tiles of ``act_lanes = rows/N*M`` positions (one activation entry)
  and N into N-tiles of ``cols`` columns; both are zero padded to whole tiles.
* One (K-tile ``t``, N-tile ``j``) pair is one sparse tile: ``rows x cols`` values
  (``rows`` weight entries) and ``rows x cols`` indices (one index entry).
* K-tile ``t`` has ``rows/N`` groups of M positions. Array row ``r = g*N + i`` holds,
  per column ``n``, the ``i``-th non-zero (ascending k) of group ``g`` of that column,
  and its index: the position 0 .. M-1 of that weight within the group, so it meets
  activation lane ``g*M + index`` of the tile. A group with fewer than N non-zeros is
  padded with zero values whose indices are positions the group's kept weights do not
  use (ascending): the N indices of a group are always distinct.
* ``values`` and ``indices`` are arrays ``(k_tiles, n_tiles, rows, cols)``;
  :func:`npu.firmware.isa.pack_idx` encodes index entries for LOAD buffer 3 and
  :class:`npu.firmware.gemm.GemmPlan` lays both out in memory.
"""

import numpy as np

__all__ = ["SparsityError", "prune", "check_pattern", "fits_pattern", "compress", "decompress", "prune_model"]


class SparsityError(ValueError):
    """A weight matrix that does not obey the N:M pattern it is used with."""


def _check_nm(n, m):
    for name, v in (("n", n), ("m", m)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} = {v!r} is invalid: must be a positive integer")
    if n > m:
        raise ValueError(f"n = {n} is invalid for m = {m}: at most m weights of a group can be kept")


def _matrix(w, what="weights"):
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"{what} must be a K x N matrix, got shape {w.shape}")
    return w


def _groups(x, m):
    """``x`` (K x N) zero padded along K to whole groups, as ``(groups, m, N)``."""
    K, N = x.shape
    g = -(-K // m)
    padded = np.zeros((g * m, N), dtype=x.dtype)
    padded[:K] = x
    return padded.reshape(g, m, N)


def _magnitude(w):
    """``|w|`` in a dtype that orders every value exactly (int64 minimum included)."""
    if w.dtype.kind == "b":
        return w.astype(np.uint8)
    if w.dtype.kind == "u":
        return w
    if w.dtype.kind == "i":
        return np.abs(w.astype(np.int64)).view(np.uint64)      # |-2**63| wraps to 2**63 as uint64
    return np.abs(w)


def prune(w, n, m):
    """``w`` (K x N) with all but the ``n`` largest ``|w|`` of every group of ``m``
    consecutive K positions zeroed, per column (magnitude pruning to n:m).

    Ties keep the lower k. The last group is shorter when ``K % m != 0``. Returns a new
    array of ``w``'s dtype.
    """
    _check_nm(n, m)
    w = _matrix(w)
    K, N = w.shape
    if n >= m or w.size == 0:
        return w.copy()
    mag = _groups(_magnitude(w), m)[:, ::-1]        # reversed: a stable ascending sort puts
    order = np.argsort(mag, axis=1, kind="stable")  # the lower k of equal magnitudes last
    keep = np.zeros(mag.shape, dtype=bool)
    np.put_along_axis(keep, order[:, m - n:], True, axis=1)
    keep = keep[:, ::-1].reshape(-1, N)[:K]
    return np.where(keep, w, np.zeros((), dtype=w.dtype)).astype(w.dtype)


def _bad_group(w, n, m):
    """(column, group, non-zeros) of the first group (lowest column, then lowest group)
    with more than ``n`` non-zeros, or None."""
    counts = np.count_nonzero(_groups(w != 0, m), axis=1)        # groups x N
    bad = np.argwhere((counts > n).T)                               # (column, group), column major
    if not len(bad):
        return None
    col, group = map(int, bad[0])
    return col, group, int(counts[group, col])


def check_pattern(w, n, m):
    """Raise :class:`SparsityError` unless ``w`` (K x N) obeys the n:m pattern.

    The message names the first offending group: the lowest column, and in it the
    lowest K group.
    """
    _check_nm(n, m)
    w = _matrix(w)
    bad = _bad_group(w, n, m)
    if bad is not None:
        col, group, count = bad
        first, last = group * m, min(group * m + m, w.shape[0]) - 1
        raise SparsityError(f"weights break the {n}:{m} pattern: column {col}, K group {group} "
                            f"(k = {first}..{last}) has {count} non-zeros; at most {n} allowed "
                            f"(prune them with npu.firmware.sparse.prune)")


def fits_pattern(w, n, m):
    """True when ``w`` (K x N) obeys the n:m pattern."""
    _check_nm(n, m)
    return _bad_group(_matrix(w), n, m) is None


def _sparse_nm(config):
    if not config.sparse:
        raise ValueError(f"sparsity = {config.sparsity!r}: compressed tiles need an N:M configuration")
    return config.sparse_nm


def _tiles(config, K, N):
    return -(-K // config.act_lanes), -(-N // config.cols)


def compress(config, w):
    """The sparse tiles of ``w`` (K x N, obeying ``config``'s N:M pattern): ``(values,
    indices)``, each ``(k_tiles, n_tiles, rows, cols)`` (see the module docstring).

    Raises :class:`SparsityError` if ``w`` breaks the pattern.
    """
    n_, m_ = _sparse_nm(config)
    w = _matrix(w)
    check_pattern(w, n_, m_)
    R, C, L = config.rows, config.cols, config.act_lanes
    K, N = w.shape
    kt, nt = _tiles(config, K, N)
    wp = np.zeros((kt * L, nt * C), dtype=w.dtype)
    wp[:K, :N] = w
    g = R // n_
    wp = wp.reshape(kt, g, m_, nt, C)
    # Positions of a group in the order the array rows take them: non-zeros ascending,
    # then the unused positions ascending (the padding's indices).
    key = (wp == 0) * m_ + np.arange(m_)[:, None, None]
    order = np.argsort(key, axis=2)[:, :, :n_]                         # kt, g, n, nt, C
    values = np.take_along_axis(wp, order, axis=2)
    shape = (kt, nt, R, C)
    return (values.transpose(0, 3, 1, 2, 4).reshape(shape),
            order.astype(np.int64).transpose(0, 3, 1, 2, 4).reshape(shape))


def decompress(config, values, indices, K, N):
    """The K x N matrix the sparse tiles ``values``/``indices`` (see :func:`compress`)
    compute with: weights that meet the same activation lane add up."""
    n_, m_ = _sparse_nm(config)
    R, C, L = config.rows, config.cols, config.act_lanes
    kt, nt = _tiles(config, K, N)
    values, indices = np.asarray(values), np.asarray(indices, dtype=np.int64)
    if values.shape != (kt, nt, R, C) or indices.shape != values.shape:
        raise ValueError(f"values {values.shape} and indices {indices.shape} must both be "
                         f"{(kt, nt, R, C)} for a {K} x {N} matrix")
    if indices.size and (indices.min() < 0 or indices.max() >= m_):
        raise ValueError(f"sparse indices must be 0 .. {m_ - 1}")
    g = R // n_
    vals = values.reshape(kt, nt, g, n_, C)
    lane = np.arange(g)[:, None, None] * m_ + indices.reshape(kt, nt, g, n_, C)   # lane in the tile
    dense = np.zeros((kt, nt, L, C), dtype=values.dtype)
    t, j, _, _, c = np.indices(vals.shape, sparse=True)
    np.add.at(dense, (t, j, lane, c), vals)
    return dense.transpose(0, 2, 1, 3).reshape(kt * L, nt * C)[:K, :N]


# -- whole models -----------------------------------------------------------------------

#: Weight inputs of the ops the NPU runs: op -> (weight input, weight zero-point input or
#: None, how the weight is laid out: "kn" K x N, "nk" N x K (Gemm with transB), "conv").
_WEIGHT_INPUTS = {
    "QLinearConv": (3, 5, "conv"),
    "QLinearMatMul": (3, 5, "kn"),
    "QGemm": (3, 5, "kn"),
}
_FLOAT_CONSUMERS = {"Conv": "conv", "MatMul": "kn", "Gemm": "kn"}


def prune_model(model, n, m):
    """Magnitude-prune the int8 weights of every Conv/MatMul/Gemm of a quantised ONNX
    model to the n:m pattern along K (per output channel), in place.

    ``model`` is an ``onnx.ModelProto`` (QDQ or QOperator form). A weight's zero point
    stands for 0.0, so "zero" means the zero point. Returns ``[(weight name, K, N,
    kept fraction)]``; raises :class:`SparsityError` when the model has no such weight.
    """
    from onnx import helper, numpy_helper

    _check_nm(n, m)
    inits = {init.name: init for init in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    targets = {}        # weight initializer -> (zero point initializer or None, layout)
    for node in model.graph.node:
        if node.op_type in _WEIGHT_INPUTS:
            wi, zi, layout = _WEIGHT_INPUTS[node.op_type]
            w_name = node.input[wi] if len(node.input) > wi else ""
            z_name = node.input[zi] if len(node.input) > zi else ""
        elif node.op_type in _FLOAT_CONSUMERS and len(node.input) > 1:
            dq = producers.get(node.input[1])
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            w_name = dq.input[0]
            z_name = dq.input[2] if len(dq.input) > 2 else ""
            layout = _FLOAT_CONSUMERS[node.op_type]
        else:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if layout == "kn" and attrs.get("transB", 0):
            layout = "nk"
        if w_name in inits and numpy_helper.to_array(inits[w_name]).dtype.kind in "iu":
            targets[w_name] = (inits.get(z_name), layout)
    if not targets:
        raise SparsityError("the model has no quantised Conv/MatMul/Gemm weights to prune")
    pruned = []
    for w_name, (z_init, layout) in targets.items():
        q = numpy_helper.to_array(inits[w_name])
        zp = numpy_helper.to_array(z_init).astype(np.int64) if z_init is not None else np.zeros(1, np.int64)
        if np.any(zp != zp.reshape(-1)[0]):
            raise SparsityError(f"weight '{w_name}' has per-channel zero points; prune supports one zero point")
        zp = int(zp.reshape(-1)[0])
        x = q.astype(np.int64) - zp
        # Conv (O x I x kh x kw) and transposed Gemm weights hold output channels first.
        channels_first = layout != "kn"
        kn = x.reshape(x.shape[0], -1).T if channels_first else x
        kept = prune(kn, n, m)
        x = (kept.T if channels_first else kept).reshape(q.shape)
        inits[w_name].CopyFrom(numpy_helper.from_array((x + zp).astype(q.dtype), w_name))
        pruned.append((w_name, kn.shape[0], kn.shape[1], float(np.count_nonzero(kept)) / max(1, kept.size)))
    return pruned
