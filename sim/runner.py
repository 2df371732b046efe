"""Generate a configuration's Verilog and run cocotb tests on it under Icarus Verilog.

Each configuration builds in its own directory (``build/sim/<key>``), so parameter sets
run in parallel without sharing anything. Set ``NPU_WAVES=1`` to record waveforms
(``npu.fst`` in the build directory) -- useful for a failing test.
"""

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..generators.verilog import generate

__all__ = ["SimulatorMissing", "build_dir_for", "run_cocotb", "repo_root"]


class SimulatorMissing(RuntimeError):
    """Icarus Verilog is not installed."""


def repo_root():
    """The project checkout (where ``build/`` lives), or the current directory."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def build_dir_for(config, tag=""):
    """A build directory unique to ``config`` (and ``tag``)."""
    key = hashlib.sha1(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    name = f"{config.rows}x{config.cols}_{key}" + (f"_{tag}" if tag else "")
    return repo_root() / "build" / "sim" / name


def run_cocotb(config, test_module, *, top="npu", soc=None, testcase=None, build_dir=None, extra_env=None,
               waves=None, result=False, quiet=False, platform=None, extra_sources=()):
    """Generate ``config``, build it with Icarus and run ``test_module``'s cocotb tests.

    ``top`` is the design to generate (``"npu"``, ``"datapath"``, or ``"soc"`` built with
    the keyword arguments ``soc``). Returns the JSON the tests wrote with :func:`npu.sim.testbench.write_result` when
    ``result`` is true (else None). Raises ``AssertionError`` if any test failed.
    With ``quiet``, the simulator's output goes to ``sim.log`` in the build directory.
    ``platform`` is passed to elaboration and ``extra_sources`` (e.g. vendor cell models)
    are compiled with the design.
    """
    from cocotb_tools.runner import get_results, get_runner

    if shutil.which("iverilog") is None:
        raise SimulatorMissing("Icarus Verilog (iverilog) is not installed: run 'make setup' "
                               "or 'apt-get install iverilog'")
    build_dir = Path(build_dir or build_dir_for(config))
    waves = os.environ.get("NPU_WAVES", "0") not in ("", "0") if waves is None else waves
    verilog_path, _ = generate(config, build_dir, top, soc, platform=platform)
    sources, build_args = [verilog_path, *extra_sources], []
    if waves:
        # cocotb's own dump module is SystemVerilog; this one works with -g2005 below.
        dump = build_dir / "npu_waves.v"
        dump.write_text(f'module npu_waves;\ninitial begin\n  $dumpfile("{build_dir / "npu.fst"}");\n'
                        f'  $dumpvars(0, {config.name});\nend\nendmodule\n')
        sources.append(dump)
        build_args += ["-s", "npu_waves"]
    runner = get_runner("icarus")
    runner.build(sources=sources, hdl_toplevel=config.name, build_dir=build_dir,
                 timescale=("1ns", "1ps"), always=True,
                 # Verilog-2005 semantics: declaration initialisers raise the time-zero
                 # events that wake the combinational always blocks Yosys writes; under
                 # -g2012 some never run and their outputs stay X.
                 build_args=["-g2005", *build_args])
    env = {"NPU_CONFIG": json.dumps(config.to_dict()), **(extra_env or {})}
    result_path = None
    if result:
        fd, result_path = tempfile.mkstemp(suffix=".json", dir=build_dir)
        os.close(fd)
        env["NPU_RESULT"] = result_path
    log_file = build_dir / "sim.log" if quiet else None
    try:
        results_xml = runner.test(test_module=test_module, hdl_toplevel=config.name, testcase=testcase,
                                  build_dir=build_dir, extra_env=env, waves=waves, timescale=("1ns", "1ps"),
                                  log_file=log_file)
    except SystemExit:      # the runner exits when a test failed and its log went to a file
        raise AssertionError(f"cocotb tests failed in {test_module} (log: {log_file or build_dir})") from None
    tests, failed = get_results(results_xml)
    if failed or not tests:
        raise AssertionError(f"{failed} of {tests} cocotb tests failed in {test_module} "
                             f"(log: {log_file or build_dir})")
    if result_path:
        with open(result_path) as f:
            text = f.read()
        os.unlink(result_path)
        return json.loads(text) if text else None
    return None
