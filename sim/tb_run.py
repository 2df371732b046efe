"""cocotb test that runs a compiled model on the generated NPU (the runtime's ``rtl`` backend).

:class:`npu.firmware.runtime.Device` writes a job (the compiled model and its input
feeds, pickled) and names it in ``NPU_JOB``; this test builds the memory the model was
compiled for, attaches it to the NPU's DMA master, configures the ring and the DMA
window through the registers, and runs :func:`npu.firmware.runtime.execute` with a
:class:`SimDriver`: per layer, RING_HEAD/RING_TAIL, CTRL.START, wait for the interrupt,
check STATUS, read the performance counters. The outputs and per-layer figures go to
``NPU_JOB_OUT``; on failure, the error text does.
"""

import os
import pickle

import cocotb

from ..firmware.runtime import DeviceError, execute, npu_error_text
from .host import SimHost


class SimDriver:
    """The simulated NPU behind :func:`execute`: backdoor memory, registers for control."""

    name = "rtl"

    def __init__(self, host, compiled):
        self.host = host
        self.head = 0
        # A cycle budget per program (by its first slot): generous, but a hang still fails.
        peak = compiled.config.macs_per_cycle
        self.budget = {layer.first_slot: 64 * (sum(p.plan.macs for p in layer.packs) // peak)
                       + 20 * layer.instructions + 100_000 for layer in compiled.layers.values()}

    def write(self, addr, data):
        self.host.memory.write(addr, data)

    def read(self, addr, n):
        return self.host.memory.read(addr, n)

    async def run(self, first, tail):
        host = self.host
        if first != self.head:
            await host.write("RING_HEAD", first)
        status = await host.run(tail, timeout_cycles=self.budget[first])
        await host.ack_irq()
        if status["error"] or not status["done"]:
            raise DeviceError(npu_error_text(status["error_code"], status["error_cmd"], status["error_addr"]))
        self.head = status["ring_head"]
        counters = await host.counters()
        return {"cycles": counters["cycles"], "counters": counters}


@cocotb.test()
async def run_model(dut):
    """Run the job in NPU_JOB; write outputs and per-layer figures to NPU_JOB_OUT."""
    with open(os.environ["NPU_JOB"], "rb") as f:
        job = pickle.load(f)
    compiled = job["compiled"]
    host = SimHost(dut, compiled.config, compiled.new_memory())
    await host.start()
    await host.configure(ring_base=compiled.ring_base, ring_size=compiled.ring_slots, window=compiled.window)
    layers, done = len(compiled.layers), []

    def progress(stats):
        if stats.where != "npu":
            return
        done.append(stats)
        with open(os.environ["NPU_JOB_PROGRESS"], "a") as f:
            f.write(f"layer {len(done)}/{layers} {stats.name} ({stats.op}): {stats.cycles} cycles, "
                    f"{stats.macs} MACs\n")

    try:
        outputs, stats = await execute(compiled, job["feeds"], SimDriver(host, compiled), progress)
    except Exception as e:
        with open(os.environ["NPU_JOB_OUT"], "wb") as f:
            pickle.dump({"error": f"{type(e).__name__}: {e}"}, f)
        raise
    assert not host.bus.violations, f"bus protocol violations: {host.bus.violations[:3]}"
    with open(os.environ["NPU_JOB_OUT"], "wb") as f:
        pickle.dump({"outputs": outputs, "stats": stats}, f)
