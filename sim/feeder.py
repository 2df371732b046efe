"""The cycle-level protocol for running a program on the datapath, shared by simulators.

Both the cocotb harness (:mod:`npu.sim.testbench`) and the Amaranth-simulator driver
(:mod:`npu.sim.amaranth_driver`) present one program operation per cycle: a buffer
write is taken at once (those ports are never back-pressured, but for ``param_wr`` with
the serial requantiser: when its ``ready`` is high), a command when ``cmd.ready`` is
high, and a :class:`~npu.firmware.program.Barrier` completes when the datapath is
``idle``. Only the signal access differs between the simulators.
"""

from ..firmware.program import Barrier, pack

__all__ = ["ProgramFeeder", "unpack_row"]


class ProgramFeeder:
    """Walks a program one operation per cycle."""

    def __init__(self, config, program):
        self.ops = [(op, None if isinstance(op, Barrier) else pack(config, op)) for op in program]
        self.index = 0

    def drive(self):
        """``(port, value)`` to present this cycle, or None (a barrier, or the program is done)."""
        if self.index < len(self.ops):
            return self.ops[self.index][1]
        return None

    def step(self, driven, *, cmd_ready, idle, param_ready=1):
        """Account for this cycle's handshakes; return True once every operation is done and idle."""
        if driven is not None:
            port = driven[0]
            if (port != "cmd" or cmd_ready) and (port != "param_wr" or param_ready):
                self.index += 1
            return False
        if self.index < len(self.ops):
            self.index += bool(idle)  # a Barrier
            return False
        return bool(idle)

    def where(self):
        """Where the program stands, for a timeout message."""
        if self.index < len(self.ops):
            return f"operation {self.index} of {len(self.ops)} ({self.ops[self.index][0]})"
        return "all operations issued, waiting for idle"


def unpack_row(config, bits):
    """Split an output-row payload into ``cols`` signed ``data_width``-bit integers."""
    w = config.data_width
    row = []
    for n in range(config.cols):
        v = (bits >> (n * w)) & ((1 << w) - 1)
        row.append(v - (1 << w) if v >> (w - 1) else v)
    return row
