"""cocotb harness for the generated datapath Verilog (runs inside the simulator).

:class:`DatapathTB` owns the clock, reset, the drivers of the buffer-write and command
streams and the monitor of the output stream. :meth:`DatapathTB.run` executes a
program (:mod:`npu.firmware.program`) exactly as written, one operation per cycle,
while the output stream is drained under a configurable random back-pressure, and
returns the output rows and cycle counts. Every wait is bounded: a hang fails the test.
"""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from ..generators.config import NPUConfig
from ..hdl.datapath import PERF_COUNTERS
from .feeder import ProgramFeeder, unpack_row

__all__ = ["DatapathTB", "config_from_env", "write_result"]


class SimulationTimeout(AssertionError):
    """The design did not reach the expected state within the cycle budget (a hang)."""


def config_from_env():
    """The :class:`NPUConfig` the runner passed in ``NPU_CONFIG`` (JSON)."""
    return NPUConfig.from_dict(json.loads(os.environ["NPU_CONFIG"]), source="NPU_CONFIG")


def write_result(data):
    """Write a JSON result for the caller (bench, demo) if it asked for one in ``NPU_RESULT``."""
    path = os.environ.get("NPU_RESULT")
    if path:
        with open(path, "w") as f:
            json.dump(data, f, indent=2)


class DatapathTB:
    """Testbench for one :class:`npu.hdl.datapath.Datapath` instance.

    Parameters
    ----------
    dut : cocotb handle of the top level.
    config : NPUConfig
        The configuration the Verilog was generated from.
    seed : int
        Seed of the back-pressure pattern.
    """

    def __init__(self, dut, config, *, seed=0):
        self.dut = dut
        self.config = config
        self.rng = random.Random(seed)
        self.cycle = 0
        self._ports = {name: (getattr(dut, f"{name}__valid"), getattr(dut, f"{name}__payload"))
                       for name in ("cmd", "act_wr", "wgt_wr", "param_wr")}

    async def reset(self):
        """Start the clock and hold reset for a few cycles."""
        cocotb.start_soon(Clock(self.dut.clk, 10, unit="ns").start())
        self.dut.rst.value = 1
        for valid, payload in self._ports.values():
            valid.value = 0
            payload.value = 0
        self.dut.out__ready.value = 0
        for _ in range(3):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0

    def perf(self):
        """Current values of the performance counters."""
        return {name: int(getattr(self.dut, f"perf_{name}").value) for name in PERF_COUNTERS}

    async def run(self, program, *, ready_probability=1.0, max_cycles=None, trace=None):
        """Execute ``program``; return ``(rows, info)``.

        ``rows`` are the output rows in order. ``info`` has ``cycles`` (from the first
        operation to idle), ``first_issue``/``last_issue`` (cycles, counted from the
        start of this run, at which ``perf_rows_issued`` first and last rose) and the
        performance counters.
        ``trace``, if given, is called every cycle with ``(cycle, tb)``.
        """
        dut = self.dut
        feeder = ProgramFeeder(self.config, program)
        if max_cycles is None:
            max_cycles = 2000 + 20 * len(program) + 4 * sum(getattr(op, "count", 0) for op in program) \
                + 60 * (self.config.rows + self.config.cols)
        rows, start = [], self.cycle
        first_issue = last_issue = None
        issued_before = int(dut.perf_rows_issued.value)
        while True:
            await FallingEdge(dut.clk)
            self.cycle += 1
            if self.cycle - start > max_cycles:
                raise SimulationTimeout(f"no progress after {max_cycles} cycles: {feeder.where()}, "
                                        f"{len(rows)} rows out")
            for valid, _ in self._ports.values():
                valid.value = 0
            driven = feeder.drive()
            if driven is not None:
                valid, payload = self._ports[driven[0]]
                valid.value = 1
                payload.value = driven[1]
            ready = self.rng.random() < ready_probability
            dut.out__ready.value = int(ready)
            await ReadOnly()
            if ready and int(dut.out__valid.value):
                rows.append(unpack_row(self.config, int(dut.out__payload.value)))
            issued = int(dut.perf_rows_issued.value)
            if issued != issued_before:
                first_issue = self.cycle - start if first_issue is None else first_issue
                last_issue = self.cycle - start
                issued_before = issued
            if trace is not None:
                trace(self.cycle, self)
            if feeder.step(driven, cmd_ready=int(dut.cmd__ready.value), idle=int(dut.idle.value),
                           param_ready=int(dut.param_wr__ready.value)):
                break
        await FallingEdge(dut.clk)
        self.cycle += 1
        for valid, _ in self._ports.values():
            valid.value = 0
        return rows, {"cycles": self.cycle - start, "first_issue": first_issue, "last_issue": last_issue,
                      **self.perf()}
