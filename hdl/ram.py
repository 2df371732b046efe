"""On-chip RAM behind a Wishbone B4 pipelined slave: the board's memory for the NPU's DMA.

:func:`ram_bus_signature` is the one definition of the port every board RAM offers
(this block RAM, or a vendor RAM such as the iCE40 SPRAM), so :class:`npu.boards.soc.BoardSoC`
takes any of them.
"""

from amaranth.hdl import Array, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In
from amaranth.utils import ceil_log2, exact_log2

from . import wishbone
from .pe import registered_dsp
from .pipeline import delay

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
    """Block RAM as a pipelined Wishbone slave: one access per cycle, answered in the next
    (or, banked, four cycles later).

    Parameters
    ----------
    size : int
        Bytes, a multiple of the word size.
    data_width : int
        Word width in bits (the NPU's ``bus_width``).
    init : sequence of int, optional
        Initial words.
    bank_bytes : int, optional
        Split the RAM into banks of this many bytes (a power of two, a multiple of the word,
        dividing ``size``) whose read data is registered beside each bank and again after
        the bank is picked, and each bank's request registered beside it: a large RAM's
        block RAMs lie all over the device. Requests are then answered four cycles after
        they are made instead of one. More than four banks are grouped by four: a request
        is registered beside its group before its bank, and the word picked in the group is
        registered before the group is picked (answers in six cycles).

    Members
    -------
    bus : In(ram_bus_signature(size=size, data_width=data_width))
        ``stall`` is always low; ``ack`` follows each request by :attr:`latency` cycles,
        carrying the read data (none once ``cyc`` has fallen). A write takes the bytes
        ``sel`` selects, in the cycle of its request.
    """

    def __init__(self, *, size, data_width, init=(), bank_bytes=None):
        try:
            signature = ram_bus_signature(size=size, data_width=data_width)
            word = data_width // 8
            if bank_bytes is not None and (not isinstance(bank_bytes, int) or bank_bytes < word
                                           or bank_bytes & (bank_bytes - 1) or size % bank_bytes):
                raise ValueError(f"bank_bytes = {bank_bytes!r} is invalid: must be a power of two of at least "
                                 f"{word} bytes (one word) that divides size = {size}")
        except ValueError:
            self._MustUse__silence = True
            raise
        self.size = size
        self.data_width = data_width
        self.depth = size // (data_width // 8)
        self.init = list(init)
        self.banks = size // bank_bytes if bank_bytes else 1
        super().__init__({"bus": In(signature)})

    #: Banks in a group (more banks than this are grouped).
    GROUP_BANKS = 4

    @property
    def groups(self):
        """Groups of banks: each takes a request in a register of its own before its banks."""
        return self.banks // self.GROUP_BANKS if self.banks > self.GROUP_BANKS else 1

    @property
    def latency(self):
        """Cycles from a request to its answer."""
        return 1 if self.banks == 1 else 4 if self.groups == 1 else 6

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        request = bus.cyc & bus.stb
        if self.banks == 1:
            m.submodules.memory = memory = Memory(shape=self.data_width, depth=self.depth, init=self.init)
            wr = memory.write_port(granularity=8)
            rd = memory.read_port()
            ack = Signal()
            m.d.sync += ack.eq(request)
            m.d.comb += [
                rd.addr.eq(bus.adr), wr.addr.eq(bus.adr), wr.data.eq(bus.dat_w),
                wr.en.eq(bus.sel & (request & bus.we).replicate(len(bus.sel))),
                bus.dat_r.eq(rd.data), bus.ack.eq(ack), bus.stall.eq(0),
            ]
            return m

        bank_words = self.depth // self.banks
        bits = exact_log2(bank_words)
        groups = self.groups
        per_group = self.banks // groups
        group_bits = exact_log2(per_group)
        # With groups, the request is first registered beside its group of banks (loaded
        # only by the group's requests), then beside its bank.
        near = []                   # (valid, adr, dat_w, sel, we) of the request per group
        for g in range(groups):
            if groups == 1:
                near.append((request, bus.adr, bus.dat_w, bus.sel, bus.we))
                continue
            valid = Signal(name=f"group{g}_valid")
            adr = Signal(bits + group_bits, name=f"group{g}_adr")
            dat_w, sel, we = Signal.like(bus.dat_w, name=f"group{g}_dat_w"), Signal.like(bus.sel, name=f"group{g}_sel"), \
                Signal(name=f"group{g}_we")
            mine = request & (bus.adr[bits + group_bits:] == g)
            m.d.sync += valid.eq(mine)
            with m.If(mine):
                m.d.sync += [adr.eq(bus.adr), dat_w.eq(bus.dat_w), sel.eq(bus.sel), we.eq(bus.we)]
            near.append((valid, adr, dat_w, sel, we))
        held = []       # each bank's read data, registered beside the bank
        for b in range(self.banks):
            g_valid, g_adr, g_dat_w, g_sel, g_we = near[b // per_group]
            memory = Memory(shape=self.data_width, depth=bank_words,
                            init=self.init[b * bank_words:(b + 1) * bank_words])
            m.submodules[f"bank{b}"] = memory
            wr = memory.write_port(granularity=8)
            rd = memory.read_port()
            # The request, registered beside the bank (a write takes effect a cycle later,
            # as does every read: their order stays). Loaded only by the bank's own
            # requests, so synthesis does not merge the banks' registers into one.
            addr = Signal(bits, name=f"bank{b}_addr")
            data_w = Signal(self.data_width, name=f"bank{b}_dat_w")
            we = Signal(len(bus.sel), name=f"bank{b}_we")
            local = b % per_group
            mine = g_valid & (g_adr[bits:bits + group_bits] == local) if groups > 1 else \
                g_valid & (g_adr[bits:] == b)
            with m.If(mine):
                m.d.sync += [addr.eq(g_adr[:bits]), data_w.eq(g_dat_w)]
            m.d.sync += we.eq(g_sel & (mine & g_we).replicate(len(bus.sel)))
            m.d.comb += [rd.addr.eq(addr), wr.addr.eq(addr), wr.data.eq(data_w), wr.en.eq(we)]
            q = Signal(self.data_width, name=f"bank{b}_q")
            m.d.sync += q.eq(rd.data)
            held.append(q)
        # The bank number and the answer travel beside the read: [the group's request
        # register,] the bank's request register, the block RAM's output, the bank's read
        # register, [the word picked in the group,] the picked word's register. A fallen
        # ``cyc`` drops the answers on their way.
        answer = request
        for stage in range(self.latency):
            registered = Signal(name=f"answer_{stage + 1}")
            m.d.sync += registered.eq(answer & bus.cyc)
            answer = registered
        # (The word is picked from the banks' read registers: with groups a cycle earlier.)
        if groups == 1:
            bank = delay(m, bus.adr[bits:], self.latency - 1, name="bank")
        else:
            picked = []
            for g in range(groups):
                # Each group picks with a copy of its own (kept apart on the ECP5): the
                # groups are spread over the device, and one register driving every
                # group's pick took an 11 ns route on the ULX3S-85F.
                pick = delay(m, bus.adr[bits:bits + group_bits], self.latency - 2, name=f"group{g}_bank",
                             separate=registered_dsp(platform))
                word = Signal(self.data_width, name=f"group{g}_q")
                m.d.sync += word.eq(Array(held[g * per_group:(g + 1) * per_group])[pick])
                picked.append(word)
            held, bank = picked, delay(m, bus.adr[bits + group_bits:], self.latency - 1, name="group")
        data = Signal(self.data_width)
        m.d.sync += data.eq(Array(held)[bank])
        m.d.comb += [bus.dat_r.eq(data), bus.ack.eq(answer), bus.stall.eq(0)]
        return m
