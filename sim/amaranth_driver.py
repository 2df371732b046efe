"""Run a datapath program in Amaranth's own simulator (fast unit tests, no Verilog).

The same cycle-level protocol as the cocotb harness (:mod:`npu.sim.testbench`): one
program operation per cycle, output drained under random back-pressure, every wait
bounded.
"""

import random

from amaranth.sim import Simulator

from ..firmware.program import Barrier, pack
from ..hdl.datapath import Datapath

__all__ = ["run_program"]


def run_program(config, program, *, ready_probability=1.0, seed=0, max_cycles=100_000, vcd=None):
    """Simulate ``program`` on a fresh :class:`Datapath`; return ``(rows, perf)``."""
    dut = Datapath(config)
    rng = random.Random(seed)
    ports = {"cmd": dut.cmd, "act_wr": dut.act_wr, "wgt_wr": dut.wgt_wr, "param_wr": dut.param_wr}
    ops = [(op, None if isinstance(op, Barrier) else pack(config, op)) for op in program]
    rows, perf = [], {}
    w = config.data_width

    async def testbench(ctx):
        i = 0
        for _ in range(max_cycles):
            for stream in ports.values():
                ctx.set(stream.valid, 0)
            driven = None
            if i < len(ops) and ops[i][1] is not None:
                port, value = ops[i][1]
                ctx.set(ports[port].valid, 1)
                ctx.set(ports[port].payload.as_value(), value)
                driven = port
            ready = rng.random() < ready_probability
            ctx.set(dut.out.ready, ready)
            # Values settle before the edge: sample handshakes as the clock edge will see them.
            if ready and ctx.get(dut.out.valid):
                bits = ctx.get(dut.out.payload.as_value())
                rows.append([((bits >> (n * w)) & ((1 << w) - 1)) - ((bits >> (n * w + w - 1) & 1) << w)
                             for n in range(config.cols)])
            if driven == "cmd":
                i += bool(ctx.get(dut.cmd.ready))
            elif driven is not None:
                i += 1
            elif i < len(ops):
                i += bool(ctx.get(dut.idle))
            elif ctx.get(dut.idle):
                break
            await ctx.tick()
        else:
            raise AssertionError(f"no progress after {max_cycles} cycles (operation {i} of {len(ops)})")
        for name in ("active_cycles", "rows_issued", "weight_stall_cycles", "output_stall_cycles"):
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
