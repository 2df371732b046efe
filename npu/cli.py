"""The ``npu`` command line: generate, inspect, run models, demo and benchmark the NPU.

Every user error (bad configuration, unreadable file, missing simulator) ends in one
line on stderr starting with ``error:`` and exit status 2; no traceback.
"""

import json
import sys
import time
from pathlib import Path

import click

from .generators.config import ConfigError, NPUConfig, load_config

EXIT_USAGE = 2


class UserError(click.ClickException):
    """A problem with the user's input: one line, exit status 2."""
    exit_code = EXIT_USAGE

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


def _step(message):
    click.echo(click.style("==> ", fg="cyan", bold=True) + message, err=True)


def config_options(command):
    """The ``--config`` file plus one override flag per parameter."""
    overrides = [
        click.option("--name", default=None, help="Verilog top-level module name."),
        click.option("--sparsity", default=None, help="'dense' or 'N:M' (e.g. 2:4, 1:4, 2:8): the sparse front end."),
        click.option("--bus-width", type=int, default=None, help="DMA Wishbone data width: 32, 64 or 128."),
        click.option("--requantiser", default=None, help="'pipelined' (a result per cycle) or 'serial' (small)."),
        click.option("--compute-queue", type=int, default=None, help="Compute queue entries: 2, 4, 8 or 16."),
        click.option("--dma-queue", type=int, default=None, help="DMA queue entries: 2, 4, 8 or 16."),
        click.option("--perf-counter-bits", type=int, default=None, help="Performance counter width, 32..48."),
        click.option("--register-slices/--no-register-slices", default=None,
                     help="Timing-cut register slices (on: 100 MHz ECP5; off: smaller)."),
        click.option("--ppu-lanes", type=int, default=None,
                     help="Requantisation lanes (divides cols; 0: one per column)."),
        click.option("--param-depth", type=int, default=None, help="Post-processing parameter entries."),
        click.option("--acc-depth", type=int, default=None, help="Entries per accumulator bank."),
        click.option("--wgt-depth", type=int, default=None, help="Weight buffer rows."),
        click.option("--act-depth", type=int, default=None, help="Entries per activation bank."),
        click.option("--acc-width", type=int, default=None, help="Accumulator width (bits)."),
        click.option("--data-width", type=int, default=None, help="Operand width (bits)."),
        click.option("--cols", type=int, default=None, help="Array columns (output channels at once)."),
        click.option("--rows", type=int, default=None, help="Array rows (reduction depth of a tile)."),
        click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                     default=None, help="TOML configuration (configs/default.toml when omitted)."),
    ]
    for option in overrides:
        command = option(command)
    return command


def resolve_config(config_path, **overrides):
    """Load the configuration; a problem becomes a one-line :class:`UserError`."""
    if config_path is None:
        default = Path("configs/default.toml")
        config_path = default if default.exists() else None
    try:
        return load_config(config_path, **overrides)
    except ConfigError as e:
        raise UserError(str(e)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="npu-gen", prog_name="npu")
def main():
    """Generate, simulate and benchmark a parameterised weight-stationary NPU."""


@main.command()
@config_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory for npu.v and npu.json (created if missing).")
def generate(config_path, out_dir, **overrides):
    """Write the NPU's Verilog (npu.v), manifest (npu.json) and register map (npu_regs.h,
    registers.md, npu_regs.py) to --out."""
    from .generators.regmap import FILES as regmap_files
    from .generators.verilog import generate as generate_files

    config = resolve_config(config_path, **overrides)
    started = time.monotonic()
    try:
        verilog_path, json_path = generate_files(config, out_dir)
    except OSError as e:
        raise UserError(f"cannot write to {out_dir}: {e.strerror or e}") from None
    click.echo(f"{config.rows}x{config.cols} NPU '{config.name}' ({config.macs_per_cycle} MACs/cycle) "
               f"generated in {time.monotonic() - started:.1f} s:")
    click.echo(f"  {verilog_path}  ({verilog_path.stat().st_size // 1024} KiB)")
    click.echo(f"  {json_path}")
    for name in regmap_files:
        click.echo(f"  {out_dir / name}")


@main.command()
@config_options
def info(config_path, **overrides):
    """Print the resolved configuration and derived figures as JSON."""
    from .generators.verilog import manifest

    config = resolve_config(config_path, **overrides)
    data = manifest(config)
    click.echo(json.dumps({k: data[k] for k in ("top_module", "config", "derived", "latencies")}, indent=2))


def _simulate(config, testcase, env, tag, *, module="npu.sim.tb_workloads", top="datapath"):
    from .sim.runner import SimulatorMissing, build_dir_for, run_cocotb

    try:
        return run_cocotb(config, module, top=top, testcase=testcase,
                          build_dir=build_dir_for(config, tag), extra_env=env, result=True, quiet=True)
    except SimulatorMissing as e:
        raise UserError(str(e)) from None
    except AssertionError as e:
        raise click.ClickException(f"simulation failed: {e}") from None


def _npu_gemm(config, M, K, N, *, seed=1, waits=(0, 0), stall=0.0, tag="gemm"):
    """Run the memory-to-memory GEMM program on the simulated NPU; the testbench's JSON."""
    env = {"NPU_GEMM": f"{M},{K},{N}", "NPU_SEED": str(seed), "NPU_WAITS": f"{waits[0]},{waits[1]}",
           "NPU_STALL": str(stall)}
    return _simulate(config, "gemm", env, tag, module="npu.sim.tb_npu", top="npu")


def _gemm_shape(text):
    try:
        M, K, N = (int(v) for v in text.split(","))
        if min(M, K, N) < 1:
            raise ValueError
    except ValueError:
        raise UserError(f"--gemm {text!r} is invalid: expected M,K,N with positive integers, e.g. 64,64,32") \
            from None
    return M, K, N


def _load_inputs(path, graph):
    """X.npy (one-input model) or X.npz (name -> array) as a dict; a one-line error if unreadable."""
    import numpy as np
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such input file")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:      # numpy raises several types for corrupt files
        raise UserError(f"{path}: not a readable .npy/.npz file ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else 'corrupt'})") from None
    if isinstance(data, np.ndarray):
        if len(graph.inputs) != 1:
            raise UserError(f"the model has {len(graph.inputs)} inputs "
                            f"({', '.join(n for n, _, _ in graph.inputs)}); give an .npz with one array each")
        return {graph.inputs[0][0]: data}
    return {name: data[name] for name in data.files}


def _save_outputs(path, outputs):
    """Y.npy (one output) or Y.npz, written whole or not at all."""
    import os
    import tempfile

    import numpy as np
    path = Path(path)
    if path.suffix == ".npz":
        writer = lambda f: np.savez(f, **outputs)      # noqa: E731
    elif len(outputs) == 1:
        writer = lambda f: np.save(f, next(iter(outputs.values())))      # noqa: E731
    else:
        raise UserError(f"the model has {len(outputs)} outputs ({', '.join(outputs)}); "
                        f"--output must be an .npz file")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load_model(model):
    from .firmware.onnx_import import ModelError, load_model
    try:
        return load_model(model)
    except ModelError as e:
        raise UserError(str(e)) from None


def _run_model(config, graph, inputs, backend, *, work_dir=None, **device):
    """Compile and run an imported model; user errors become one-line :class:`UserError`.
    ``device``: the serial backend's ``port`` and ``baud``."""
    from .firmware.onnx_import import ModelError
    from .firmware.runtime import Device, DeviceError
    from .sim.runner import SimulatorMissing

    try:
        npu_layers = graph.npu_layers()
        _step(f"Model '{graph.name}': {len(npu_layers)} NPU layers, "
              f"{len(graph.nodes) - len(npu_layers)} host nodes; running on the '{backend}' backend"
              + (" (generating the NPU and simulating it with Icarus Verilog)" if backend == "rtl" else "")
              + (f" (the board on {device.get('port')} at {device.get('baud')} baud)" if backend == "serial" else ""))
        started = time.monotonic()
        log = (lambda line: click.echo(f"    {line}", err=True)) if backend in ("rtl", "serial") else None
        result = Device(config, backend, work_dir=work_dir, log=log, **device).run(graph, inputs)
    except (ModelError, DeviceError, SimulatorMissing) as e:
        raise UserError(str(e)) from None
    return result, time.monotonic() - started


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--sparsity", required=True, help="The N:M pattern to prune to, e.g. 2:4 (what the NPU is "
              "generated with).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the pruned model (.onnx).")
def prune(model, sparsity, out_path):
    """Magnitude-prune a quantised model's Conv/MatMul/Gemm weights to N:M along K.

    On an NPU generated with the same sparsity, `npu run` then runs those layers as
    sparse tiles. Pruning changes the model's results: check its accuracy (and fine-tune
    if needed) before deploying it."""
    import onnx

    from .firmware.sparse import SparsityError, prune_model
    from .generators.config import parse_sparsity

    try:
        n, m = parse_sparsity(sparsity)
    except ConfigError as e:
        raise UserError(str(e).replace("sparsity =", "--sparsity", 1)) from None
    if not m:
        raise UserError(f"--sparsity {sparsity!r} is invalid: give an N:M pattern such as 2:4")
    try:
        proto = onnx.load(str(model))
    except FileNotFoundError:
        raise UserError(f"{model}: no such file") from None
    except Exception as e:      # onnx raises DecodeError and friends for a corrupt file
        raise UserError(f"{model}: not a readable ONNX model ({type(e).__name__})") from None
    try:
        pruned = prune_model(proto, n, m)
    except SparsityError as e:
        raise UserError(f"{model}: {e}") from None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(out_path)
    for name, K, N, kept in pruned:
        click.echo(f"  {name}: K={K} x N={N}, {100 * kept:.1f}% of the weights non-zero")
    click.echo(f"pruned {len(pruned)} weight tensors to {sparsity} -> {out_path}")


def _run_config(config_path, board_name):
    """--config if given, else the default configuration of --board, else configs/default.toml."""
    if config_path is not None or board_name is None:
        return resolve_config(config_path)
    try:
        from .boards.platforms import board_config
    except ImportError as e:
        raise UserError(f"--board needs npu.boards.platforms, which does not import here ({e}); "
                        f"pass the board's --config instead") from None
    try:
        return board_config(board_name)
    except ConfigError as e:
        raise UserError(str(e)) from None


def _serial_options(backend, port, baud):
    """The serial backend's port and baud rate; a one-line error if --port is missing or misplaced."""
    if backend != "serial":
        if port or baud:
            raise UserError("--port and --baud are for --backend serial")
        return {}
    if not port:
        raise UserError("--backend serial needs --port: the board's serial device, e.g. /dev/ttyUSB1")
    if baud is None:
        try:
            from .boards.top import DEFAULT_BAUD as baud
        except ImportError:
            baud = 1_000_000
    if baud <= 0:
        raise UserError(f"--baud {baud} is invalid: must be a positive integer")
    return {"port": port, "baud": baud}


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--input", "input_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="X.npy: B samples stacked, shape (B, *model input shape); X.npz for several inputs.")
@click.option("--output", "output_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Y.npy (or .npz): shape (B, *model output shape); float32 when the model's output is float.")
@click.option("--backend", type=click.Choice(["golden", "rtl", "serial"]), default="golden", show_default=True,
              help="golden: the NumPy model of the NPU; rtl: the generated Verilog under Icarus; serial: an FPGA "
                   "board over its USB-UART (--port).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TOML configuration (configs/default.toml when omitted; the board's with --board).")
@click.option("--board", "board_name", default=None,
              help="The board the bitstream was built for (its default configuration unless --config).")
@click.option("--port", default=None, help="--backend serial: the board's serial device, e.g. /dev/ttyUSB1.")
@click.option("--baud", type=int, default=None, help="--backend serial: the bitstream's baud rate (default: the "
              "board build's default).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write report.json and report.png (per-layer cycles and utilisation) here.")
def run(model, input_path, output_path, backend, config_path, board_name, port, baud, report_dir):
    """Run an int8 ONNX model (quantised by onnxruntime's quantize_static) on the NPU."""
    from .firmware.report import layer_table, write_report

    config = _run_config(config_path, board_name)
    device = _serial_options(backend, port, baud)
    graph = _load_model(model)
    inputs = _load_inputs(input_path, graph)
    result, seconds = _run_model(config, graph, inputs, backend, **device)
    _save_outputs(output_path, result.outputs)
    for line in layer_table(result):
        click.echo(line)
    shapes = ", ".join(f"{name} {tuple(y.shape)} {y.dtype}" for name, y in result.outputs.items())
    click.echo(f"batch {result.batch} on the {config.rows}x{config.cols} NPU ({backend}, {seconds:.1f} s): "
               f"{shapes} -> {output_path}")
    if result.total_cycles is not None:
        click.echo(f"  {result.total_cycles} NPU cycles, {result.total_macs} MACs, "
                   f"{100 * result.utilisation():.1f}% of {config.macs_per_cycle} MACs/cycle")
    if report_dir:
        paths = write_report(result, report_dir)
        click.echo("  report: " + ", ".join(str(p) for p in paths))


@main.command()
@config_options
@click.option("--backend", type=click.Choice(["golden", "rtl"]), default="rtl", show_default=True)
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("build/demo"), show_default=True, help="Where report.json and report.png go.")
def demo(config_path, backend, report_dir, **overrides):
    """Run the bundled int8 digits classifier on 100 held-out images on the simulated NPU:
    accuracy, agreement with ONNX Runtime, cycles, utilisation."""
    import numpy as np

    from .firmware.models.make_digits import MODEL, held_out
    from .firmware.reference import agreement, ort_run, output_step
    from .firmware.report import layer_table, write_report

    config = resolve_config(config_path, **overrides)
    x, labels = held_out()
    graph = _load_model(MODEL)
    result, seconds = _run_model(config, graph, x, backend)
    logits = result.outputs[graph.outputs[0][0]]
    predicted = logits.reshape(len(labels), -1).argmax(axis=1)
    _step("Running the same model and images on ONNX Runtime (the reference)")
    ref = ort_run(MODEL, x, graph)[graph.outputs[0][0]]
    agree = agreement(logits, ref, output_step(graph, graph.outputs[0][0]), len(labels))
    paths = write_report(result, report_dir)
    for line in layer_table(result):
        click.echo(line)
    click.echo(f"digits classifier ({MODEL.name}), {len(labels)} held-out images, batch {result.batch}, "
               f"{backend} backend on the {config.rows}x{config.cols} NPU ({seconds:.1f} s):")
    click.echo(f"  accuracy      {100 * np.mean(predicted == labels):.1f}% against the labels")
    click.echo(f"  vs ONNX Rt    {100 * agree['identical']:.1f}% of {agree['elements']} outputs identical, "
               f"{100 * agree['within_one_step']:.1f}% within one step, "
               f"argmax agrees on {100 * agree['argmax_agreement']:.1f}% of images")
    if result.total_cycles is not None:
        click.echo(f"  cycles        {result.total_cycles} NPU cycles for the batch "
                   f"({result.total_cycles / len(labels):.1f} per image), {result.total_macs} MACs")
        click.echo(f"  utilisation   {100 * result.utilisation():.1f}% of {config.macs_per_cycle} MACs/cycle")
    click.echo(f"  report        {paths[0]} and {paths[1]}")


BENCHMARKS = ("model", "datapath", "gemm", "sparse", "sequential", "generation")

#: Sparse GEMM runs: (label, sparsity, bus width, target cycles / dense cycles).
SPARSE_RUNS = (("2of4", "2:4", 32, 0.55), ("1of4", "1:4", 64, 0.30))


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("build/bench"),
              show_default=True, help="Directory for the JSON results.")
@click.option("--rows-per-tile", type=int, default=256, show_default=True, help="M: rows per weight tile.")
@click.option("--gemm", default="256,256,256", show_default=True, help="Memory-to-memory GEMM shape M,K,N.")
@click.option("--only", type=click.Choice(BENCHMARKS), multiple=True,
              help="Run only these benchmarks (repeatable); all by default.")
def bench(out_dir, rows_per_tile, gemm, only):
    """Benchmarks (JSON in --out): the demo model end to end on the RTL, the 8x8 datapath's
    streaming utilisation, a memory-to-memory GEMM on the default NPU with zero-wait and with
    random-wait memory, the same GEMM with 2:4 and 1:4 sparse weights (and the sparse front
    end's ECP5 cost), sequential against overlapped dispatch on the iCEBreaker's NPU,
    generation time."""
    gemm_shape = _gemm_shape(gemm)
    only = set(only) or set(BENCHMARKS)
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    if "model" in only and not _bench_model(out_dir):
        failed.append("model")
    if "datapath" in only and not _bench_datapath(out_dir, rows_per_tile):
        failed.append("datapath")
    if "gemm" in only and not _bench_gemm(out_dir, gemm_shape):
        failed.append("gemm")
    if "sparse" in only and not _bench_sparse(out_dir, gemm_shape):
        failed.append("sparse")
    if "sequential" in only and not _bench_sequential(out_dir):
        failed.append("sequential")
    if "generation" in only and not _bench_generation(out_dir):
        failed.append("generation")
    if failed:
        raise click.ClickException(f"benchmark below target: {', '.join(failed)}")


def _bench_sparse(out_dir, gemm_shape):
    """The GEMM of _bench_gemm with N:M weights on sparse 8x8 NPUs, against the dense GEMM on
    the default NPU (cycles from the NPU's counter), and the front end's ECP5 cost."""
    from .generators.synth import SynthesisError, synthesise
    from .generators.verilog import generate as generate_files

    M, K, N = gemm_shape
    dense = NPUConfig()
    gemm_json = out_dir / "npu_gemm.json"
    previous = json.loads(gemm_json.read_text()) if gemm_json.exists() else {}
    if previous.get("gemm") == {"M": M, "K": K, "N": N} and "zero_wait" in previous:
        dense_run = previous["zero_wait"]
        click.echo(f"Dense reference: {gemm_json} ({dense_run['counters']['cycles']} cycles)")
    else:
        _step(f"Dense reference: NPU GEMM {M}x{K}x{N} on the default {dense.rows}x{dense.cols} NPU, zero-wait memory")
        dense_run = _npu_gemm(dense, M, K, N, tag="bench-zero_wait")
    dense_cycles = dense_run["counters"]["cycles"]
    runs, ok = {}, True
    for label, sparsity, bus, target in SPARSE_RUNS:
        config = NPUConfig(sparsity=sparsity, bus_width=bus)
        _step(f"Sparse GEMM {M}x{K}x{N}, {sparsity} weights, on the {config.rows}x{config.cols} NPU with "
              f"sparsity = {sparsity!r} and a {bus}-bit bus, zero-wait memory")
        started = time.monotonic()
        env = {"NPU_GEMM": f"{M},{K},{N}", "NPU_SEED": "1", "NPU_WAITS": "0,0", "NPU_STALL": "0",
               "NPU_SPARSE": "1"}
        run = _simulate(config, "gemm", env, f"bench-sparse-{label}", module="npu.sim.tb_npu", top="npu")
        run["simulation_seconds"] = round(time.monotonic() - started, 1)
        cycles = run["counters"]["cycles"]
        run["cycles_vs_dense"] = cycles / dense_cycles
        run["target_cycles_vs_dense"] = f"<= {target}"
        run["effective_macs_per_cycle"] = run["useful_macs"] / cycles
        run["pass"] = run["cycles_vs_dense"] <= target and run["mismatches"] == 0
        ok &= run["pass"]
        runs[label] = run
        click.echo(f"  {cycles} cycles = {run['cycles_vs_dense']:.3f}x the dense GEMM's {dense_cycles} "
                   f"(target <= {target}); {run['effective_macs_per_cycle']:.1f} dense-equivalent MACs/cycle "
                   f"on 64 multipliers; {run['mismatches']} mismatches")
    cost = {}
    try:
        for label, config in (("dense", dense), *((lab, NPUConfig(sparsity=sp)) for lab, sp, _, _ in SPARSE_RUNS)):
            _step(f"ECP5 synthesis (Yosys synth_ecp5) of the {config.rows}x{config.cols} NPU, sparsity = "
                  f"{config.sparsity!r}, 32-bit bus: a few minutes")
            verilog, _ = generate_files(config, out_dir / f"synth_{label}")
            cost[label] = synthesise(verilog, config.name, out_dir / f"synth_{label}", family="ecp5")
            click.echo(f"  {cost[label]['luts']} LUT4, {cost[label]['ffs']} FFs, {cost[label]['dsps']} MULT18X18D "
                       f"({cost[label]['seconds']} s)")
        for label, *_ in SPARSE_RUNS:
            cost[f"{label}_minus_dense"] = {k: cost[label][k] - cost["dense"][k] for k in ("luts", "ffs", "dsps")}
    except SynthesisError as e:
        click.echo(f"  ECP5 synthesis skipped: {e}", err=True)
        cost["error"] = str(e)
        ok = False
    result = {
        "gemm": {"M": M, "K": K, "N": N},
        "dense": {"config": dense.to_dict(), "cycles": dense_cycles, "counters": dense_run["counters"]},
        "sparse": runs,
        "fpga_cost_ecp5": cost,
        "note": "cycles: the NPU's cycle counter from START to END, loads, computes, stores and command fetch "
                "included; sparse weights are random N:M with all-zero groups and edge non-zeros; the 1:4 run "
                "uses a 64-bit bus because its activation entries are 4x wider (32 bytes per row); the ECP5 "
                "cost compares whole NPUs (default buffers, 32-bit bus), Yosys synth_ecp5 cell counts",
        "pass": ok,
    }
    path = out_dir / "sparse_gemm.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(f"  -> {path}")
    return ok


def _bench_model(out_dir):
    """The demo model (100 digits, one batch) on the default NPU's RTL: cycles and utilisation."""
    import numpy as np

    from .firmware.models.make_digits import MODEL, held_out
    from .firmware.runtime import Device

    config = NPUConfig()
    x, labels = held_out()
    _step(f"Demo model {MODEL.name}: {len(labels)} images as one batch on the RTL of the default "
          f"{config.rows}x{config.cols} NPU")
    graph = _load_model(MODEL)
    golden = Device(config, "golden").run(graph, x)
    result, seconds = _run_model(config, graph, x, "rtl")
    out = graph.outputs[0][0]
    identical = bool(np.array_equal(result.outputs[out], golden.outputs[out]))
    report = result.report()
    data = {
        "model": MODEL.name, "images": len(labels), "batch": result.batch, "config": config.to_dict(),
        "total_cycles": result.total_cycles, "cycles_per_image": result.total_cycles / len(labels),
        "macs": result.total_macs, "mac_utilisation": result.utilisation(),
        "accuracy": float(np.mean(result.outputs[out].reshape(len(labels), -1).argmax(1) == labels)),
        "rtl_equals_golden": identical, "simulation_seconds": round(seconds, 1),
        "note": "NPU cycles from START to the END interrupt of each layer's program, summed; host nodes "
                "(quantise, dequantise) are not NPU cycles",
        "layers": report["layers"],
    }
    path = out_dir / "demo_model.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    click.echo(f"  {data['total_cycles']} cycles ({data['cycles_per_image']:.1f} per image), "
               f"{100 * data['mac_utilisation']:.1f}% MAC utilisation, rtl == golden: {identical}\n  -> {path}")
    return identical


def _bench_datapath(out_dir, rows_per_tile):
    M = rows_per_tile
    # 8x8 array; buffers deep enough to hold the whole GEMM resident (4 K x 2 N tiles).
    config = NPUConfig(rows=8, cols=8, act_depth=max(512, 4 * M), acc_depth=max(512, 2 * M))
    K, N = 4 * config.rows, 2 * config.cols
    _step(f"Streaming benchmark: {config.rows}x{config.cols} array, {M} rows per weight tile, "
          f"{(K // config.rows) * (N // config.cols)} consecutive weight tiles")
    result = _simulate(config, "streaming_benchmark", {"NPU_GEMM": f"{M},{K},{N}"}, "bench")
    result["targets"] = {"mac_utilisation_streaming": ">= 0.95", "stall_cycles_between_tiles": "== 0"}
    result["pass"] = result["mac_utilisation_streaming"] >= 0.95 and result["stall_cycles_between_tiles"] == 0
    path = out_dir / "datapath_streaming.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(f"MAC utilisation while streaming {100 * result['mac_utilisation_streaming']:.2f}% "
               f"({result['useful_macs']} MACs in {result['issue_span_cycles']} cycles), "
               f"{result['stall_cycles_between_tiles']} stall cycles between {result['gemm']['weight_tiles']} "
               f"tiles; compute phase incl. first weight load and drain "
               f"{100 * result['mac_utilisation_compute_phase']:.2f}%")
    click.echo(f"  -> {path}")
    return result["pass"]


def _bench_gemm(out_dir, gemm_shape):
    M, K, N = gemm_shape
    default = NPUConfig()
    runs = {}
    for label, waits, stall in (("zero_wait", (0, 0), 0.0), ("random_wait", (0, 15), 0.2)):
        _step(f"NPU GEMM {M}x{K}x{N} from memory to memory on the default {default.rows}x{default.cols} NPU, "
              f"{label.replace('_', '-')} memory (wait states {waits[0]}..{waits[1]}, stall probability {stall})")
        started = time.monotonic()
        run = _npu_gemm(default, M, K, N, waits=waits, stall=stall, tag=f"bench-{label}")
        run["simulation_seconds"] = round(time.monotonic() - started, 1)
        c = run["counters"]
        run["mac_utilisation_counters"] = c["macs"] / (c["cycles"] * default.macs_per_cycle)
        runs[label] = run
        click.echo(f"  {c['cycles']} cycles, {100 * run['mac_utilisation']:.2f}% of peak "
                   f"({run['useful_macs']} useful MACs; counters: {c['macs']} MACs in {c['cycles']} cycles), "
                   f"{run['mismatches']} mismatches")
    gemm_result = {
        "gemm": {"M": M, "K": K, "N": N},
        "target": "zero-wait mac_utilisation >= 0.90 (loads, compute, stores, command fetch included)",
        "pass": runs["zero_wait"]["mac_utilisation"] >= 0.90,
        **runs,
    }
    gemm_path = out_dir / "npu_gemm.json"
    gemm_path.write_text(json.dumps(gemm_result, indent=2) + "\n")
    click.echo(f"  -> {gemm_path}")
    return gemm_result["pass"]


#: The small-device GEMM (the iCEBreaker's 4x4 NPU; 256x256x256 would take an hour of Icarus).
SEQUENTIAL_GEMM = (64, 64, 64)
#: Sequential dispatch's cycles may be at most this many times overlapped dispatch's.
SEQUENTIAL_TARGET = 1.5


def _bench_sequential(out_dir):
    """The cost of sequential dispatch in cycles: a GEMM on the iCEBreaker's default NPU
    (sequential dispatch) and on the same NPU with overlapped dispatch (2-entry queues)."""
    from .boards.platforms import board_config
    M, K, N = SEQUENTIAL_GEMM
    runs = {}
    for label, config in (("sequential", board_config("icebreaker")),
                          ("overlapped", board_config("icebreaker", dispatch="overlapped", compute_queue=2,
                                                      dma_queue=2))):
        _step(f"NPU GEMM {M}x{K}x{N} on the iCEBreaker's {config.rows}x{config.cols} NPU with {label} dispatch, "
              f"zero-wait memory")
        started = time.monotonic()
        run = _npu_gemm(config, M, K, N, tag=f"bench-{label}")
        run["simulation_seconds"] = round(time.monotonic() - started, 1)
        run["config"] = config.to_dict()
        runs[label] = run
        click.echo(f"  {run['counters']['cycles']} cycles, {100 * run['mac_utilisation']:.2f}% of peak, "
                   f"{run['mismatches']} mismatches")
    ratio = runs["sequential"]["counters"]["cycles"] / runs["overlapped"]["counters"]["cycles"]
    result = {
        "gemm": {"M": M, "K": K, "N": N},
        "sequential_vs_overlapped_cycles": ratio,
        "target": f"sequential cycles <= {SEQUENTIAL_TARGET} x overlapped, no mismatches",
        "pass": ratio <= SEQUENTIAL_TARGET and all(r["mismatches"] == 0 for r in runs.values()),
        **runs,
    }
    path = out_dir / "sequential.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(f"  sequential dispatch takes {ratio:.2f}x the cycles of overlapped dispatch "
               f"(target <= {SEQUENTIAL_TARGET})\n  -> {path}")
    return result["pass"]


def _bench_generation(out_dir):
    from .generators.verilog import generate as generate_files

    timings = {}
    for rows, cols in ((8, 8), (16, 16)):
        _step(f"Generation time: {rows}x{cols}")
        started = time.monotonic()
        verilog_path, _ = generate_files(NPUConfig(rows=rows, cols=cols), out_dir / f"gen_{rows}x{cols}")
        timings[f"{rows}x{cols}"] = {"seconds": round(time.monotonic() - started, 2),
                                     "verilog_bytes": verilog_path.stat().st_size}
    gen_path = out_dir / "generation.json"
    gen_path.write_text(json.dumps({"generation": timings, "target": "16x16 < 10 s"}, indent=2) + "\n")
    click.echo("Generation: " + ", ".join(f"{k} in {v['seconds']} s" for k, v in timings.items())
               + f"\n  -> {gen_path}")
    return timings["16x16"]["seconds"] < 10


# --- Boards -------------------------------------------------------------------------


def _board_or_fail(name):
    from .boards.platforms import board
    try:
        return board(name)
    except ConfigError as e:
        raise UserError(str(e)) from None


def _board_config(name, config_path, overrides):
    """The board's default NPU, or ``--config`` (with overrides)."""
    from .boards.platforms import board_config
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        if config_path is None:
            return board_config(name, **overrides)
        return load_config(config_path, **overrides)
    except (ConfigError, TypeError) as e:
        raise UserError(str(e)) from None


def _board_choice():
    from .boards.platforms import board_names
    return click.Choice(board_names())


def _pnr_choices():
    """click choices of nextpnr's placers and routers, Yosys' LUT mappings and DSP placements."""
    from .boards.platforms import DSP_PLACEMENTS, MAPPINGS, PLACERS, ROUTERS
    return click.Choice(PLACERS), click.Choice(ROUTERS), click.Choice(tuple(MAPPINGS)), click.Choice(DSP_PLACEMENTS)


@main.command()
def boards():
    """List the supported boards and their default NPUs."""
    from .boards.platforms import BOARDS, board_config
    for b in BOARDS.values():
        c = board_config(b.name)
        click.echo(f"{b.name:12} {b.device:14} NPU {c.rows}x{c.cols} ({c.macs_per_cycle} MACs/cycle) at "
                   f"{b.clk_hz / 1e6:g} MHz, {b.ram_bytes // 1024} KiB {b.ram}, nextpnr {b.placer}/{b.router}"
                   f"{f' (up to {b.seeds} seeds)' if b.seeds > 1 else ''}, LUT mapping for {b.mapping}, "
                   f"DSP placement: {b.dsp_placement}  "
                   f"{b.description}")


@main.command()
@click.option("--board", "board_name", required=True, type=_board_choice(), help="The board to build for.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Build directory [default: build/boards/BOARD].")
@click.option("--baud", type=int, default=None, help="Host link baud rate [default: 1000000].")
@click.option("--clock-mhz", type=click.FloatRange(min=1, min_open=False), default=None,
              help="NPU clock the PLL makes and place-and-route aims for [default: the board's target].")
@click.option("--pnr-minutes", type=click.IntRange(min=0), default=None,
              help="Stop place-and-route after this many minutes (0: no limit) [default: 60].")
@click.option("--placer", type=_pnr_choices()[0], default=None,
              help="nextpnr's placer [default: the board's, see 'npu boards'].")
@click.option("--router", type=_pnr_choices()[1], default=None,
              help="nextpnr's router [default: the board's].")
@click.option("--seed", type=click.IntRange(min=1), default=1, show_default=True,
              help="nextpnr's placement seed (Fmax moves from seed to seed).")
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="Seeds to try (--seed and the next ones) until one meets timing; the fastest is kept "
                   "[default: the board's, see 'npu boards'].")
@click.option("--mapping", type=_pnr_choices()[2], default=None,
              help="How Yosys maps logic to LUTs: fewest LUTs (area) or fewest levels (delay, 15% "
                   "more logic cells on the 85F) [default: the board's, see 'npu boards'].")
@click.option("--dsp-placement", type=_pnr_choices()[3], default=None,
              help="Where the array's DSP blocks go: pinned in array order (array; devices whose sites "
                   "are known) or the placer's choice (placer) [default: the board's, see 'npu boards'].")
@config_options
def build(board_name, out_dir, baud, clock_mhz, pnr_minutes, placer, router, seed, seeds, mapping, dsp_placement,
          config_path, **overrides):
    """Build a bitstream for a dev board (Yosys + nextpnr) and write report.json.

    Without --config the board's default NPU (sized to its device) is built.
    """
    from .boards.build import PNR_MINUTES, BuildError, build_board
    _board_or_fail(board_name)
    config = _board_config(board_name, config_path, overrides)
    out_dir = out_dir or Path("build") / "boards" / board_name
    try:
        report = build_board(board_name, config, out_dir, baud=baud, echo=lambda line: click.echo(line, err=True),
                             clk_hz=None if clock_mhz is None else round(clock_mhz * 1e6),
                             pnr_minutes=PNR_MINUTES if pnr_minutes is None else pnr_minutes,
                             placer=placer, router=router, seed=seed, seeds=seeds, mapping=mapping,
                             dsp_placement=dsp_placement)
    except (BuildError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"bitstream: {report['bitstream']}\nreport: {Path(out_dir) / 'report.json'}")


@main.command()
@click.option("--board", "board_name", required=True, type=_board_choice(), help="The board to program.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The build directory of 'npu build' [default: build/boards/BOARD].")
@click.option("--force", is_flag=True, help="Flash a bitstream that misses timing at its clock.")
def flash(board_name, out_dir, force):
    """Program a board with the bitstream 'npu build' made (iceprog / openFPGALoader)."""
    from .boards.flash import FlashError, flash_board
    board = _board_or_fail(board_name)
    out_dir = out_dir or Path("build") / "boards" / board_name
    try:
        flash_board(board, out_dir, echo=lambda line: click.echo(line, err=True), force=force)
    except FlashError as e:
        raise UserError(str(e)) from None
    click.echo(f"{board_name}: programmed")


@main.command("fpga-report")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("build/boards"),
              show_default=True, help="Where the board builds go.")
@click.option("--board", "board_names", multiple=True, type=_board_choice(),
              help="Boards to build (repeatable) [default: all].")
@click.option("--no-build", is_flag=True, help="Only print the table of the existing reports.")
@click.option("--pnr-minutes", type=click.IntRange(min=0), default=None,
              help="Stop each board's place-and-route after this many minutes (0: no limit) [default: 60].")
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="nextpnr seeds to try per board until one meets timing [default: each board's].")
def fpga_report(out_dir, board_names, no_build, pnr_minutes, seeds):
    """Build every supported board's default NPU and print one table of the reports."""
    from .boards.build import PNR_MINUTES, BuildError, build_board, read_report
    from .boards.platforms import board_names as all_boards
    names = list(board_names) or all_boards()
    reports, failed = [], []
    for name in names:
        if not no_build:
            _step(f"{name}")
            try:
                build_board(name, None, out_dir / name, echo=lambda line: click.echo(line, err=True),
                            pnr_minutes=PNR_MINUTES if pnr_minutes is None else pnr_minutes, seeds=seeds)
            except BuildError as e:
                click.echo(f"  {name}: {e}", err=True)
                failed.append(name)
        try:
            reports.append(read_report(out_dir / name))
        except BuildError as e:
            click.echo(f"  {name}: {e}", err=True)
    click.echo(report_table(reports))
    (out_dir).mkdir(parents=True, exist_ok=True)
    (out_dir / "fpga_report.json").write_text(json.dumps(reports, indent=2) + "\n")
    click.echo(f"-> {out_dir / 'fpga_report.json'}")


def report_table(reports):
    """One text table of board build reports."""
    head = ["board", "device", "NPU", "MACs/cyc", "logic used/avail", "FF", "DSP", "BRAM", "SPRAM",
            "Fmax MHz", "target", "GMAC/s", "fits", "routed"]
    rows = []
    for r in reports:
        res = r["resources"]
        cfg = r["config"]["array"]

        def used(key):
            v = res.get(key)
            return f"{v['used']}/{v['available']}" if v and v.get("available") else (str(v["used"]) if v else "-")
        clock = r["clock"]
        rows.append([r["board"], r["device"], f"{cfg['rows']}x{cfg['cols']}", str(r["macs_per_cycle"]),
                     used("logic_cells") if "logic_cells" in res else used("luts"),
                     str(res.get("ffs", {}).get("used", "-")),
                     used("dsp"), used("block_ram"), used("spram"),
                     f"{clock['fmax_mhz']:.1f}" if clock["fmax_mhz"] else "-", f"{clock['target_mhz']:g}",
                     f"{r['peak_gmacs']:.2f}" if r.get("peak_gmacs") else "-",
                     "yes" if r["fits"] else "NO",
                     "yes" if r.get("routed", r["clock"]["fmax_mhz"] is not None) else "NO"])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in [head, *rows]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


if __name__ == "__main__":
    sys.exit(main())
