"""The host path: ONNX operators in NumPy, for the nodes the NPU does not run.

Each function takes the node's input arrays (``None`` for an omitted optional input)
and its attributes, and returns the list of outputs. Float arithmetic is float32, as
ONNX Runtime's CPU kernels; rounding in :func:`quantize_linear` is to nearest, ties to
even, then saturation, as the ONNX specification says.

In a QDQ graph a host operator sees dequantised (float) inputs and its output is
quantised again by the QuantizeLinear that follows: the rounding points of the model
are kept exactly where the model has them.
"""

import numpy as np

__all__ = ["HOST_OPS", "quantize_linear", "dequantize_linear", "conv_float", "im2col", "pool_windows"]

QRANGE = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255),
          np.dtype(np.int16): (-32768, 32767), np.dtype(np.uint16): (0, 65535)}


def _axis_shape(scale, ndim, axis):
    scale = np.asarray(scale)
    if scale.ndim == 0 or scale.size == 1:
        return scale.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = scale.size
    return scale.reshape(shape)


def quantize_linear(x, scale, zero_point=None, axis=1):
    dtype = np.dtype(np.uint8) if zero_point is None else np.asarray(zero_point).dtype
    x = np.asarray(x, dtype=np.float32)
    s = _axis_shape(np.asarray(scale, np.float32), x.ndim, axis)
    zp = 0 if zero_point is None else _axis_shape(zero_point, x.ndim, axis).astype(np.int64)
    lo, hi = QRANGE[dtype]
    q = np.rint(x / s).astype(np.float64) + zp
    return np.clip(q, lo, hi).astype(dtype)


def dequantize_linear(q, scale, zero_point=None, axis=1):
    q = np.asarray(q)
    s = _axis_shape(np.asarray(scale, np.float32), q.ndim, axis)
    zp = 0 if zero_point is None else _axis_shape(zero_point, q.ndim, axis).astype(np.int64)
    return ((q.astype(np.int64) - zp).astype(np.float32) * s).astype(np.float32)


def conv_pads(attrs, spatial, kernel, strides, dilations):
    """Begin and end paddings per spatial axis, honouring ``auto_pad``."""
    n = len(spatial)
    auto = attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small, big = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else big)
            end.append(big if auto == "SAME_UPPER" else small)
        return begin, end
    if auto == "VALID":
        return [0] * n, [0] * n
    pads = list(attrs.get("pads", [0] * (2 * n)))
    return pads[:n], pads[n:]


def pool_windows(x, kernel, strides, pads_begin, pads_end, dilations=None, pad_value=0.0):
    """Sliding windows of an N, C, *spatial array: shape (N, C, *out, *kernel)."""
    n = len(kernel)
    dilations = dilations or [1] * n
    width = [(0, 0), (0, 0)] + list(zip(pads_begin, pads_end))
    xp = np.pad(x, width, constant_values=pad_value)
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    win = np.lib.stride_tricks.sliding_window_view(xp, span, axis=tuple(range(2, 2 + n)))
    sl = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides) + \
        tuple(slice(None, None, d) for d in dilations)
    return win[sl]


def im2col(x, kernel, strides, pads_begin, pads_end, dilations, pad_value):
    """Rows of a 2-D convolution's GEMM: x (N, C, H, W) -> (N*OH*OW, C*kh*kw), K in
    (channel, ky, kx) order, padding filled with ``pad_value``; and (OH, OW)."""
    win = pool_windows(x, kernel, strides, pads_begin, pads_end, dilations, pad_value)
    N, C, OH, OW, kh, kw = win.shape
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(N * OH * OW, C * kh * kw), (OH, OW)


def conv_geometry(attrs, x_shape, w_shape):
    kernel = list(attrs.get("kernel_shape", w_shape[2:]))
    n = len(kernel)
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    begin, end = conv_pads(attrs, x_shape[2:], kernel, strides, dilations)
    return kernel, strides, dilations, begin, end


def conv_float(x, w, b=None, **attrs):
    """Float Conv (any group count, 2-D) by im2col."""
    if x.ndim != 4:
        raise NotImplementedError("only 2-D convolutions (N, C, H, W) are supported")
    kernel, strides, dilations, begin, end = conv_geometry(attrs, x.shape, w.shape)
    group = int(attrs.get("group", 1))
    N, C = x.shape[:2]
    cout = w.shape[0]
    cg, ng = C // group, cout // group
    outs = []
    for g in range(group):
        cols, (oh, ow) = im2col(x[:, g * cg:(g + 1) * cg], kernel, strides, begin, end, dilations, 0.0)
        wg = w[g * ng:(g + 1) * ng].reshape(ng, -1).astype(np.float32)
        outs.append((cols.astype(np.float32) @ wg.T).reshape(N, oh, ow, ng))
    y = np.concatenate(outs, axis=3).transpose(0, 3, 1, 2)
    if b is not None:
        y = y + b.reshape(1, -1, 1, 1)
    return y.astype(np.float32)


def _pool_geometry(x, a):
    """(kernel, strides, dilations, pads begin, pads end) of a pooling node; ``ceil_mode``
    as extra end padding."""
    kernel, strides, dil, begin, end = conv_geometry(a, x.shape, (0, 0, *a["kernel_shape"]))
    if a.get("ceil_mode", 0):
        end = [e + (s - 1) for e, s in zip(end, strides)]
    return kernel, strides, dil, begin, end


def _max_pool(x, **a):
    kernel, strides, dil, begin, end = _pool_geometry(x, a)
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    win = pool_windows(x, kernel, strides, begin, end, dil, fill)
    return win.max(axis=tuple(range(-len(kernel), 0)))


def _average_pool(x, **a):
    kernel, strides, dil, begin, end = _pool_geometry(x, a)
    axes = tuple(range(-len(kernel), 0))
    x = x.astype(np.float32)
    total = pool_windows(x, kernel, strides, begin, end, dil).sum(axis=axes)
    if a.get("count_include_pad", 0):
        count = np.prod(kernel)
    else:
        ones = np.ones((1, 1) + x.shape[2:], np.float32)
        count = pool_windows(ones, kernel, strides, begin, end, dil).sum(axis=axes)
    return (total / count).astype(np.float32)


def _reshape(x, shape, allowzero=0):
    shape = [int(s) for s in shape]
    if not allowzero:
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    # A model exported with batch 1 runs a stacked batch: a leading 1 follows the batch.
    if shape and shape[0] == 1 and x.shape and x.shape[0] > 1 and -1 not in shape[1:] \
            and int(np.prod(shape)) * x.shape[0] == x.size:
        shape[0] = x.shape[0]
    return x.reshape(shape)


def _softmax(x, axis=-1):
    x = x.astype(np.float32)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def _gemm(a, b, c=None, alpha=1.0, beta=1.0, transA=0, transB=0):
    a = a.T if transA else a
    b = b.T if transB else b
    y = np.float32(alpha) * (a.astype(np.float32) @ b.astype(np.float32))
    if c is not None:
        y = y + np.float32(beta) * c
    return y.astype(np.float32)


def _clip(x, lo=None, hi=None, **a):
    lo = a.get("min", lo) if lo is None else lo
    hi = a.get("max", hi) if hi is None else hi
    if lo is not None:
        x = np.maximum(x, np.asarray(lo, x.dtype))
    if hi is not None:
        x = np.minimum(x, np.asarray(hi, x.dtype))
    return x


def _squeeze(x, axes=None, **a):
    axes = a.get("axes", axes)
    return np.squeeze(x, axis=None if axes is None else tuple(int(v) for v in np.asarray(axes).ravel()))


def _unsqueeze(x, axes=None, **a):
    axes = a.get("axes", axes)
    for ax in sorted(int(v) % (x.ndim + len(np.asarray(axes).ravel())) for v in np.asarray(axes).ravel()):
        x = np.expand_dims(x, ax)
    return x


def _flatten(x, axis=1):
    lead = int(np.prod(x.shape[:axis])) if axis else 1
    return x.reshape(lead, -1)


def _binary(fn):
    return lambda a, b: [fn(a, b).astype(np.result_type(a, b))]


#: op type -> function(inputs, attrs) -> outputs
HOST_OPS = {
    "QuantizeLinear": lambda i, a: [quantize_linear(i[0], i[1], i[2] if len(i) > 2 else None, a.get("axis", 1))],
    "DequantizeLinear": lambda i, a: [dequantize_linear(i[0], i[1], i[2] if len(i) > 2 else None,
                                                        a.get("axis", 1))],
    # A QOperator bias: int32 in units of input scale x weight scale (per output channel).
    "_BiasDequantize": lambda i, a: [(i[0].astype(np.float64) * np.float64(i[1]) * np.asarray(i[2], np.float64))
                                     .astype(np.float32)],
    "Relu": lambda i, a: [np.maximum(i[0], np.zeros((), i[0].dtype))],
    "Clip": lambda i, a: [_clip(i[0], *(i[1:] + [None] * (3 - len(i))), **a)],
    "LeakyRelu": lambda i, a: [np.where(i[0] >= 0, i[0], np.float32(a.get("alpha", 0.01)) * i[0])
                               .astype(np.float32)],
    "Sigmoid": lambda i, a: [(1.0 / (1.0 + np.exp(-i[0].astype(np.float32)))).astype(np.float32)],
    "Tanh": lambda i, a: [np.tanh(i[0]).astype(np.float32)],
    "Add": lambda i, a: _binary(np.add)(i[0], i[1]),
    "Sub": lambda i, a: _binary(np.subtract)(i[0], i[1]),
    "Mul": lambda i, a: _binary(np.multiply)(i[0], i[1]),
    "Div": lambda i, a: _binary(np.divide)(i[0], i[1]),
    "MaxPool": lambda i, a: [_max_pool(i[0], **a)],
    "AveragePool": lambda i, a: [_average_pool(i[0], **a)],
    "GlobalAveragePool": lambda i, a: [i[0].astype(np.float32).mean(axis=tuple(range(2, i[0].ndim)),
                                                                     keepdims=True)],
    "GlobalMaxPool": lambda i, a: [i[0].max(axis=tuple(range(2, i[0].ndim)), keepdims=True)],
    "Flatten": lambda i, a: [_flatten(i[0], a.get("axis", 1))],
    "Reshape": lambda i, a: [_reshape(i[0], i[1], a.get("allowzero", 0))],
    "Transpose": lambda i, a: [np.transpose(i[0], a.get("perm"))],
    "Squeeze": lambda i, a: [_squeeze(i[0], i[1] if len(i) > 1 else None, **a)],
    "Unsqueeze": lambda i, a: [_unsqueeze(i[0], i[1] if len(i) > 1 else None, **a)],
    "Concat": lambda i, a: [np.concatenate(i, axis=a["axis"])],
    "Softmax": lambda i, a: [_softmax(i[0], a.get("axis", -1))],
    "Identity": lambda i, a: [i[0]],
    "MatMul": lambda i, a: [np.matmul(i[0].astype(np.float32), i[1].astype(np.float32))],
    "Gemm": lambda i, a: [_gemm(*i, **a)],
    "Conv": lambda i, a: [conv_float(*i, **a)],
}
