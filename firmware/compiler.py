"""Compile an imported model for one NPU configuration and batch: programs plus a memory image.

For every :class:`~npu.firmware.onnx_import.NpuLayer` the compiler

* lowers it to GEMMs: a MatMul/Gemm is one ``M x K x N`` GEMM (``M`` = batch x leading
  dimensions); a Conv is im2col rows (``M`` = batch x output pixels, ``K`` = input
  channels x kernel) times the reshaped kernel. Grouped and depthwise convolutions pack
  as many groups side by side as the array has columns (a block-diagonal weight
  matrix), so a depthwise layer keeps ``cols`` columns busy instead of one;
* derives the requantisation parameters: per output channel a 31-bit multiplier and
  shift from the float scale ``x_scale * w_scale / y_scale``; the input zero point
  folded into the bias (``bias - zx * sum_k w``), so the array multiplies raw int8
  values; uint8 tensors shifted by -128 into int8 (and back on the way out);
* tiles each GEMM to the buffer sizes of the configuration (:class:`GemmPlan`:
  double-buffered loads that overlap the computes) and places its operands in memory;
* on an N:M configuration, runs a GEMM whose weights obey the N:M pattern along K
  (per output channel; K in ONNX order: input channel, then kernel rows and columns)
  as sparse tiles, every other one as dense tiles (:mod:`npu.firmware.sparse`).

The result, :class:`CompiledModel`, holds one program per layer (ending in END, laid
end to end in the command ring) and the constant memory image (weights, parameters,
the ring). A run writes each layer's activations, starts its program and reads the
result; host nodes run in between (:mod:`npu.firmware.runtime`).
"""

from dataclasses import dataclass, field

import numpy as np

from .gemm import GemmPlan
from .hostops import conv_geometry
from .isa import INSTRUCTION_BYTES, End, encode_program
from .onnx_import import ModelError, NpuLayer
from .quant import quantize_multiplier
from .sparse import fits_pattern

__all__ = ["CompiledModel", "LayerPlan", "compile_model", "MEMORY_BASE"]

#: Where the compiled model's memory starts (the NPU's DMA window starts here too).
MEMORY_BASE = 0x1000_0000


@dataclass
class Pack:
    """One GEMM of a layer: the groups it computes side by side (one for a dense layer)."""
    plan: GemmPlan
    groups: list


@dataclass
class LayerPlan:
    name: str
    op: str
    packs: list
    first_slot: int
    tail_slot: int
    macs: int                      #: the layer's multiply-accumulates (as the model states them)
    in_shape: tuple
    out_shape: tuple
    geometry: dict = field(default_factory=dict)

    @property
    def sparse(self):
        """True when the layer's GEMMs run as N:M sparse tiles."""
        return any(pack.plan.sparse for pack in self.packs)

    @property
    def instructions(self):
        return self.tail_slot - self.first_slot


@dataclass
class CompiledModel:
    config: object
    graph: object
    batch: int
    input_shapes: dict             #: graph input -> shape (batch included)
    layers: dict                   #: layer name -> LayerPlan
    memory_base: int
    memory_size: int
    ring_base: int
    ring_slots: int
    image: list                    #: [(address, bytes)] constant regions (ring, weights, parameters)

    @property
    def window(self):
        return self.memory_base, self.memory_base + self.memory_size

    def new_memory(self):
        """A memory image of the model's region holding the constant image (what a driver loads)."""
        from ..sim.memory import MemoryImage
        memory = MemoryImage(self.memory_base, self.memory_size)
        for addr, data in self.image:
            memory.write(addr, data)
        return memory


def _align(x, a=64):
    return -(-x // a) * a


def lower(layer, in_shape):
    """(M, per-group K, per-group N, groups, geometry, output shape) of a layer's GEMMs."""
    w = layer.weight
    if layer.op != "Conv":
        K, N = w.shape
        if in_shape[-1] != K:
            raise ModelError(f"node '{layer.name}' ({layer.op}): input has {in_shape[-1]} features, "
                             f"the weights take {K}")
        if layer.op == "Gemm" and len(in_shape) != 2:
            raise ModelError(f"node '{layer.name}' (Gemm): input must be 2-D, got shape {tuple(in_shape)}")
        M = int(np.prod(in_shape[:-1]))
        return M, K, N, 1, {}, tuple(in_shape[:-1]) + (N,)
    if len(in_shape) != 4:
        raise ModelError(f"node '{layer.name}' (Conv): only 2-D convolutions (N, C, H, W) run; "
                         f"input shape {tuple(in_shape)}")
    kernel, strides, dilations, begin, end = conv_geometry(layer.conv, in_shape, w.shape)
    B, C, H, W_ = in_shape
    g = int(layer.conv.get("group", 1))
    cout, cg = w.shape[0], w.shape[1]
    if C != cg * g or cout % g:
        raise ModelError(f"node '{layer.name}' (Conv): {C} input channels do not match the weights "
                         f"({cg} per group x {g} groups)")
    oh = (H + begin[0] + end[0] - (kernel[0] - 1) * dilations[0] - 1) // strides[0] + 1
    ow = (W_ + begin[1] + end[1] - (kernel[1] - 1) * dilations[1] - 1) // strides[1] + 1
    if oh < 1 or ow < 1:
        raise ModelError(f"node '{layer.name}' (Conv): the kernel does not fit the {H}x{W_} input")
    geometry = {"kernel": kernel, "strides": strides, "dilations": dilations, "pads_begin": begin,
                "pads_end": end, "group": g, "oh": oh, "ow": ow}
    return B * oh * ow, cg * kernel[0] * kernel[1], cout // g, g, geometry, (B, cout, oh, ow)


def requant_params(config, layer, K):
    """Per-output-channel (bias, mult, shift) and (zero point, clamp lo, clamp hi) in the
    NPU's int8 domain."""
    w = layer.weight.reshape(layer.weight.shape[0], -1).T if layer.op == "Conv" else layer.weight
    zx = layer.x.zero_point + layer.x.offset
    bias = layer.bias - zx * w.sum(axis=0)
    limit = 1 << (config.acc_width - 1)
    worst = int(np.abs(bias).max(initial=0)) + K * 128 * 128
    if worst >= limit:
        raise ModelError(f"node '{layer.name}' ({layer.op}): sums reach {worst}, beyond the "
                         f"{config.acc_width}-bit accumulators of this configuration")
    mult, shift = [], []
    for n, s in enumerate(layer.scale):
        try:
            m, sh = quantize_multiplier(float(s))
        except ValueError as e:
            raise ModelError(f"node '{layer.name}' ({layer.op}), output channel {n}: {e}") from None
        mult.append(m)
        shift.append(sh)
    off = layer.y.offset
    return bias, mult, shift, (layer.y.zero_point + off, layer.clamp[0] + off, layer.clamp[1] + off)


def compile_model(graph, config, input_shapes, *, trace=None):
    """Compile ``graph`` for ``config``; ``input_shapes``: graph input -> shape with the batch.

    ``trace``: layer name -> input shape, from :func:`npu.firmware.runtime.trace_shapes`
    (computed when omitted).
    """
    from .runtime import trace_shapes

    if config.data_width < 8:
        raise ModelError(f"this configuration has {config.data_width}-bit data; int8 models need "
                         f"data_width >= 8")
    if trace is None:
        trace = trace_shapes(graph, input_shapes)
    addr = MEMORY_BASE
    image, layers, programs = [], {}, []
    slot = 0
    for layer in graph.nodes:
        if not isinstance(layer, NpuLayer):
            continue
        in_shape = trace[layer.name]
        M, Kg, Ng, groups, geometry, out_shape = lower(layer, in_shape)
        per_pack = max(1, min(groups, config.cols // Ng)) if Ng < config.cols else 1
        packs, program = [], []
        bias, mult, shift, (zp, lo, hi) = requant_params(config, layer, Kg)
        for g0 in range(0, groups, per_pack):
            members = list(range(g0, min(groups, g0 + per_pack)))
            p = len(members)
            w = np.zeros((p * Kg, p * Ng), dtype=np.int64)
            for i, g in enumerate(members):
                if layer.op == "Conv":
                    wg = layer.weight[g * Ng:(g + 1) * Ng].reshape(Ng, Kg).T
                else:
                    wg = layer.weight
                w[i * Kg:(i + 1) * Kg, i * Ng:(i + 1) * Ng] = wg
            # Weights that obey the NPU's N:M pattern along K run as sparse tiles.
            sparse = config.sparse and fits_pattern(w, *config.sparse_nm)
            try:
                plan = GemmPlan(config, M, p * Kg, p * Ng, base=addr, sparse=sparse)
            except ValueError as e:
                raise ModelError(f"node '{layer.name}' ({layer.op}): {e}") from None
            addr = _align(plan.end)
            chans = slice(g0 * Ng, (g0 + p) * Ng)
            image += plan.weight_image(w, bias[chans], mult[chans], shift[chans], zp, lo, hi)
            packs.append(Pack(plan, members))
            program += plan.program
        program.append(End())
        layers[layer.name] = LayerPlan(layer.name, layer.op, packs, slot, slot + len(program),
                                       M * Kg * Ng * groups, tuple(in_shape), out_shape, geometry)
        programs += program
        slot += len(program)
    ring_base = _align(addr)
    ring = encode_program(programs)
    image.append((ring_base, ring))
    ring_slots = slot + 1          # one spare: a full ring would have tail == head
    if ring_slots > 1 << config.ring_bits:
        raise ModelError(f"the model compiles to {slot} instructions, more than this NPU's command ring holds "
                         f"(at most {(1 << config.ring_bits) - 1} with ring_bits = {config.ring_bits}); "
                         f"allowed: a smaller batch, or an NPU with a larger ring_bits")
    end = _align(ring_base + ring_slots * INSTRUCTION_BYTES, 256)
    batch = next(iter(input_shapes.values()))[0] if input_shapes else 1
    return CompiledModel(config, graph, batch, dict(input_shapes), layers, MEMORY_BASE, end - MEMORY_BASE,
                         ring_base, ring_slots, image)
