"""cocotb bus models for the NPU's Wishbone B4 ports (runs inside the simulator).

:class:`WishboneMemory` is the system memory behind the NPU's pipelined DMA master;
:class:`WishboneCSR` is the host that reads and writes the NPU's register slave.
Both follow the signature of :mod:`npu.hdl.wishbone` and find the ports of an
Amaranth top level by their Verilog names, ``<prefix>__<member>`` (``bus__cyc``).

Timing convention (the same as :mod:`npu.sim.testbench`): a model drives its outputs
just after a falling clock edge, then waits for ``ReadOnly`` and samples the other side.
Nothing changes between that sample and the next rising edge, so the sampled values
are exactly the ones the rising edge registers, and a handshake the model sees at
that point is the handshake the RTL performs.
"""

import random
from collections import deque
from typing import NamedTuple

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly

__all__ = ["Access", "Request", "WishboneBusError", "WishboneCSR", "WishboneMemory"]


class Request(NamedTuple):
    """A request the master presented: byte address, write enable, write data, byte select."""
    addr: int
    we: bool
    data: int
    sel: int
    cycle: int  # the cycle in which it was accepted


class Access(NamedTuple):
    """A request the memory answered. ``data`` is the word read or written (0 for an erred read)."""
    addr: int
    we: bool
    data: int
    sel: int
    cycle: int  # the cycle in which ack (or err) was high


class WishboneBusError(AssertionError):
    """A Wishbone access was answered with ``err``."""


def _int_or_none(value):
    """The integer value of a signal, or None if any bit is X or Z."""
    try:
        return int(value)
    except ValueError:
        return None


def _check_range(name, value, lo, hi):
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, not {value!r}")


class WishboneMemory:
    """A pipelined Wishbone B4 slave serving a :class:`~npu.sim.memory.MemoryImage`.

    Every request accepted (``cyc & stb & ~stall`` at a rising edge) is answered in
    order with exactly one cycle of ``ack`` -- or of ``err`` for an access outside the
    image or one ``error_if`` selects, which leaves the memory unchanged. A write is
    performed, and a read's data taken, in the cycle of its ``ack``. When the master
    drops ``cyc``, the requests not yet answered are discarded (``abandoned``).

    Parameters
    ----------
    dut : cocotb handle of the top level.
    memory : MemoryImage
        The memory seen through the port; ``adr`` is a word address, so the byte
        address is ``adr * data_width // 8`` and words are little endian.
    prefix : str
        Port name prefix (``bus`` finds ``bus__cyc`` ...).
    data_width : int
        Width of ``dat_r``/``dat_w`` in bits (a multiple of 8).
    clock : cocotb handle, optional
        Defaults to ``dut.clk``.
    reset : cocotb handle or None, optional
        While it is high the model stays idle and checks nothing. Defaults to
        ``dut.rst`` if the top level has one.
    wait_states : (int, int)
        Inclusive range of the random delay between acceptance and answer, in
        cycles; 0 answers in the cycle right after acceptance.
    stall_prob : float
        Probability that ``stall`` is high in a cycle.
    error_if : callable(byte_addr, we) -> bool, optional
        Accesses for which it returns true are answered with ``err``.
    seed : int
        Seed of the random delays and stalls.
    scramble : bool
        Drive random data on ``dat_r`` in cycles without a read ``ack``, so a master
        that samples it at the wrong time reads garbage.

    Attributes
    ----------
    log : list of Access
        Every access answered with ``ack``, in order.
    errored : list of Access
        Every access answered with ``err``.
    out_of_range : list of (byte_addr, we)
        The erred accesses outside the memory image.
    abandoned : list of Request
        Accepted requests discarded because ``cyc`` dropped before their answer.
    violations : list of str
        Protocol violations by the master, each naming the cycle.
    requests, reads, writes, errors, stall_cycles : int
        Accepted requests; answered reads and writes; ``err`` answers; cycles in
        which a request (``cyc & stb``) was held by ``stall``. Every request ends up
        answered, erred, abandoned or still ``pending``.
    cycle : int
        Cycles since :meth:`start` (one per falling edge).
    """

    def __init__(self, dut, memory, *, prefix="bus", data_width=32, clock=None, reset=...,
                 wait_states=(0, 0), stall_prob=0.0, error_if=None, seed=0, scramble=True):
        if data_width % 8 or data_width <= 0:
            raise ValueError(f"data_width must be a positive multiple of 8, not {data_width!r}")
        lo, hi = wait_states
        if not 0 <= lo <= hi:
            raise ValueError(f"wait_states must be (lo, hi) with 0 <= lo <= hi, not {wait_states!r}")
        _check_range("stall_prob", stall_prob, 0.0, 1.0)
        self.dut = dut
        self.memory = memory
        self.prefix = prefix
        self.data_width = data_width
        self.nbytes = data_width // 8
        self.clock = dut.clk if clock is None else clock
        self.reset = getattr(dut, "rst", None) if reset is ... else reset
        self.wait_states = (lo, hi)
        self.stall_prob = stall_prob
        self.error_if = error_if
        self.rng = random.Random(seed)
        self.scramble = scramble
        self._sig = {name: getattr(dut, f"{prefix}__{name}")
                     for name in ("cyc", "stb", "we", "adr", "dat_w", "sel", "dat_r", "ack", "stall", "err")}
        self.log, self.errored, self.out_of_range, self.abandoned, self.violations = [], [], [], [], []
        self.requests = self.reads = self.writes = self.errors = self.stall_cycles = 0
        self.cycle = 0
        self._pending = deque()   # (due cycle, Request), in order
        self._last_due = -1
        self._stalled = None      # the request signals held by stall in the previous cycle
        self._task = None

    # -- control -----------------------------------------------------------------------

    def start(self):
        """Drive the slave outputs idle and start answering requests."""
        if self._task is not None:
            raise RuntimeError("WishboneMemory already started")
        self._drive(stall=0, ack=0, err=0, dat_r=0)
        self._task = cocotb.start_soon(self._run())
        return self

    def stop(self):
        """Stop the model; the outputs are left as they were last driven."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    @property
    def pending(self):
        """Accepted requests not yet answered."""
        return [req for _, req in self._pending]

    # -- internals ---------------------------------------------------------------------

    def _drive(self, **values):
        for name, value in values.items():
            self._sig[name].value = value

    def _violation(self, message):
        self.violations.append(f"cycle {self.cycle}: {message}")

    def _abandon(self):
        self.abandoned.extend(req for _, req in self._pending)
        self._pending.clear()

    def _answer(self, req):
        """(err, read data) for ``req``, without side effects."""
        if not self.memory.contains(req.addr, self.nbytes):
            return True, 0
        if self.error_if is not None and self.error_if(req.addr, req.we):
            return True, 0
        return False, 0 if req.we else self.memory.read_word(req.addr, self.nbytes)

    def _commit(self, req, err, data):
        """Perform an answered access whose ack/err the master did see."""
        if err:
            self.errors += 1
            self.errored.append(Access(req.addr, req.we, req.data if req.we else 0, req.sel, self.cycle))
            if not self.memory.contains(req.addr, self.nbytes):
                self.out_of_range.append((req.addr, req.we))
            return
        if req.we:
            self.memory.write_word(req.addr, req.data, self.nbytes, req.sel)
            self.writes += 1
        else:
            self.reads += 1
        self.log.append(Access(req.addr, req.we, req.data if req.we else data, req.sel, self.cycle))

    def _in_reset(self):
        return self.reset is not None and _int_or_none(self.reset.value) != 0

    def _sample_request(self):
        """Sample the master's signals at ReadOnly; check them; return (cyc, stb, fields)."""
        s = self._sig
        cyc, stb = _int_or_none(s["cyc"].value), _int_or_none(s["stb"].value)
        if cyc is None:
            self._violation(f"{self.prefix}__cyc is X/Z")
            return 0, 0, None
        if not cyc:
            if stb:
                self._violation(f"{self.prefix}__stb high without cyc")
            return 0, 0, None
        if stb is None:
            self._violation(f"{self.prefix}__stb is X/Z while cyc is high")
            return 1, 0, None
        if not stb:
            return 1, 0, None
        fields = {name: _int_or_none(s[name].value) for name in ("we", "adr", "sel", "dat_w")}
        bad = [name for name in ("we", "adr", "sel") if fields[name] is None]
        if fields["we"] and fields["dat_w"] is None:
            bad.append("dat_w")
        if bad:
            self._violation(f"{', '.join(f'{self.prefix}__{n}' for n in bad)} X/Z in a request")
            return 1, 0, None
        if not fields["we"]:
            fields["dat_w"] = 0  # write data of a read is don't-care
        return 1, 1, fields

    async def _run(self):
        s = self._sig
        nbytes, mask = self.nbytes, (1 << self.data_width) - 1
        while True:
            await FallingEdge(self.clock)
            self.cycle += 1
            if self._in_reset():
                self._abandon()
                self._stalled = None
                self._drive(stall=0, ack=0, err=0, dat_r=0)
                continue
            # Drive this cycle's answer: the oldest pending request, if it is due.
            answer = None
            if self._pending and self._pending[0][0] <= self.cycle and _int_or_none(s["cyc"].value):
                req = self._pending.popleft()[1]
                err, data = self._answer(req)
                answer = (req, err, data)
            stall = int(self.rng.random() < self.stall_prob)
            if answer is not None and not answer[0].we and not answer[1]:
                dat_r = answer[2]
            else:
                dat_r = self.rng.getrandbits(self.data_width) & mask if self.scramble else 0
            self._drive(stall=stall, ack=int(answer is not None and not answer[1]),
                        err=int(answer is not None and answer[1]), dat_r=dat_r)

            await ReadOnly()
            cyc, stb, fields = self._sample_request()
            if not cyc:
                # The master abandoned whatever it was waiting for, including a request
                # answered in this very cycle (an answer with cyc low is not seen).
                if answer is not None:
                    self.abandoned.append(answer[0])
                self._abandon()
                self._stalled = None
                continue
            if answer is not None:
                self._commit(*answer)
            if self._stalled is not None:
                if fields is None:
                    self._violation("stb dropped while the request was stalled")
                elif fields != self._stalled:
                    changed = [n for n in fields if fields[n] != self._stalled[n]]
                    self._violation(f"{', '.join(changed)} changed while the request was stalled")
            self._stalled = None
            if not stb:
                continue
            if stall:
                self.stall_cycles += 1
                self._stalled = fields
                continue
            req = Request(fields["adr"] * nbytes, bool(fields["we"]), fields["dat_w"], fields["sel"], self.cycle)
            due = max(self.cycle + 1 + self.rng.randint(*self.wait_states), self._last_due + 1)
            self._last_due = due
            self.requests += 1
            self._pending.append((due, req))


class WishboneCSR:
    """A Wishbone B4 master for the NPU's register slave (32-bit, byte offsets).

    Each access presents ``cyc``/``stb``/``adr``/``we``/``dat_w`` with ``sel`` = 0xF,
    holds them while ``stall`` is high (pipelined) or until ``ack`` (``classic``), then
    waits for ``ack``. An ``err`` answer raises :class:`WishboneBusError`; no answer
    within ``timeout`` cycles raises ``AssertionError``. Both name the register.

    Parameters
    ----------
    dut : cocotb handle of the top level.
    prefix : str
        Port name prefix (``csr`` finds ``csr__cyc`` ...).
    clock : cocotb handle, optional
        Defaults to ``dut.clk``.
    classic : bool
        Classic-cycle mode: keep ``stb`` high until the answer and ignore ``stall``.
    timeout : int
        Cycles an access may take, stalls included, before it fails.
    names : mapping of offset -> str, optional
        Register names for messages.
    """

    def __init__(self, dut, *, prefix="csr", clock=None, classic=False, timeout=100, names=None):
        if timeout < 1:
            raise ValueError(f"timeout must be at least 1 cycle, not {timeout!r}")
        self.dut = dut
        self.prefix = prefix
        self.clock = dut.clk if clock is None else clock
        self.classic = classic
        self.timeout = timeout
        self.names = dict(names or {})
        self._sig = {name: getattr(dut, f"{prefix}__{name}")
                     for name in ("cyc", "stb", "we", "adr", "dat_w", "sel", "dat_r", "ack", "stall")}
        self._err = getattr(dut, f"{prefix}__err", None)
        self.data_width = len(self._sig["dat_w"])
        self.reads = self.writes = 0
        self._idle()

    def _idle(self):
        for name in ("cyc", "stb", "we", "adr", "dat_w", "sel"):
            self._sig[name].value = 0

    def _what(self, kind, offset):
        name = self.names.get(offset)
        return f"CSR {kind} of register {offset:#04x}" + (f" ({name})" if name else "")

    async def read(self, offset):
        """The value of the register at byte ``offset``."""
        data = await self._access(offset, we=False, value=0)
        self.reads += 1
        return data

    async def write(self, offset, value):
        """Write ``value`` to the register at byte ``offset``."""
        if not 0 <= value < 1 << self.data_width:
            raise ValueError(f"value {value!r} does not fit in {self.data_width} bits")
        await self._access(offset, we=True, value=value)
        self.writes += 1

    async def _access(self, offset, *, we, value):
        if offset < 0 or offset % 4:
            raise ValueError(f"register offset must be a non-negative multiple of 4, not {offset!r}")
        s, what = self._sig, self._what("write" if we else "read", offset)
        await FallingEdge(self.clock)
        s["cyc"].value = 1
        s["stb"].value = 1
        s["we"].value = int(we)
        s["adr"].value = offset // 4
        s["dat_w"].value = value
        s["sel"].value = (1 << self.data_width // 8) - 1
        cycles, presenting = 0, True
        while True:
            await ReadOnly()
            cycles += 1
            ack = _int_or_none(s["ack"].value)
            err = _int_or_none(self._err.value) if self._err is not None else 0
            stall = 0 if self.classic else _int_or_none(s["stall"].value)
            if ack is None or err is None or stall is None:
                raise AssertionError(f"{what}: ack, err or stall is X/Z")
            if ack or err:
                # A pipelined answer follows acceptance; it never shares the request's cycle.
                if presenting and not self.classic:
                    raise AssertionError(f"{what}: answered before the request was accepted")
                break
            if cycles >= self.timeout:
                state = "held by stall" if presenting and not self.classic else "waiting for ack"
                await FallingEdge(self.clock)
                self._idle()  # leave the bus usable for the accesses that follow
                raise AssertionError(f"{what}: no answer within {self.timeout} cycles ({state})")
            await FallingEdge(self.clock)
            if presenting and not self.classic and not stall:
                s["stb"].value = 0
                presenting = False
        data = _int_or_none(s["dat_r"].value)
        await FallingEdge(self.clock)
        self._idle()
        if err:
            raise WishboneBusError(f"{what}: answered with err")
        if not we and data is None:
            raise AssertionError(f"{what}: read data is X/Z")
        return None if we else data
