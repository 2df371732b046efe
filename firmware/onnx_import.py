"""Import int8 ONNX models: QDQ and QOperator formats into one graph of NPU layers and host nodes.

What :func:`load_model` accepts is what ``onnxruntime.quantization.quantize_static``
produces: QDQ (QuantizeLinear/DequantizeLinear around float operators) or QOperator
(QLinearConv, QLinearMatMul, QGemm, QLinearAdd, ...), per-tensor or per-channel int8
weights, int8 or uint8 activations.

Import works in three steps:

1. **Normalise.** Every QOperator node becomes its QDQ meaning: DequantizeLinear of
   each quantised input, the float operator, QuantizeLinear of the output. Both formats
   then have one form, whose rounding points are the model's.
2. **Fuse.** Each ``DequantizeLinear(x) -> Conv | MatMul | Gemm (DequantizeLinear(int8
   constant weights), bias) -> [Relu | Clip] -> QuantizeLinear`` becomes one
   :class:`NpuLayer`: an integer GEMM with bias, requantisation and clamp, which is
   exactly what the NPU computes. A pattern that does not fit (weights that are not
   constant, a float result used elsewhere, a weight zero point that does not leave
   int8 weights, ...) stays on the host, with the reason recorded.
3. **Check.** Every remaining node must be a host operator (:data:`HOST_OPS`);
   otherwise :class:`ModelError` names the node and its op.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .hostops import HOST_OPS

__all__ = ["ModelError", "Node", "NpuLayer", "Graph", "QParams", "load_model", "from_onnx"]

NPU_OPS = ("Conv", "MatMul", "Gemm")


class ModelError(ValueError):
    """The model cannot be imported; the message is one line naming the problem."""


@dataclass
class QParams:
    """A per-tensor quantisation: ``real = scale * (q - zero_point)``, ``q`` of ``dtype``."""
    scale: float
    zero_point: int
    dtype: str        #: "int8" or "uint8"

    @property
    def offset(self):
        """What the NPU adds to a stored value to make it int8: uint8 values are shifted by -128."""
        return -128 if self.dtype == "uint8" else 0


@dataclass
class Node:
    """A host node: an ONNX operator run in NumPy (:mod:`npu.firmware.hostops`)."""
    name: str
    op: str
    inputs: list
    outputs: list
    attrs: dict = field(default_factory=dict)
    note: str = ""     #: why a Conv/MatMul/Gemm stayed on the host

    where = "host"


@dataclass
class NpuLayer:
    """``y = clamp(requantize(sum_k (x - zx) * w + bias) + zy)``: one quantised Conv,
    MatMul or Gemm with its bias, activation and output quantisation fused.

    ``weight``: int64, ``[K, N]`` for MatMul/Gemm, ``[N, C/group, kh, kw]`` for Conv;
    ``bias``: int64 ``[N]`` in units of ``x.scale * w_scale[n]``; ``scale``: float64 ``[N]``,
    the real multiplier ``x.scale * w_scale[n] * alpha / y.scale``; ``clamp``: the output's
    stored-value range after the fused activation.
    """
    name: str
    op: str
    input: str
    output: str
    x: QParams
    y: QParams
    weight: np.ndarray
    bias: np.ndarray
    scale: np.ndarray
    clamp: tuple
    conv: dict = None   #: the Conv's geometry attributes (kernel_shape, strides, pads, auto_pad, dilations, group)
    fused: list = field(default_factory=list)

    where = "npu"

    @property
    def inputs(self):
        return [self.input]

    @property
    def outputs(self):
        return [self.output]


@dataclass
class Graph:
    name: str
    nodes: list
    consts: dict
    inputs: list      #: [(name, shape, dtype)], shape entries int or None (symbolic)
    outputs: list

    def npu_layers(self):
        return [n for n in self.nodes if isinstance(n, NpuLayer)]


_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64, 10: np.float16,
           11: np.float64, 4: np.uint16, 9: np.bool_}


def _value_info(vi):
    t = vi.type.tensor_type
    dtype = _DTYPES.get(t.elem_type)
    if dtype is None:
        raise ModelError(f"tensor '{vi.name}' has element type {t.elem_type}, which is not supported")
    shape = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return vi.name, shape, np.dtype(dtype).name


def load_model(path):
    """Read and import an int8 ONNX model file; :class:`ModelError` if it cannot be."""
    import onnx
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        model = onnx.load(str(path))
    except Exception as e:     # protobuf raises several types for corrupt files
        raise ModelError(f"{path}: not a readable ONNX model ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else 'corrupt'})") from None
    if not model.graph.node:
        raise ModelError(f"{path}: not a readable ONNX model (no graph nodes)")
    return from_onnx(model, name=path.stem)


def from_onnx(model, name="model"):
    """Import an ``onnx.ModelProto`` (see the module documentation)."""
    from onnx import helper, numpy_helper

    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    nodes = []
    for i, n in enumerate(g.node):
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
        node_name = n.name or f"{n.op_type}_{i}"
        if n.op_type == "Constant":
            value = attrs.get("value")
            if value is None:
                raise ModelError(f"node '{node_name}' (Constant): only the 'value' form is supported")
            consts[n.output[0]] = numpy_helper.to_array(value)
            continue
        if n.domain not in ("", "ai.onnx", "com.microsoft"):
            raise ModelError(f"node '{node_name}' ({n.op_type}) is in domain '{n.domain}', which is not supported")
        nodes.append(Node(node_name, n.op_type, list(n.input), list(n.output), attrs))
    inputs = [_value_info(vi) for vi in g.input if vi.name not in consts]
    outputs = [_value_info(vi) for vi in g.output]
    graph = Graph(name, nodes, consts, inputs, outputs)
    _normalise(graph)
    if not any(n.op == "QuantizeLinear" for n in graph.nodes) and \
            not any(np.dtype(dt).kind in "iu" for _, _, dt in graph.inputs):
        raise ModelError(f"model '{name}' is not quantised (no QuantizeLinear or QLinear* nodes): quantise it "
                         f"with onnxruntime.quantization.quantize_static")
    _fuse(graph)
    _prune(graph)
    for n in graph.nodes:
        if isinstance(n, Node) and n.op not in HOST_OPS:
            raise ModelError(f"node '{n.name}' ({n.op}) is not supported: neither the NPU nor the host path "
                             f"runs it (host ops: {', '.join(sorted(HOST_OPS))})")
    return graph


# -- 1. QOperator -> QDQ --------------------------------------------------------------

#: QOperator op -> (float op, [(q input, scale, zero point) indices], extra float inputs, output q indices)
_QLINEAR = {
    # QLinearConv: x, xs, xz, w, ws, wz, ys, yz, [B int32]
    "QLinearConv": ("Conv", [(0, 1, 2), (3, 4, 5)], [8], (6, 7)),
    # QLinearMatMul: a, as, az, b, bs, bz, ys, yz
    "QLinearMatMul": ("MatMul", [(0, 1, 2), (3, 4, 5)], [], (6, 7)),
    # QLinearAdd / QLinearMul (com.microsoft): a, as, az, b, bs, bz, cs, cz
    "QLinearAdd": ("Add", [(0, 1, 2), (3, 4, 5)], [], (6, 7)),
    "QLinearMul": ("Mul", [(0, 1, 2), (3, 4, 5)], [], (6, 7)),
    # QLinearGlobalAveragePool / QLinearAveragePool / unary activations: x, xs, xz, ys, yz
    "QLinearGlobalAveragePool": ("GlobalAveragePool", [(0, 1, 2)], [], (3, 4)),
    "QLinearAveragePool": ("AveragePool", [(0, 1, 2)], [], (3, 4)),
    "QLinearLeakyRelu": ("LeakyRelu", [(0, 1, 2)], [], (3, 4)),
    "QLinearSigmoid": ("Sigmoid", [(0, 1, 2)], [], (3, 4)),
    # QLinearSoftmax (com.microsoft): x, xs, xz, ys, yz
    "QLinearSoftmax": ("Softmax", [(0, 1, 2)], [], (3, 4)),
}

_DYNAMIC = ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul")


def _normalise(graph):
    out = []
    for n in graph.nodes:
        if n.op in _DYNAMIC:
            raise ModelError(f"node '{n.name}' ({n.op}) comes from dynamic quantisation; the NPU runs statically "
                             f"quantised models (onnxruntime.quantization.quantize_static)")
        if n.op == "QGemm":
            out += _expand_qgemm(n)
        elif n.op == "QLinearConcat":
            out += _expand_qconcat(n)
        elif n.op in _QLINEAR:
            out += _expand_qlinear(n, *_QLINEAR[n.op])
        else:
            out.append(n)
    graph.nodes = out


def _inp(n, i):
    return n.inputs[i] if i < len(n.inputs) and n.inputs[i] else ""


def _dq(n, tag, x, s, z, axis=None):
    name = f"{n.name}/{tag}_dq"
    attrs = {} if axis is None else {"axis": axis}
    return Node(name, "DequantizeLinear", [x, s, z] if z else [x, s], [f"{name}:0"], attrs)


def _expand_qlinear(n, op, qins, extra, yq):
    new, float_ins = [], []
    for k, (x, s, z) in enumerate(qins):
        axis = 0 if (op == "Conv" and k == 1) else (1 if (op == "MatMul" and k == 1) else None)
        d = _dq(n, f"in{k}", _inp(n, x), _inp(n, s), _inp(n, z), axis)
        new.append(d)
        float_ins.append(d.outputs[0])
    for e in extra:
        if _inp(n, e):        # int32 bias with scale x_scale * w_scale, zero point 0
            bias = f"{n.name}/bias"
            new.append(Node(f"{n.name}/bias_dq", "_BiasDequantize",
                            [_inp(n, e), _inp(n, qins[0][1]), _inp(n, qins[1][1])], [bias]))
            float_ins.append(bias)
    attrs = {k: v for k, v in n.attrs.items() if k not in ("domain",)}
    mid = f"{n.name}:float"
    new.append(Node(n.name, op, float_ins, [mid], attrs))
    new.append(Node(f"{n.name}/q", "QuantizeLinear", [mid, _inp(n, yq[0]), _inp(n, yq[1])], [n.outputs[0]]))
    return new


def _expand_qgemm(n):
    # QGemm (com.microsoft): A, a_s, a_z, B, b_s, b_z, C (int32), y_s, y_z; float output if no y_s.
    new = [_dq(n, "in0", _inp(n, 0), _inp(n, 1), _inp(n, 2)),
           _dq(n, "in1", _inp(n, 3), _inp(n, 4), _inp(n, 5), 0 if n.attrs.get("transB", 0) else 1)]
    ins = [new[0].outputs[0], new[1].outputs[0]]
    if _inp(n, 6):
        new.append(Node(f"{n.name}/bias_dq", "_BiasDequantize", [_inp(n, 6), _inp(n, 1), _inp(n, 4)],
                        [f"{n.name}/bias"]))
        ins.append(f"{n.name}/bias")
    attrs = {k: v for k, v in n.attrs.items() if k in ("alpha", "transA", "transB")}
    if _inp(n, 7):
        mid = f"{n.name}:float"
        new.append(Node(n.name, "Gemm", ins, [mid], attrs))
        new.append(Node(f"{n.name}/q", "QuantizeLinear", [mid, _inp(n, 7), _inp(n, 8)], [n.outputs[0]]))
    else:
        new.append(Node(n.name, "Gemm", ins, [n.outputs[0]], attrs))
    return new


def _expand_qconcat(n):
    # QLinearConcat: y_s, y_z, then (x, x_s, x_z) triples.
    new, ins = [], []
    for k in range((len(n.inputs) - 2) // 3):
        d = _dq(n, f"in{k}", n.inputs[2 + 3 * k], n.inputs[3 + 3 * k], n.inputs[4 + 3 * k])
        new.append(d)
        ins.append(d.outputs[0])
    mid = f"{n.name}:float"
    new.append(Node(n.name, "Concat", ins, [mid], {"axis": n.attrs["axis"]}))
    new.append(Node(f"{n.name}/q", "QuantizeLinear", [mid, n.inputs[0], n.inputs[1]], [n.outputs[0]]))
    return new


# -- 2. fusion ------------------------------------------------------------------------

def _consumers(graph):
    uses = {}
    for n in graph.nodes:
        for i in n.inputs:
            uses.setdefault(i, []).append(n)
    return uses


def _producers(graph):
    return {o: n for n in graph.nodes for o in n.outputs}


def _scalar(graph, name, what):
    if name not in graph.consts:
        raise _NoFuse(f"{what} is not a constant")
    v = np.asarray(graph.consts[name])
    if v.size != 1:
        raise _NoFuse(f"{what} is per-channel")
    return v.reshape(()).item()


class _NoFuse(Exception):
    """The pattern does not fit the NPU; the message says why (the node stays on the host)."""


def _qparams(graph, dq_or_q):
    scale = float(_scalar(graph, dq_or_q.inputs[1], "activation scale"))
    zp_name = _inp(dq_or_q, 2)
    if zp_name:
        zp = graph.consts.get(zp_name)
        if zp is None or np.asarray(zp).size != 1:
            raise _NoFuse("activation zero point is not a per-tensor constant")
        dtype = np.asarray(zp).dtype.name
        zp = int(np.asarray(zp).reshape(()))
    else:
        dtype, zp = "uint8", 0
    if dtype not in ("int8", "uint8"):
        raise _NoFuse(f"activations are {dtype}; the NPU takes int8 and uint8")
    if not scale > 0:
        raise _NoFuse(f"activation scale {scale} is not positive")
    return QParams(scale, zp, dtype)


def _fuse(graph):
    for n in list(graph.nodes):
        if n.op not in NPU_OPS:
            continue
        try:
            layer, removed = _match(graph, n)
        except _NoFuse as why:
            n.note = str(why)
            continue
        i = graph.nodes.index(removed[-1])
        graph.nodes[i] = layer
        for r in removed[:-1]:
            graph.nodes.remove(r)


def _match(graph, n):
    prod, uses = _producers(graph), _consumers(graph)
    outputs = {name for name, _, _ in graph.outputs}
    dq_x = prod.get(_inp(n, 0))
    if dq_x is None or dq_x.op != "DequantizeLinear":
        raise _NoFuse("its input is not quantised")
    x = _qparams(graph, dq_x)
    dq_w = prod.get(_inp(n, 1))
    if dq_w is None or dq_w.op != "DequantizeLinear" or dq_w.inputs[0] not in graph.consts:
        if _inp(n, 1) in graph.consts:
            raise ModelError(f"node '{n.name}' ({n.op}) has float weights: the model is not quantised; "
                             f"quantise it with onnxruntime.quantization.quantize_static")
        raise _NoFuse("its weights are not constant int8")
    wq = np.asarray(graph.consts[dq_w.inputs[0]])
    if wq.dtype.kind not in "iu" or wq.dtype.itemsize != 1:
        raise _NoFuse(f"its weights are {wq.dtype.name}, not 8-bit")
    w_scale = np.asarray(graph.consts.get(dq_w.inputs[1]), dtype=np.float64)
    w_zp = np.asarray(graph.consts.get(_inp(dq_w, 2), 0), dtype=np.int64)
    w_axis = dq_w.attrs.get("axis", 1) % wq.ndim

    # The weights as [K, N] (MatMul/Gemm) or [N, C/g, kh, kw] (Conv), and the output axis.
    alpha = 1.0
    if n.op == "Conv":
        out_axis = 0
        if len(wq.shape) != 4:
            raise _NoFuse("only 2-D convolutions run on the NPU")
    elif n.op == "MatMul":
        if wq.ndim != 2:
            raise _NoFuse("its weights are not a matrix")
        out_axis = 1
    else:
        if n.attrs.get("transA", 0):
            raise _NoFuse("transA = 1")
        if float(n.attrs.get("beta", 1.0)) != 1.0 and _inp(n, 2):
            raise _NoFuse("beta != 1")
        alpha = float(n.attrs.get("alpha", 1.0))
        out_axis = 0 if n.attrs.get("transB", 0) else 1
    N = wq.shape[out_axis]
    for what, v in (("weight scale", w_scale), ("weight zero point", w_zp)):
        if v.size not in (1, N) or (v.size == N and N > 1 and w_axis != out_axis):
            raise _NoFuse(f"{what} is per-channel along an axis other than the output channels")
    w_scale = np.broadcast_to(w_scale.reshape(-1), (N,)).astype(np.float64)
    zshape = [1] * wq.ndim
    zshape[out_axis] = -1 if w_zp.size > 1 else 1
    w = wq.astype(np.int64) - w_zp.reshape(zshape)
    if w.min() < -128 or w.max() > 127:
        raise _NoFuse("its weights minus their zero point do not fit int8")
    if n.op != "Conv" and out_axis == 0:
        w = w.T
    # Output: the float result must feed only [Relu|Clip ->] QuantizeLinear.
    chain, y_name = [], n.outputs[0]
    lo = hi = None
    while True:
        if y_name in outputs:
            raise _NoFuse("its float result is a graph output")
        users = uses.get(y_name, [])
        if len(users) != 1:
            raise _NoFuse("its float result has several users" if users else "its result is unused")
        u = users[0]
        if u.op == "Relu":
            lo = 0.0 if lo is None else max(lo, 0.0)
        elif u.op == "Clip":
            cmin = u.attrs.get("min") if len(u.inputs) < 2 or not u.inputs[1] else \
                _scalar(graph, u.inputs[1], "Clip min")
            cmax = u.attrs.get("max") if len(u.inputs) < 3 or not u.inputs[2] else \
                _scalar(graph, u.inputs[2], "Clip max")
            if cmin is not None:
                lo = cmin if lo is None else max(lo, cmin)
            if cmax is not None:
                hi = cmax if hi is None else min(hi, cmax)
        elif u.op == "QuantizeLinear":
            break
        else:
            raise _NoFuse(f"its result goes to {u.op} '{u.name}', not to a QuantizeLinear")
        chain.append(u)
        y_name = u.outputs[0]
    q = u
    y = _qparams(graph, q)
    qmin, qmax = (-128, 127) if y.dtype == "int8" else (0, 255)
    clamp_lo = qmin if lo is None else max(qmin, min(qmax, int(np.rint(np.float32(lo) / np.float32(y.scale))) +
                                                      y.zero_point))
    clamp_hi = qmax if hi is None else max(qmin, min(qmax, int(np.rint(np.float32(hi) / np.float32(y.scale))) +
                                                      y.zero_point))
    # Bias: real value / (x.scale * w_scale) -> integer in accumulator units.
    bias = np.zeros(N, dtype=np.int64)
    fused = [dq_x.name, dq_w.name]
    if _inp(n, 2):
        b = prod.get(n.inputs[2])
        acc_scale = x.scale * w_scale
        if b is not None and b.op == "_BiasDequantize":
            bias = np.asarray(graph.consts[b.inputs[0]], dtype=np.int64).reshape(-1)
            fused.append(b.name)
        elif b is not None and b.op == "DequantizeLinear" and b.inputs[0] in graph.consts:
            bq = np.asarray(graph.consts[b.inputs[0]], dtype=np.int64).reshape(-1)
            bs = np.asarray(graph.consts[b.inputs[1]], dtype=np.float64).reshape(-1)
            bz = np.asarray(graph.consts.get(_inp(b, 2), 0), dtype=np.int64).reshape(-1)
            real = (bq - bz) * bs
            bias = np.rint(real / acc_scale).astype(np.int64)
            if not np.allclose(bias * acc_scale, real, rtol=1e-6, atol=0):
                raise _NoFuse("its bias scale is not input scale x weight scale")
            fused.append(b.name)
        elif n.inputs[2] in graph.consts:
            real = np.asarray(graph.consts[n.inputs[2]], dtype=np.float64).reshape(-1)
            bias = np.rint(real / acc_scale).astype(np.int64)
        else:
            raise _NoFuse("its bias is not constant")
        bias = np.broadcast_to(bias, (N,)).copy()
    conv = None
    if n.op == "Conv":
        conv = {k: v for k, v in n.attrs.items()
                if k in ("kernel_shape", "strides", "pads", "auto_pad", "dilations", "group")}
        conv.setdefault("kernel_shape", list(wq.shape[2:]))
    layer = NpuLayer(n.name, n.op, dq_x.inputs[0], q.outputs[0], x, y, w, bias,
                     w_scale * x.scale * alpha / y.scale, (clamp_lo, clamp_hi), conv,
                     fused + [n.name] + [c.name for c in chain] + [q.name])
    # The DequantizeLinear nodes stay (others may use them); pruning drops the unused.
    return layer, chain + [n, q]


def _prune(graph):
    """Drop nodes whose outputs nothing uses (e.g. a DequantizeLinear folded into a layer)."""
    needed = {name for name, _, _ in graph.outputs}
    keep = []
    for n in reversed(graph.nodes):
        if any(o in needed for o in n.outputs):
            keep.append(n)
            needed.update(i for i in n.inputs if i)
    graph.nodes = keep[::-1]
