"""On-chip RAM behind a Wishbone B4 pipelined slave: the board's memory for the NPU's DMA.

:func:`ram_bus_signature` is the one definition of the port every board RAM offers
(this block RAM, or a vendor RAM such as the iCE40 SPRAM), so :class:`npu.boards.soc.BoardSoC`
takes any of them.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In
from amaranth.utils import ceil_log2

from . import wishbone

__all__ = ["WishboneRAM", "ram_bus_signature", "check_ram_size", "CollisionFreeReadPort"]


class CollisionFreeReadPort:
    """A synchronous read port (``addr``, ``en``, ``data`` one cycle after ``en``) of a
    memory whose user never reads an address in the cycle it is written.

    It reads like Amaranth's non-transparent ``read_port()`` in simulation, but is built as
    a combinational read and a register, on a memory marked ``no_rw_check``: Yosys then
    folds the register into the block RAM's read port without the read-during-write logic
    it otherwise adds (on an iCE40, a register per data bit and per address bit, and
    multiplexers: hundreds of logic cells on a wide memory). Make the memory with
    ``attrs=CollisionFreeReadPort.ATTRS``.
    """

    ATTRS = {"no_rw_check": 1}

    def __init__(self, m, memory, *, name):
        if memory.attrs.get("no_rw_check") != 1:
            raise ValueError(f"{name}: make the memory with attrs=CollisionFreeReadPort.ATTRS")
        port = memory.read_port(domain="comb")
        self.addr = port.addr
        self.en = Signal(name=f"{name}_en")
        self.data = Signal.like(port.data, name=f"{name}_data")
        with m.If(self.en):
            m.d.sync += self.data.eq(port.data)


def check_ram_size(size, data_width):
    """Raise a one-line ``ValueError`` unless ``size`` bytes of ``data_width``-bit words is a RAM we build."""
    if not isinstance(data_width, int) or data_width < 8 or data_width % 8 or data_width > 128:
        raise ValueError(f"data_width = {data_width!r} is invalid: must be a multiple of 8 from 8 to 128")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0 or size % (data_width // 8) \
            or size > 1 << 28:
        raise ValueError(f"size = {size!r} is invalid: must be a positive multiple of {data_width // 8} bytes "
                         f"(one {data_width}-bit word), at most 256 MiB")


def ram_bus_signature(*, size, data_width):
    """The Wishbone signature of a RAM of ``size`` bytes, seen from its master.

    ``adr`` is the word index (``data_width // 8`` bytes per word, little endian), ``sel``
    selects bytes, there is no ``err``. A RAM with this port (``In(ram_bus_signature(...))``,
    member name ``bus``) answers every accepted request exactly once, in order, and drops
    the requests it has not answered when ``cyc`` falls.
    """
    check_ram_size(size, data_width)
    return wishbone.Signature(addr_width=max(1, ceil_log2(size // (data_width // 8))), data_width=data_width,
                              with_err=False)


class WishboneRAM(wiring.Component):
    """Block RAM as a pipelined Wishbone slave: one access per cycle, answered in the next.

    Parameters
    ----------
    size : int
        Bytes, a multiple of the word size.
    data_width : int
        Word width in bits (the NPU's ``bus_width``).
    init : sequence of int, optional
        Initial words.

    Members
    -------
    bus : In(ram_bus_signature(size=size, data_width=data_width))
        ``stall`` is always low; ``ack`` follows each request by one cycle, carrying the
        read data. A write takes the bytes ``sel`` selects.
    """

    def __init__(self, *, size, data_width, init=()):
        try:
            signature = ram_bus_signature(size=size, data_width=data_width)
        except ValueError:
            self._MustUse__silence = True
            raise
        self.size = size
        self.data_width = data_width
        self.depth = size // (data_width // 8)
        self.init = list(init)
        super().__init__({"bus": In(signature)})

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        m.submodules.memory = memory = Memory(shape=self.data_width, depth=self.depth, init=self.init)
        wr = memory.write_port(granularity=8)
        rd = memory.read_port()
        request = bus.cyc & bus.stb
        ack = Signal()
        m.d.sync += ack.eq(request)
        m.d.comb += [
            rd.addr.eq(bus.adr), wr.addr.eq(bus.adr), wr.data.eq(bus.dat_w),
            wr.en.eq(bus.sel & (request & bus.we).replicate(len(bus.sel))),
            bus.dat_r.eq(rd.data), bus.ack.eq(ack), bus.stall.eq(0),
        ]
        return m
