"""ONNX Runtime as the independent numerical reference, and the agreement figures.

The numerical contract (``docs/firmware.md``): against ONNX Runtime on the same model
and input, every output element is within one quantisation step, at least 99% are
identical, and the argmax (last axis) agrees on at least 99% of samples.
"""

import numpy as np

from .onnx_import import Graph

__all__ = ["ort_run", "output_step", "agreement"]


def ort_run(model_path, inputs, graph):
    """ONNX Runtime's outputs (default session options) for ``inputs`` shaped like
    :meth:`npu.firmware.runtime.Device.run` takes them: B samples on a new first axis
    (or the short form). Returns name -> array in the same form."""
    import onnxruntime as ort
    from .runtime import batch_inputs, unbatch_outputs

    if not isinstance(inputs, dict):
        inputs = {graph.inputs[0][0]: inputs}
    feeds, batch, short = batch_inputs(graph, inputs)
    session = _session(ort, model_path)
    names = [name for name, _, _ in graph.outputs]
    fixed = any(shape and shape[0] is not None for _, shape, _ in graph.inputs)
    if not fixed:
        outs = session.run(names, feeds)
    else:       # one sample (the model's declared shape) at a time
        per = {name: x.shape[0] // batch for name, x in feeds.items()}
        runs = [session.run(names, {name: x[i * per[name]:(i + 1) * per[name]] for name, x in feeds.items()})
                for i in range(batch)]
        outs = [np.concatenate([r[k] for r in runs]) for k in range(len(names))]
    return unbatch_outputs(graph, dict(zip(names, outs)), batch, short)


def _session(ort, model_path):
    """An exact ONNX Runtime session for ``model_path``.

    x86 CPUs with AVX2 or AVX-512 but no VNNI multiply uint8 x int8 with an instruction
    that saturates pairs of products at 16 bits (ONNX Runtime's fast default), so the
    reference would differ from ONNX's integer semantics by many steps. The session option
    ``session.x64quantprecision`` makes ONNX Runtime compute those products as uint8 x
    uint8, exactly. Some int8 x int8 operators (com.microsoft.QGemm) have no kernel in that
    form; they never took the saturating path, so they run with the default options.
    """
    def session(exact):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if exact:
            options.add_session_config_entry("session.x64quantprecision", "1")
        return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])

    try:
        return session(exact=True)
    except Exception as e:       # onnxruntime's NotImplemented has no importable class
        if "NOT_IMPLEMENTED" not in str(e):
            raise
    return session(exact=False)


def output_step(graph: Graph, name):
    """One quantisation step of a graph output: the scale of the DequantizeLinear that
    produces it, 1 for an integer output, None when it is not quantised."""
    for n in graph.nodes:
        if name in n.outputs:
            if getattr(n, "op", None) == "DequantizeLinear":
                scale = np.asarray(graph.consts.get(n.inputs[1], np.nan))
                return float(scale.reshape(-1)[0]) if scale.size == 1 else None
            break
    dtype = dict((o, d) for o, _, d in graph.outputs)[name]
    return 1.0 if np.dtype(dtype).kind in "iu" else None


def agreement(ours, ref, step, batch):
    """Element and argmax agreement of two (B, ...) outputs."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if ours.shape != ref.shape:
        raise ValueError(f"output shapes differ: {ours.shape} and {ref.shape}")
    diff = np.abs(ours - ref)
    steps = diff / step if step else diff
    a = ours.reshape(batch, -1, ours.shape[-1]) if ours.ndim > 1 else ours.reshape(batch, 1, -1)
    b = ref.reshape(a.shape)
    return {
        "elements": int(ours.size),
        "identical": float(np.mean(diff == 0)),
        "within_one_step": float(np.mean(steps <= 1 + 1e-6)) if step else None,
        "max_steps": float(steps.max(initial=0)) if step else None,
        "max_abs_diff": float(diff.max(initial=0)),
        "argmax_agreement": float(np.mean(np.all(a.argmax(-1) == b.argmax(-1), axis=-1))),
    }
