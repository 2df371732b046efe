"""Wishbone B4 bus signatures (amaranth-soc is not released on PyPI, so these are ours).

Signal names follow the Wishbone B4 specification in lower case; ``adr`` is a word
address. Pipelined mode: a request is accepted in a cycle with ``cyc & stb & ~stall``,
and every accepted request is answered, in order, by exactly one cycle of ``ack`` or
``err``. A master may drop ``cyc`` to abandon the requests it is waiting for.
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Signature"]


class Signature(wiring.Signature):
    """A Wishbone B4 pipelined bus, seen from the master (flip it for a slave)."""

    def __init__(self, *, addr_width, data_width, with_err=True):
        self.addr_width = addr_width
        self.data_width = data_width
        members = {
            "cyc":   Out(1),
            "stb":   Out(1),
            "we":    Out(1),
            "adr":   Out(addr_width),
            "dat_w": Out(data_width),
            "sel":   Out(data_width // 8),
            "dat_r": In(data_width),
            "ack":   In(1),
            "stall": In(1),
        }
        if with_err:
            members["err"] = In(1)
        super().__init__(members)

    def __eq__(self, other):
        return (isinstance(other, Signature) and other.addr_width == self.addr_width
                and other.data_width == self.data_width and other.members == self.members)

    def __repr__(self):
        return f"wishbone.Signature(addr_width={self.addr_width}, data_width={self.data_width})"
