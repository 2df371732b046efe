"""Run compiled models: one :class:`Device` API, interchangeable backends.

* ``golden``: the NumPy functional model of the NPU (:class:`npu.sim.golden.NPUModel`)
  executes the programs from its memory image. No timing: cycles are not reported.
* ``rtl``: the generated Verilog of the configuration under Icarus Verilog (cocotb),
  attached to a simulated memory and driven through its registers exactly as a driver
  would: program ring, RING_TAIL, CTRL.START, wait for the interrupt, read the status
  and the performance counters.
* ``serial``: an FPGA board running the NPU (``npu build``/``npu flash``), reached over
  its USB-UART through the host protocol (:mod:`npu.firmware.hostlink`): the model is
  loaded into the board's RAM, and each layer's program is started and polled there.

Both run the same :func:`execute` loop over the graph: for an NPU layer it writes the
layer's activations (im2col rows for a convolution) into memory, runs the layer's
program, and reads the result; host nodes run in NumPy in between. The only
difference is the *driver* under it, so the same program gives the same bytes on
every backend.
"""

import inspect
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .hostops import HOST_OPS, im2col
from .onnx_import import Graph, ModelError, NpuLayer, load_model

__all__ = ["Device", "DeviceError", "npu_error_text", "RunResult", "execute", "trace_shapes", "GoldenDriver",
           "BACKENDS", "batch_inputs", "unbatch_outputs"]

BACKENDS = ("golden", "rtl", "serial")


class DeviceError(RuntimeError):
    """The NPU reported an error (or did not finish) while running a program."""


def npu_error_text(code, slot, addr, who="NPU"):
    """One line for an error status: STATUS.ERROR_CODE, ERROR_CMD (ring slot), ERROR_ADDR."""
    from ..hdl.isa import ErrorCode
    name = ErrorCode(code).name if code in ErrorCode._value2member_map_ else "UNKNOWN"
    return f"the {who} stopped with error {name} (code {code}) at ring slot {slot}, address {addr:#x}"


# -- graph execution -------------------------------------------------------------------

def _host_node(node, tensors, consts):
    args = []
    for name in node.inputs:
        if not name:
            args.append(None)
        elif name in tensors:
            args.append(tensors[name])
        elif name in consts:
            args.append(np.asarray(consts[name]))
        else:
            raise ModelError(f"node '{node.name}' ({node.op}): input '{name}' is not computed by any node")
    while args and args[-1] is None:
        args.pop()
    try:
        outs = HOST_OPS[node.op](args, node.attrs)
    except (ValueError, IndexError, KeyError, TypeError, NotImplementedError) as e:
        raise ModelError(f"node '{node.name}' ({node.op}) failed on the host: {e}") from None
    for name, value in zip(node.outputs, outs):
        tensors[name] = np.asarray(value)


def trace_shapes(graph, input_shapes):
    """Each NPU layer's input shape for these graph input shapes (host nodes run on zeros)."""
    tensors = {}
    for name, _, dtype in graph.inputs:
        tensors[name] = np.zeros(input_shapes[name], dtype=dtype)
    shapes = {}
    from .compiler import lower
    for node in graph.nodes:
        if isinstance(node, NpuLayer):
            shape = tensors[node.input].shape
            shapes[node.name] = shape
            out_shape = lower(node, shape)[-1]
            tensors[node.output] = np.full(out_shape, node.y.zero_point, dtype=node.y.dtype)
        else:
            _host_node(node, tensors, graph.consts)
    return shapes


@dataclass
class LayerStats:
    name: str
    op: str
    where: str
    macs: int = 0
    cycles: int = None
    counters: dict = None
    instructions: int = 0
    in_shape: tuple = None
    out_shape: tuple = None
    fused: list = field(default_factory=list)
    note: str = ""


def _pack_rows(layer, plan, x):
    """Each GEMM's A (M x K) for this layer's int8-domain input ``x``."""
    g = plan.geometry
    if layer.op != "Conv":
        return [x.reshape(-1, x.shape[-1])]
    out = []
    zx = layer.x.zero_point + layer.x.offset          # padding is the zero point (real 0.0)
    cg = layer.weight.shape[1]
    for pack in plan.packs:
        g0, p = pack.groups[0], len(pack.groups)
        cols, _ = im2col(x[:, g0 * cg:(g0 + p) * cg], g["kernel"], g["strides"], g["pads_begin"],
                         g["pads_end"], g["dilations"], zx)
        out.append(cols)
    return out


async def _maybe_await(value):
    """A driver's write/read may be plain (a simulated memory) or a coroutine (a board link)."""
    return await value if inspect.isawaitable(value) else value


async def _run_layer(compiled, layer, driver, tensors):
    plan = compiled.layers[layer.name]
    x = tensors[layer.input]
    if np.dtype(x.dtype).name != layer.x.dtype:
        raise ModelError(f"node '{layer.name}' ({layer.op}): input is {x.dtype}, expected {layer.x.dtype}")
    if tuple(x.shape) != plan.in_shape:
        raise ModelError(f"node '{layer.name}' ({layer.op}): input shape {x.shape} differs from the "
                         f"compiled {plan.in_shape}")
    xd = x.astype(np.int64) + layer.x.offset
    for pack, a in zip(plan.packs, _pack_rows(layer, plan, xd)):
        for addr, data in pack.plan.act_image(a):
            await _maybe_await(driver.write(addr, data))
    result = await driver.run(plan.first_slot, plan.tail_slot)
    parts = []
    for pack in plan.packs:
        y = pack.plan.y                             # the result region read_result reads
        data = await _maybe_await(driver.read(y.base, y.size))
        parts.append(pack.plan.read_result(lambda addr, n: data[addr - y.base:addr - y.base + n]))
    y = np.concatenate(parts, axis=1) - layer.y.offset
    if layer.op == "Conv":
        B, N, oh, ow = plan.out_shape
        y = y.reshape(B, oh, ow, N).transpose(0, 3, 1, 2)
    else:
        y = y.reshape(plan.out_shape)
    tensors[layer.output] = np.ascontiguousarray(y).astype(layer.y.dtype)
    return result


def _layer_note(config, node, plan):
    notes = [f"{config.sparsity} sparse tiles"] if plan.sparse else []
    if node.op == "Conv":
        notes.append("im2col on the host")
    return "; ".join(notes)


async def execute(compiled, feeds, driver, progress=None):
    """Run the compiled graph on ``driver``; return (graph outputs, [LayerStats]).
    ``progress(stats)`` is called after each node."""
    graph = compiled.graph
    tensors = dict(feeds)
    stats = []
    for node in graph.nodes:
        if isinstance(node, NpuLayer):
            plan = compiled.layers[node.name]
            result = await _run_layer(compiled, node, driver, tensors)
            stats.append(LayerStats(node.name, node.op, "npu", plan.macs, result.get("cycles"),
                                    result.get("counters"), plan.instructions, plan.in_shape, plan.out_shape,
                                    node.fused, _layer_note(compiled.config, node, plan)))
        else:
            _host_node(node, tensors, graph.consts)
            shape = tuple(tensors[node.outputs[0]].shape) if node.outputs else None
            stats.append(LayerStats(node.name, node.op, "host", out_shape=shape, note=node.note))
        if progress:
            progress(stats[-1])
    return {name: tensors[name] for name, _, _ in graph.outputs}, stats


class GoldenDriver:
    """The functional model as the NPU: memory, ring and window as the compiled model says."""

    name = "golden"

    def __init__(self, compiled):
        from ..sim.golden import NPUModel
        self.memory = compiled.new_memory()
        m = self.model = NPUModel(compiled.config, self.memory)
        m.ring_base, m.ring_size = compiled.ring_base, compiled.ring_slots
        m.window_base, m.window_limit = compiled.window

    def write(self, addr, data):
        self.memory.write(addr, data)

    def read(self, addr, n):
        return self.memory.read(addr, n)

    async def run(self, first, tail):
        m = self.model
        m.head, m.tail = first, tail
        m.clear_counters()
        state = m.run()
        if state != "done":
            raise DeviceError(npu_error_text(int(m.error_code), m.error_cmd, m.error_addr, "golden model"))
        return {"cycles": None, "counters": dict(m.counters)}


# -- batching ----------------------------------------------------------------------------

def _shape_text(shape):
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


def batch_inputs(graph, arrays):
    """Stack B samples per input: ``arrays[name].shape == (B, *input_shape)`` (a symbolic
    dimension takes any size; a leading 1 may also be left out: ``(B, *input_shape[1:])``).
    Returns (feeds for the graph with the B samples along axis 0, B, whether the short form
    was used)."""
    feeds, batch, short = {}, None, False
    for name, shape, dtype in graph.inputs:
        if name not in arrays:
            raise ModelError(f"no data for model input '{name}' (inputs: "
                             f"{', '.join(n for n, _, _ in graph.inputs)})")
        x = np.asarray(arrays[name])
        if x.dtype != np.dtype(dtype):
            raise ModelError(f"input '{name}' has dtype {x.dtype}; the model takes {dtype}")
        full = len(shape) + 1
        if x.ndim == full and all(s is None or s == d for s, d in zip(shape, x.shape[1:])):
            b = x.shape[0]
            x = x.reshape((b * x.shape[1],) + x.shape[2:]) if shape else x
        elif shape and shape[0] in (1, None) and x.ndim == len(shape) and \
                all(s is None or s == d for s, d in zip(shape[1:], x.shape[1:])):
            b, short = x.shape[0], True
        else:
            raise ModelError(f"input '{name}' has shape {tuple(x.shape)}; the model takes "
                             f"{_shape_text(shape)} per sample, so it must be (B, {_shape_text(shape)[1:]}")
        if b < 1:
            raise ModelError(f"input '{name}' holds no samples (batch of 0)")
        if batch not in (None, b):
            raise ModelError(f"inputs hold different numbers of samples ({batch} and {b})")
        batch = b
        feeds[name] = np.ascontiguousarray(x)
    return feeds, batch, short


def unbatch_outputs(graph, outputs, batch, short):
    """Graph outputs back to ``(B, *output_shape)`` (or the short form, like the input)."""
    out = {}
    for name, shape, _ in graph.outputs:
        y = outputs[name]
        out[name] = y if short else y.reshape((batch, y.shape[0] // batch) + y.shape[1:])
    return out


# -- the device --------------------------------------------------------------------------

@dataclass
class RunResult:
    outputs: dict            #: graph output name -> array (B, *output shape)
    layers: list             #: [LayerStats] in execution order
    backend: str
    config: object
    batch: int
    model: str

    @property
    def total_cycles(self):
        cycles = [s.cycles for s in self.layers if s.where == "npu"]
        return None if any(c is None for c in cycles) else sum(cycles)

    @property
    def total_macs(self):
        return sum(s.macs for s in self.layers)

    def utilisation(self):
        t = self.total_cycles
        return None if not t else self.total_macs / (t * self.config.macs_per_cycle)

    def report(self):
        """The ``report.json`` content: totals and one entry per node, where it ran."""
        peak = self.config.macs_per_cycle
        layers = []
        for s in self.layers:
            entry = {"name": s.name, "op": s.op, "where": s.where}
            if s.where == "npu":
                entry.update(cycles=s.cycles, macs=s.macs, instructions=s.instructions,
                             utilisation=(s.macs / (s.cycles * peak)) if s.cycles else None,
                             input_shape=list(s.in_shape), output_shape=list(s.out_shape),
                             fused=s.fused, counters=s.counters)
            else:
                entry.update(cycles=0, macs=0, output_shape=list(s.out_shape) if s.out_shape else None)
            if s.note:
                entry["note"] = s.note
            layers.append(entry)
        return {"model": self.model, "backend": self.backend, "config": self.config.to_dict(),
                "batch": self.batch, "total_cycles": self.total_cycles, "total_macs": self.total_macs,
                "macs_per_cycle": peak, "utilisation": self.utilisation(),
                "npu_layers": sum(1 for s in self.layers if s.where == "npu"),
                "host_nodes": sum(1 for s in self.layers if s.where == "host"), "layers": layers}


class Device:
    """An NPU of configuration ``config`` reached through ``backend``.

    >>> dev = Device(config, backend="golden")
    >>> result = dev.run("model.onnx", {"image": x})     # x: (B, *input shape)
    >>> result.outputs["probabilities"], result.total_cycles
    """

    def __init__(self, config, backend="golden", *, work_dir=None, log=None, port=None, baud=1_000_000):
        """``log(line)``: progress lines while the rtl or serial backend runs (one per NPU layer).
        ``port``, ``baud``: the board's serial port for the ``serial`` backend."""
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r} is not one of: {', '.join(BACKENDS)}")
        if backend == "serial" and not port:
            raise ValueError("backend 'serial' needs port= (the board's serial device, e.g. /dev/ttyUSB1)")
        self.config = config
        self.backend = backend
        self.work_dir = work_dir
        self.log = log
        self.port = port
        self.baud = baud

    def compile(self, model, feeds):
        from .compiler import compile_model
        graph = model if isinstance(model, Graph) else load_model(model)
        return compile_model(graph, self.config, {k: v.shape for k, v in feeds.items()})

    def run(self, model, inputs):
        """Run ``model`` (path or imported :class:`Graph`) on ``inputs`` (name -> array, or
        one array for a one-input model), B samples stacked on a new first axis."""
        graph = model if isinstance(model, Graph) else load_model(model)
        if not isinstance(inputs, dict):
            if len(graph.inputs) != 1:
                raise ModelError(f"the model has {len(graph.inputs)} inputs; pass a dict name -> array")
            inputs = {graph.inputs[0][0]: inputs}
        feeds, batch, short = batch_inputs(graph, inputs)
        compiled = self.compile(graph, feeds)
        if self.backend == "golden":
            import asyncio
            outputs, stats = asyncio.run(execute(compiled, feeds, GoldenDriver(compiled)))
        elif self.backend == "serial":
            outputs, stats = self._run_serial(compiled, feeds)
        else:
            outputs, stats = self._run_rtl(compiled, feeds)
        return RunResult(unbatch_outputs(graph, outputs, batch, short), stats, self.backend, self.config,
                         batch, graph.name)

    def _run_serial(self, compiled, feeds):
        """Load the model into the board's RAM over the link and run it there."""
        import asyncio

        from .hostlink import BoardDriver, HostLink, SerialTransport
        layers, done = len(compiled.layers), []

        def progress(stats):
            if stats.where == "npu" and self.log:
                done.append(stats)
                self.log(f"layer {len(done)}/{layers} {stats.name} ({stats.op}): {stats.cycles} cycles, "
                         f"{stats.macs} MACs")

        async def go(transport):
            driver = BoardDriver(HostLink(transport), compiled)
            info = await driver.load()
            if self.log:
                self.log(f"board on {transport.name}: {info.clk_hz / 1e6:g} MHz, {info.ram_size // 1024} KiB RAM; "
                         f"model loaded ({sum(len(data) for _, data in compiled.image)} bytes)")
            return await execute(compiled, feeds, driver, progress)

        transport = SerialTransport(self.port, self.baud)
        try:
            return asyncio.run(go(transport))
        finally:
            transport.close()

    def _run_rtl(self, compiled, feeds):
        from ..sim.runner import build_dir_for, run_cocotb
        build = Path(self.work_dir) if self.work_dir else build_dir_for(self.config, tag="run")
        build.mkdir(parents=True, exist_ok=True)
        fd, job = tempfile.mkstemp(suffix=".job", dir=build)
        os.close(fd)
        out, progress = job + ".out", job + ".progress"
        watcher = _ProgressWatcher(progress, self.log) if self.log else None
        try:
            with open(job, "wb") as f:
                pickle.dump({"compiled": compiled, "feeds": feeds}, f)
            try:
                run_cocotb(self.config, "npu.sim.tb_run", top="npu", build_dir=build, quiet=True,
                           extra_env={"NPU_JOB": job, "NPU_JOB_OUT": out, "NPU_JOB_PROGRESS": progress})
            except AssertionError:
                detail = ""
                if os.path.exists(out):
                    with open(out, "rb") as f:
                        detail = pickle.load(f).get("error", "")
                raise DeviceError(detail or f"the RTL simulation failed (log: {build / 'sim.log'})") from None
            with open(out, "rb") as f:
                result = pickle.load(f)
        finally:
            if watcher:
                watcher.stop()
            for path in (job, out, progress):
                if os.path.exists(path):
                    os.unlink(path)
        return result["outputs"], result["stats"]


class _ProgressWatcher:
    """Pass the lines the simulation appends to ``path`` to ``log`` while it runs."""

    def __init__(self, path, log):
        import threading
        self.path, self.log, self.done, self.seen = path, log, threading.Event(), 0
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _poll(self):
        try:
            with open(self.path) as f:
                lines = f.read().splitlines()
        except OSError:
            return
        for line in lines[self.seen:]:
            self.log(line)
        self.seen = len(lines)

    def _watch(self):
        while not self.done.wait(0.5):
            self._poll()

    def stop(self):
        self.done.set()
        self.thread.join()
        self._poll()
