"""Run a datapath program in Amaranth's own simulator (fast unit tests, no Verilog).

The same cycle-level protocol as the cocotb harness (:mod:`npu.sim.testbench`): one
program operation per cycle, output drained under random back-pressure, every wait
bounded.
"""

import random

from amaranth.sim import Simulator

from ..hdl.datapath import PERF_COUNTERS, Datapath
from .feeder import ProgramFeeder, unpack_row

__all__ = ["run_program"]


def run_program(config, program, *, ready_probability=1.0, seed=0, max_cycles=100_000, vcd=None):
    """Simulate ``program`` on a fresh :class:`Datapath`; return ``(rows, perf)``."""
    dut = Datapath(config)
    rng = random.Random(seed)
    ports = {"cmd": dut.cmd, "act_wr": dut.act_wr, "wgt_wr": dut.wgt_wr, "param_wr": dut.param_wr}
    feeder = ProgramFeeder(config, program)
    rows, perf = [], {}

    async def testbench(ctx):
        for _ in range(max_cycles):
            for stream in ports.values():
                ctx.set(stream.valid, 0)
            driven = feeder.drive()
            if driven is not None:
                ctx.set(ports[driven[0]].valid, 1)
                ctx.set(ports[driven[0]].payload.as_value(), driven[1])
            ready = rng.random() < ready_probability
            ctx.set(dut.out.ready, ready)
            # Values settle before the edge: sample handshakes as the clock edge will see them.
            if ready and ctx.get(dut.out.valid):
                rows.append(unpack_row(config, ctx.get(dut.out.payload.as_value())))
            if feeder.step(driven, cmd_ready=ctx.get(dut.cmd.ready), idle=ctx.get(dut.idle),
                           param_ready=ctx.get(dut.param_wr.ready)):
                break
            await ctx.tick()
        else:
            raise AssertionError(f"no progress after {max_cycles} cycles: {feeder.where()}")
        for name in PERF_COUNTERS:
            perf[name] = ctx.get(getattr(dut, f"perf_{name}"))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return rows, perf
