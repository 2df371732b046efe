"""The iCE40UP5K's single-port RAMs (SB_SPRAM256KA) as the board memory behind the DMA.

Each SB_SPRAM256KA is 16384 x 16 bits with a write mask per nibble. ``data_width / 16``
of them side by side make one word; up to 4 / (data_width / 16) such banks stack in
depth (the UP5K has four: 128 KiB). Same port as :class:`npu.hdl.ram.WishboneRAM`
(:func:`npu.hdl.ram.ram_bus_signature`), so the board SoC takes either.
"""

from amaranth.hdl import Cat, ClockSignal, Instance, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from ..hdl.ram import WishboneRAM, ram_bus_signature

__all__ = ["ICE40SPRAM", "SPRAM_BYTES", "SPRAM_BLOCKS"]

#: Bytes of one SB_SPRAM256KA, and how many the iCE40UP5K has.
SPRAM_BYTES = 32 * 1024
SPRAM_BLOCKS = 4
_WORDS = 16384


class ICE40SPRAM(wiring.Component):
    """``size`` bytes of SPRAM as a pipelined Wishbone slave (one access per cycle).

    Outside an iCE40 build (``platform`` is None, as in simulation) it elaborates as a
    :class:`~npu.hdl.ram.WishboneRAM` of the same size and timing, so the board top
    level simulates with Icarus as it is.
    """

    def __init__(self, *, size, data_width):
        width_blocks = data_width // 16
        if data_width % 16 or size % (SPRAM_BYTES * width_blocks) or size > SPRAM_BYTES * SPRAM_BLOCKS:
            self._MustUse__silence = True
            raise ValueError(f"SPRAM of {size} bytes at {data_width} bits is invalid: the size must be a multiple "
                             f"of {SPRAM_BYTES * width_blocks} bytes and at most {SPRAM_BYTES * SPRAM_BLOCKS}")
        self.size = size
        self.data_width = data_width
        super().__init__({"bus": In(ram_bus_signature(size=size, data_width=data_width))})

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        if platform is None:
            m.submodules.ram = ram = WishboneRAM(size=self.size, data_width=self.data_width)
            wiring.connect(m, wiring.flipped(bus), ram.bus)
            return m
        width_blocks = self.data_width // 16
        banks = self.size // (SPRAM_BYTES * width_blocks)
        request = bus.cyc & bus.stb
        ack = Signal()
        m.d.sync += ack.eq(request)
        # (Not gated by ``cyc``, like WishboneRAM's: a master that dropped ``cyc`` ignores it,
        # and a gate would put the masters' ``cyc`` in front of the answer.)
        m.d.comb += [bus.ack.eq(ack), bus.stall.eq(0)]
        bank = bus.adr[14:] if banks > 1 else 0
        read_bank = Signal(range(max(2, banks)))
        m.d.sync += read_bank.eq(bank)
        outputs = []
        for b in range(banks):
            words = []
            for w in range(width_blocks):
                out = Signal(16, name=f"spram{b}_{w}_out")
                sel = bus.sel[2 * w:2 * w + 2]
                m.submodules[f"spram{b}_{w}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=bus.adr[:14], i_DATAIN=bus.dat_w[16 * w:16 * w + 16],
                    i_MASKWREN=Cat(sel[0], sel[0], sel[1], sel[1]),
                    i_WREN=bus.we, i_CHIPSELECT=request & (bank == b),
                    i_CLOCK=ClockSignal("sync"), i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
                    o_DATAOUT=out)
                words.append(out)
            outputs.append(Cat(*words))
        data = outputs[0]
        for b in range(1, banks):
            data = Mux(read_bank == b, outputs[b], data)
        m.d.comb += bus.dat_r.eq(data)
        return m

