"""The ``npu`` command line: generate, inspect, demo and benchmark the NPU.

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
        click.option("--sparsity", default=None, help="'dense' (N:M comes with the sparse front end)."),
        click.option("--bus-width", type=int, default=None, help="DMA Wishbone data width: 32, 64 or 128."),
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


@main.command()
@config_options
@click.option("--gemm", default="64,64,32", show_default=True, help="GEMM shape M,K,N.")
@click.option("--seed", type=int, default=1, show_default=True, help="Random operands seed.")
def demo(config_path, gemm, seed, **overrides):
    """Generate the NPU and run an int8 GEMM on the simulated RTL (Icarus), driven like a host:
    the program and operands in memory, registers, DMA, interrupt."""
    config = resolve_config(config_path, **overrides)
    M, K, N = _gemm_shape(gemm)
    _step(f"Generating the {config.rows}x{config.cols} NPU and building it with Icarus Verilog")
    _step(f"Running a {M}x{K} @ {K}x{N} int8 GEMM (bias, requantisation) from memory to memory on the RTL")
    started = time.monotonic()
    result = _npu_gemm(config, M, K, N, seed=seed, tag="demo")
    counters = result["counters"]
    click.echo(f"GEMM {M}x{K}x{N} on the {config.rows}x{config.cols} NPU "
               f"({time.monotonic() - started:.1f} s of simulation, {result['instructions']} instructions):")
    click.echo(f"  results       {result['elements']} int8 values, {result['mismatches']} differ from the "
               f"reference (the golden model's memory image matched byte for byte)")
    click.echo(f"  cycles        {counters['cycles']} from START to the END interrupt "
               f"(DMA busy {counters['dma_busy']}, array busy {counters['array_busy']})")
    click.echo(f"  utilisation   {100 * result['mac_utilisation']:.1f}% of {config.macs_per_cycle} MACs/cycle end to "
               f"end ({result['useful_macs']} useful MACs), loads, stores and instruction fetch included")
    click.echo(f"  memory        {counters['bytes_read']} bytes read, {counters['bytes_written']} written")


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("build/bench"),
              show_default=True, help="Directory for the JSON results.")
@click.option("--rows-per-tile", type=int, default=256, show_default=True, help="M: rows per weight tile.")
@click.option("--gemm", default="256,256,256", show_default=True, help="Memory-to-memory GEMM shape M,K,N.")
def bench(out_dir, rows_per_tile, gemm):
    """Benchmarks (JSON in --out): the 8x8 datapath's streaming utilisation, a memory-to-memory
    GEMM on the default NPU with zero-wait and with random-wait memory, generation time."""
    M = rows_per_tile
    # 8x8 array; buffers deep enough to hold the whole GEMM resident (4 K x 2 N tiles).
    config = NPUConfig(rows=8, cols=8, act_depth=max(512, 4 * M), acc_depth=max(512, 2 * M))
    K, N = 4 * config.rows, 2 * config.cols
    _step(f"Streaming benchmark: {config.rows}x{config.cols} array, {M} rows per weight tile, "
          f"{(K // config.rows) * (N // config.cols)} consecutive weight tiles")
    result = _simulate(config, "streaming_benchmark", {"NPU_GEMM": f"{M},{K},{N}"}, "bench")
    result["targets"] = {"mac_utilisation_streaming": ">= 0.95", "stall_cycles_between_tiles": "== 0"}
    result["pass"] = result["mac_utilisation_streaming"] >= 0.95 and result["stall_cycles_between_tiles"] == 0
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "datapath_streaming.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(f"MAC utilisation while streaming {100 * result['mac_utilisation_streaming']:.2f}% "
               f"({result['useful_macs']} MACs in {result['issue_span_cycles']} cycles), "
               f"{result['stall_cycles_between_tiles']} stall cycles between {result['gemm']['weight_tiles']} "
               f"tiles; compute phase incl. first weight load and drain "
               f"{100 * result['mac_utilisation_compute_phase']:.2f}%")
    click.echo(f"  -> {path}")

    M, K, N = _gemm_shape(gemm)
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
    if not result["pass"] or not gemm_result["pass"] or timings["16x16"]["seconds"] >= 10:
        raise click.ClickException("benchmark below target")


if __name__ == "__main__":
    sys.exit(main())
