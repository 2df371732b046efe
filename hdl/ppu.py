"""Post-processing unit: bias, requantisation, zero point and clamp, int8 out."""

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, enum, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..generators.config import REQUANT_MULT_WIDTH, REQUANT_SHIFT_WIDTH
from .layouts import addr_width, output_layout, param_lane_layout, param_write_layout, ppu_command_layout
from .pe import mult18x18d_registered, registered_dsp
from .pipeline import delay, fanout, register, step_count
from .ram import CollisionFreeReadPort

__all__ = ["PostProcessor", "requantize_lane", "SerialLane"]

#: Registers in one requantisation lane, from its inputs to its result.
LANE_STAGES = 9
#: Bits of a parameter memory bank with register slices (columns of ``param_lane_layout``).
PARAM_BANK_BITS = 144
#: Pipeline stages from an accumulator read to the output FIFO write.
PIPELINE_STAGES = 1 + LANE_STAGES
#: The multiply is split into products of limbs this wide (an 18x18 DSP takes two).
_LIMB = 16
#: Multiply steps of a serial lane: two multiplier bits each, and one more step for the
#: carry out of the recoding (see ``SerialLane``).
SERIAL_MULT_STEPS = REQUANT_MULT_WIDTH // 2 + 1


def _limbs(value, *, signed_top):
    """``value`` cut into ``_LIMB``-bit limbs, lowest first, as (bit offset, limb): every limb
    unsigned except the top one when ``signed_top`` (it carries the value's sign)."""
    width = len(value)
    limbs = []
    for lo in range(0, width, _LIMB):
        hi = min(lo + _LIMB, width)
        limb = value[lo:hi]
        limbs.append((lo, limb.as_signed() if signed_top and hi == width else limb))
    return limbs


def requantize_lane(m, domain, acc, param, zero_point, clamp_lo, clamp_hi, *, acc_width, data_width,
                    param_per_row=False, dsp=False, local_bounds=False, name="lane"):
    """Build the ``LANE_STAGES``-register requantisation pipeline of one lane; return its result.

    Semantics (``docs/architecture.md``, "Requantisation"), all integer and exact:
    ``x = wrap(acc + bias, acc_width)``; ``p = x * mult``; ``q = p / 2**shift`` rounded
    to nearest, ties to even; ``y = clamp(q + zero_point, clamp_lo, clamp_hi)``.

    The stages are short enough for 100 MHz on an ECP5: (1) bias add; (2) products of
    16-bit limbs (the DSP blocks, registered); (3) the products summed in two groups that
    do not share a carry chain; (4) ``p``; (5) ``p`` shifted by the multiple of 8 of
    ``shift - 1`` and the sticky bit of the bits below ``shift - 1``; (6) by the rest (so
    ``p >> (shift - 1)``); (7) rounding, and ``q`` saturated to ``data_width + 4`` bits
    (which leaves every clamp result as it was); (8) zero point; (9) clamp.

    ``param`` is read in the cycle ``acc`` is, unless ``param_per_row`` is false: then it
    must hold still for the whole command (``mult`` is read again in the next stage).

    ``dsp`` (an ECP5, :func:`~npu.hdl.pe.registered_dsp`): stages (1) and (2) are each limb
    product's MULT18X18D input and output registers, ``x``'s limbs and ``mult``'s going into
    the blocks' input registers, the products coming from their output registers. (As Yosys
    maps a ``*`` the block is combinational between two fabric registers: 12 ns on the
    ULX3S-85F.) Same stages, same results. There, the shift amounts of stages (5) and (6) are
    registers per 16 bits of the result (``name`` names them): not one register routed to the
    selects of the whole 64-bit shifter.

    ``local_bounds``: the lane takes ``zero_point`` and the clamps into registers of its own
    (separate ones with ``dsp``) and registers ``clamp_lo > clamp_hi`` from them, so stages
    (8) and (9) start from registers beside the lane, not from one command register routed
    to every lane. The caller must then hold the three still from two cycles before a
    value enters stage (8) until the last has left (9): a command's fields, which change
    only while no row is in the pipeline.
    """
    sync = m.d[domain]
    mult_width = param.mult.shape().width
    pw = acc_width + mult_width + 1              # p = x * mult, exact
    ext = max(64, pw)                            # the remainder is taken over 64 bits at least
    # (1) Bias add, wrapping at the accumulator width like the accumulator itself.
    x = Signal(signed(acc_width))
    if dsp:
        assert domain == "sync"
        m.d.comb += x.eq(acc + param.bias)      # into the blocks' input registers
        mult = param.mult
    elif param_per_row:
        sync += x.eq(acc + param.bias)
        # The lane serves another column next cycle: keep this column's multiplier.
        mult = Signal.like(param.mult)
        sync += mult.eq(param.mult)
    else:
        sync += x.eq(acc + param.bias)
        mult = param.mult
    shift = [Signal.like(param.shift, name=f"shift_{i}") for i in range(1, 4)]   # after stages 1..3
    sync += [shift[0].eq(param.shift), *(shift[i].eq(shift[i - 1]) for i in range(1, 3))]
    # (2) Limb products.
    products = []
    for x_at, x_limb in _limbs(x, signed_top=True):
        for m_at, m_limb in _limbs(mult, signed_top=False):
            pp = Signal(signed(len(x_limb) + len(m_limb) + 1), name=f"pp_{x_at}_{m_at}")
            if dsp:
                # Unsigned limbs as signed operands one bit wider (a 17-bit signed operand
                # at most: the block's inputs are 18).
                def operand(limb):
                    return limb if limb.shape().signed else Cat(limb, Const(0, 1)).as_signed()
                block, connect = mult18x18d_registered(operand(x_limb), operand(m_limb), pp, pipeline=False)
                m.submodules += block
                m.d.comb += connect
            else:
                sync += pp.eq(x_limb * m_limb)
            products.append((x_at + m_at, pp))
    # The mask of the bits below the rounding bit: bit i is set when i < shift - 1.
    below = Signal(ext)
    top_shift = (1 << len(shift[0])) - 1
    sync += below.eq(Cat(*((i + 1) < shift[0] if i + 1 < top_shift else Const(0, 1) for i in range(ext))))
    below_3, below_4 = Signal(ext), Signal(ext)
    sync += [below_3.eq(below), below_4.eq(below_3)]
    # (3) Products at even and odd limb positions: two sums, each with few overlaps.
    even, odd = Signal(signed(pw)), Signal(signed(pw))
    sync += [even.eq(sum(pp << at for at, pp in products if (at // _LIMB) % 2 == 0)),
             odd.eq(sum((pp << at for at, pp in products if (at // _LIMB) % 2 == 1), Const(0, 1)))]
    # (4) The product; every sum above wraps at pw bits, which p fits exactly.
    p = Signal(signed(pw))
    no_shift_4 = Signal()
    sync += [p.eq(even + odd), no_shift_4.eq(shift[2] == 0)]
    amount_next = Mux(shift[2] == 0, 0, shift[2] - 1)[:len(shift[2])]     # shift - 1: to the rounding bit
    # (5) and (6): the shift to the rounding bit in two steps, a multiple of 8 and the rest
    # (two 8-way selects, not one 64-way). The sticky bit ORs the bits below the rounding
    # bit; the remainder needs p's two's-complement bits up to bit 63: sign-extend, or a
    # negative product narrower than the shift would lose its upper ones.
    coarse_next = amount_next[3:]       # in eights
    fine_4 = Signal(3)
    sync += fine_4.eq(amount_next[:3])
    if dsp:
        chunks = range(0, pw, 16)
        coarse = fanout(m, coarse_next, len(chunks), name=f"{name}_coarse", separate=True)
        fine = fanout(m, fine_4, len(chunks), name=f"{name}_fine", separate=True)
    else:
        chunks = [0]
        coarse, fine = [Signal.like(coarse_next, name=f"{name}_coarse")], [Signal(3, name=f"{name}_fine")]
        sync += [coarse[0].eq(coarse_next), fine[0].eq(fine_4)]
    width = 16 if dsp else pw
    p_5 = Signal(signed(pw))
    sync += p_5.eq(Cat(*((p >> Cat(Const(0, 3), amount))[at:at + width] for at, amount in zip(chunks, coarse))))
    shifted = Cat(*((p_5 >> amount)[at:at + width] for at, amount in zip(chunks, fine)))
    p_ext = Signal(signed(ext))
    m.d.comb += p_ext.eq(p)
    sticky_5 = Signal()
    q1 = Signal(signed(pw))
    sync += [sticky_5.eq((p_ext.as_unsigned() & below_4) != 0), q1.eq(shifted)]
    no_shift = delay(m, no_shift_4, 2, name=f"{name}_no_shift", domain=domain)
    sticky = delay(m, sticky_5, 1, name=f"{name}_sticky", domain=domain)
    # (7) Round half to even (ONNX QuantizeLinear's rounding): up when the rounding bit is
    # set and either a lower bit is set or q is odd. q is saturated to W bits: any q
    # beyond them clamps to the same bound as the saturated value does.
    # Whether q fits W bits is registered beside q's low bits, and the saturated value is
    # picked in (8): the wide all-equal test of q's upper bits is the whole of this stage.
    # The upper bits of q1 >> 1 are those of q1 from bit W: both tests share that part.
    q = Mux(no_shift, q1, q1 >> 1)
    W = data_width + 4
    upper = q1[W:]
    same = (upper == 0) | (upper == (1 << len(upper)) - 1)
    q_low, fits, negative = Signal(signed(W)), Signal(), Signal()
    round_up = Signal()
    sync += [q_low.eq(q[:W]), fits.eq(same & (~no_shift | (q1[W - 1] == q1[W]))), negative.eq(q1[-1]),
             round_up.eq(~no_shift & q1[0] & (sticky | q1[1]))]
    # (8) Saturation (from registers: one select) and zero point; (9) clamp, the upper
    # bound winning if clamp_lo > clamp_hi.
    if local_bounds:
        zero_point, clamp_lo, clamp_hi = (register(m, value, name=f"{name}_{field}", separate=dsp, domain=domain)
                                          for field, value in (("zero_point", zero_point), ("clamp_lo", clamp_lo),
                                                               ("clamp_hi", clamp_hi)))
        lo_above_hi = register(m, clamp_lo > clamp_hi, name=f"{name}_lo_above_hi", domain=domain)
    else:
        lo_above_hi = clamp_lo > clamp_hi
    y = Signal(signed(W + 2))
    q_sat = Mux(fits, q_low, Mux(negative, -(1 << (W - 1)), (1 << (W - 1)) - 1))
    sync += y.eq(q_sat + round_up + zero_point)
    # min(max(y, lo), hi), with the two compares side by side: max(y, lo) > hi is
    # lo > hi when y < lo, else y > hi.
    below_lo = y < clamp_lo
    above_hi = Mux(below_lo, lo_above_hi, y > clamp_hi)
    result = Signal(signed(data_width))
    sync += result.eq(Mux(above_hi, clamp_hi, Mux(below_lo, clamp_lo, y)))
    return result


class _Digit(enum.Enum, shape=2):
    """A recoded multiplier digit of ``SerialLane``: the multiple of ``x`` one step adds."""
    ZERO = 0
    ONE = 1
    TWO = 2
    MINUS_ONE = 3


class SerialLane(wiring.Component):
    """One requantisation lane from plain logic, no multiplier: a result 17 to 25 cycles after
    ``load``.

    For devices whose multipliers all go to the systolic array (the iCE40UP5K). The result
    is that of ``requantize_lane`` bit for bit; the work is sequential:

    * ``load`` takes ``acc`` and ``param``: ``x = wrap(acc + bias)`` into a register;
    * in each of the ``SERIAL_MULT_STEPS`` cycles ``multiply`` is high (right after
      ``load``), ``d * x`` is added to the product's high part, which then shifts right
      by two bits. ``mult`` is recoded two bits at a time into digits ``d`` of -1 .. 2 (a
      chunk of 3 is -1 and a carry into the next chunk), so the addend is ``0``, ``x``,
      ``2x`` or ``~x`` with a carry-in: one LUT per bit in front of the adder;
    * the bits shifted out of the product enter ``window`` (``data_width + 6`` bits or one
      more) from the top and leave it at the bottom into the sticky bit. The window stops
      when its bit 0 or 1 is the rounding bit of ``p / 2**shift``; the bits shifted out
      after that only have to equal the result's sign, or ``q`` saturates (as in
      ``requantize_lane``, to ``data_width + 4`` bits). If the multiply ends before the
      window gets there, the lane goes on shifting: eight bits per cycle while it may, then
      two;
    * ``done`` is high from the cycle after the window is in place (and ``multiply`` is
      low): the rounded, zero-pointed value is registered then. ``result`` (its clamps,
      combinational) is valid while ``done`` is, and holds until the next ``load``.

    The window moves in two-bit steps from bit ``-window_width`` of ``p``; an odd rounding
    position is read one bit up. ``shift = 0`` (no rounding) reads the window that starts
    two bits below ``p``: its two bits below ``p`` are the zeros ``load`` wrote.
    """

    def __init__(self, config):
        self._config = config
        dw = config.data_width
        super().__init__({
            "load":       In(1),
            "acc":        In(signed(config.acc_width)),
            "param":      In(param_lane_layout(config)),
            "multiply":   In(1),
            "done":       Out(1),
            "zero_point": In(signed(dw)),
            "clamp_lo":   In(signed(dw)),
            "clamp_hi":   In(signed(dw)),
            "result":     Out(signed(dw)),
        })

    @property
    def window_width(self):
        """Bits of the window: the saturated floor (``data_width + 4``), the rounding bit,
        one bit for an odd rounding position, rounded up to an even number (two-bit steps)."""
        w = self._config.data_width + 4 + 2
        return w + w % 2

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        A, W, K = cfg.acc_width, cfg.data_width + 4, self.window_width
        x = Signal(signed(A))
        mult = Signal(REQUANT_MULT_WIDTH)
        carry = Signal()
        high = Signal(signed(A))            # the product above the window, two's complement
        window = Signal(K)
        # Two-bit window shifts still to do (a hop does four); shift 63 needs (63 >> 1) + K/2.
        todo = Signal(range((((1 << REQUANT_SHIFT_WIDTH) - 1) >> 1) + K // 2 + 1))
        odd = Signal()                      # the rounding bit is window[1], not window[0]
        sticky = Signal()                   # some bit below the window was set
        mismatch = Signal()                 # a bit shifted out above the stopped window differs from its top

        digit, next_carry = Signal(_Digit), Signal()
        with m.Switch(mult[:2] + carry):
            with m.Case(1):
                m.d.comb += digit.eq(_Digit.ONE)
            with m.Case(2):
                m.d.comb += digit.eq(_Digit.TWO)
            with m.Case(3):
                m.d.comb += [digit.eq(_Digit.MINUS_ONE), next_carry.eq(1)]
            with m.Case(4):
                m.d.comb += next_carry.eq(1)
        addend = Signal(signed(A + 2))
        with m.Switch(digit):
            with m.Case(_Digit.ONE):
                m.d.comb += addend.eq(x)
            with m.Case(_Digit.TWO):
                m.d.comb += addend.eq(x << 1)
            with m.Case(_Digit.MINUS_ONE):
                m.d.comb += addend.eq(~x)
        # high + addend + (digit is -1) as one carry chain: the carry-in enters beside a 1.
        minus = digit == _Digit.MINUS_ONE
        total = Signal(signed(A + 2))
        m.d.comb += total.eq((Cat(minus, high).as_signed() + Cat(Const(1, 1), addend).as_signed())[1:])

        moving = todo != 0
        hop = ~self.multiply & (todo >= 4)
        # The window is in place; ``y`` below is registered, so ``done`` follows a cycle later.
        # Once in place the lane's registers hold until the next ``load`` (``multiply`` only
        # rises after a ``load``), so ``done`` is the register ``settled`` alone.
        in_place, settled = Signal(), Signal()
        m.d.comb += in_place.eq(~self.multiply & ~moving)
        m.d.sync += settled.eq(in_place & ~self.load)
        m.d.comb += self.done.eq(settled)
        with m.If(self.load):
            shift = self.param.shift
            m.d.sync += [x.eq(self.acc + self.param.bias), mult.eq(self.param.mult), carry.eq(0), high.eq(0),
                         window.eq(0), todo.eq(shift[1:] + shift[0] + (K // 2 - 1)), odd.eq(~shift[0]),
                         sticky.eq(0), mismatch.eq(0)]
        with m.Else():
            with m.If(moving):
                m.d.sync += todo.eq(todo - Mux(hop, 4, 1))
                with m.If(hop):
                    m.d.sync += [window.eq(Cat(window[8:], high[:8])), sticky.eq(sticky | window[:8].any())]
                with m.Else():
                    m.d.sync += [window.eq(Cat(window[2:], total[:2])), sticky.eq(sticky | window[:2].any())]
            with m.Elif(self.multiply):
                m.d.sync += mismatch.eq(mismatch | (total[:2] != Mux(window[-1], 0b11, 0b00)))
            with m.If(hop):
                m.d.sync += high.eq(high >> 8)
            with m.Elif(self.multiply | moving):
                m.d.sync += high.eq(total[2:])
            with m.If(self.multiply):
                m.d.sync += [mult.eq(mult >> 2), carry.eq(next_carry)]

        # Rounding, saturation, zero point and clamps as in requantize_lane's stages 6 and 7.
        floor = Mux(odd, window[2:W + 2], window[1:W + 1])
        round_bit = Mux(odd, window[1], window[0])
        below = sticky | (odd & window[0])
        upper = Cat(window[W + 1:], high)   # must all equal the floor's top bit
        fits = (~mismatch & ((upper == 0) | (upper == (1 << len(upper)) - 1))
                & (odd | (window[W] == window[W + 1])))
        # Registered (a timing cut before the clamps). The rounded sum and the saturated one
        # are worked out side by side and ``fits`` only picks one, so its wide compares are
        # not in front of the adder's carry chain.
        y = Signal(signed(W + 2))
        round_up = round_bit & (below | floor[0])
        rounded = floor.as_signed() + round_up + self.zero_point
        saturated = Mux(high[-1], -(1 << (W - 1)), (1 << (W - 1)) - 1) + round_up + self.zero_point
        m.d.sync += y.eq(Mux(fits, rounded, saturated))
        y_lo = Mux(y < self.clamp_lo, self.clamp_lo, y)
        m.d.comb += self.result.eq(Mux(y_lo > self.clamp_hi, self.clamp_hi, y_lo))
        return m


class PostProcessor(wiring.Component):
    """Turns accumulator rows into ``data_width``-bit output rows, one row per cycle.

    An OUTPUT command names ``count`` accumulator rows starting at ``acc_addr`` and a
    parameter entry ``param_addr`` (per-column bias, multiplier, shift); the unit reads
    the rows through ``acc_rd_*`` (``acc_read_latency`` cycles from a read enable to its
    data on ``acc_rd_data``: 1, or more for a datapath that registers the read on the way
    to and from its memories), requantises every lane, and
    delivers rows on ``out``. ``out`` may be back-pressured at any time: rows are only
    read from the accumulator when the output FIFO has room for them, so nothing is
    dropped and the unit never stalls mid-pipeline.

    ``reading`` is high until a command's last accumulator read, from the cycle after its
    acceptance and from registers (the datapath holds COMPUTE commands back meanwhile; its
    one command slot never offers a COMPUTE and a command for this unit at once; the
    serial lanes' ``reading`` includes the cycle of the acceptance); ``idle`` is high when no
    command is in progress and every result has left through ``out``.

    With ``config.requantiser == "serial"`` the lanes are ``SerialLane`` components. Each
    handles ``cols / requant_lanes`` columns of a row one after another, and the row is
    read again for each: a row takes ``cols / requant_lanes`` times 18 to 26 cycles (26 at
    ``shift = 63``). A register of one row replaces the output FIFO (``fifo_depth`` is not
    used), the parameter memory's read port holds the command's entry in place of a
    register, and a command is not accepted in a cycle in which ``param_wr`` writes.
    """

    def __init__(self, config, *, fifo_depth=None, acc_read_latency=1):
        if acc_read_latency < 1 or (acc_read_latency > 1 and config.requantiser == "serial"):
            raise ValueError(f"acc_read_latency must be 1, or more with the pipelined requantiser, "
                             f"not {acc_read_latency}")
        # Rows between a read and the FIFO; the FIFO must hold them all, and one more row
        # (the room check is registered), for a row per cycle.
        stages = PIPELINE_STAGES + acc_read_latency - 1
        if fifo_depth is None:
            fifo_depth = stages + 3
        if fifo_depth <= stages + 2:
            raise ValueError(f"fifo_depth must exceed {stages + 2} for one row per cycle")
        self._config = config
        self._fifo_depth = fifo_depth
        self._read_latency = acc_read_latency
        self._stages = stages
        cols = config.cols
        super().__init__({
            "cmd":         In(stream.Signature(ppu_command_layout(config))),
            # The serial lanes take a parameter row in ``requant_passes`` cycles (``ready``).
            "param_wr":    In(stream.Signature(param_write_layout(config),
                                               always_ready=config.requantiser != "serial")),
            "acc_rd_addr": Out(addr_width(config.acc_depth)),
            "acc_rd_en":   Out(1),
            "acc_rd_data": In(signed(config.acc_width)).array(cols),
            "out":         Out(stream.Signature(output_layout(config))),
            "reading":     Out(1),
            "idle":        Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        lane_layout = param_lane_layout(cfg)

        if cfg.requantiser == "serial":
            self._serial(m, cfg)
            return m
        dsp = registered_dsp(platform)
        cmd = Signal(ppu_command_layout(cfg))
        # Reads never meet writes of their entry where it matters: a command's entry is read
        # after the LOADs to it have finished (the scoreboard holds its STORE back).
        if cfg.register_slices:
            taking = Signal()           # a command is taken (in IDLE, below)
            param_q = self._banked_params(
                m, cfg, Mux(taking, self.cmd.payload.param_addr, cmd.param_addr), separate=dsp)
        else:
            m.submodules.params = params = Memory(
                shape=data.ArrayLayout(lane_layout, cfg.cols), depth=cfg.param_depth, init=[],
                attrs=CollisionFreeReadPort.ATTRS)
            param_w = params.write_port(granularity=1)
            param_r = CollisionFreeReadPort(m, params, name="param_r")
            m.d.comb += [param_w.addr.eq(self.param_wr.payload.addr), param_w.data.eq(self.param_wr.payload.data),
                         param_w.en.eq(Mux(self.param_wr.valid, self.param_wr.payload.mask, 0))]

        m.submodules.fifo = out_fifo = fifo.SyncFIFOBuffered(
            width=output_layout(cfg).size, depth=self._fifo_depth)
        m.d.comb += [
            self.out.valid.eq(out_fifo.r_rdy),
            self.out.payload.eq(out_fifo.r_data),
            out_fifo.r_en.eq(self.out.ready),
        ]

        lane = Signal(data.ArrayLayout(lane_layout, cfg.cols))
        remaining = Signal.like(cmd.count)
        # ``remaining == 0`` and ``== 1`` kept as registers of their own (set with the
        # count, stepped with it): no compare of the count in front of the read issue.
        rem_zero, rem_one = Signal(), Signal()
        addr = Signal.like(cmd.acc_addr)
        passes = cfg.requant_passes
        # Cycles until the next row may be read: a row occupies the lanes for ``passes`` cycles.
        gap = Signal(range(passes)) if passes > 1 else Const(0, 1)

        issue = Signal()
        fifo_write = Signal()
        pipeline_empty = Signal()
        if cfg.register_slices:
            # Registered, from the previous cycle's count as if a row had been read then too
            # (reads out of the FIFO meanwhile only make it stricter; it may hold back a read
            # when one entry is left): the read issue is not in front of it.
            # The sum is a count of its own (rows read and not yet out of the FIFO: up on a
            # read issue, down on a FIFO read, ``step_count``), so only a compare is in front.
            has_room = Signal()
            held = Signal(range(self._fifo_depth + self._stages + passes + 3))
            m.d.sync += [held.eq(step_count(held, issue, out_fifo.r_en & out_fifo.r_rdy)),
                         has_room.eq(held < self._fifo_depth - 1)]
        else:
            in_flight = Signal(range(self._stages + passes + 3))   # rows read, not yet in the FIFO
            m.d.sync += in_flight.eq(in_flight + issue - fifo_write)
            has_room = (out_fifo.level + in_flight) < self._fifo_depth

        # A new command waits for the previous one's rows to leave the pipeline, because
        # its parameters replace the ones those rows still use. With register slices that
        # is known from registers: empty in the cycle before, and no row read then (a
        # timing cut in front of the datapath's command logic; a command may wait a cycle).
        may_start = Signal()
        if cfg.register_slices:
            m.d.sync += may_start.eq(pipeline_empty & ~issue)
        else:
            m.d.comb += may_start.eq(pipeline_empty)
        with m.FSM() as fsm:
            # With register slices the parameter entry is read with the command's address
            # (banked copies of it, read every cycle) and registered before the lanes take it
            # (its block RAMs spread over a large device; two cycles more per command).
            slices = cfg.register_slices
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(may_start)
                if slices:
                    m.d.comb += taking.eq(may_start)
                else:
                    m.d.comb += [param_r.addr.eq(self.cmd.payload.param_addr), param_r.en.eq(1)]
                # With register slices the command registers follow the command presented
                # while a command may start (no row uses them then), and taking one only
                # moves the state: the datapath's command logic enables no register here.
                take = [cmd.eq(self.cmd.payload), remaining.eq(self.cmd.payload.count),
                        rem_zero.eq(self.cmd.payload.count == 0), rem_one.eq(self.cmd.payload.count == 1),
                        addr.eq(self.cmd.payload.acc_addr)]
                if slices:
                    with m.If(may_start):
                        m.d.sync += take
                with m.If(self.cmd.valid & may_start):
                    if not slices:
                        m.d.sync += take
                    m.next = "READ" if slices else "PARAMS"
            if not slices:
                param_q = param_r.data
            if slices:
                with m.State("READ"):       # the banks read the entry
                    m.next = "FETCH"
                with m.State("FETCH"):
                    m.next = "PARAMS"
            with m.State("PARAMS"):
                if not slices:
                    m.d.sync += lane.eq(param_q)
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += issue.eq(~rem_zero & has_room & (gap == 0))
                with m.If(issue):
                    m.d.sync += [remaining.eq(remaining - 1), addr.eq(addr + 1),
                                 rem_zero.eq(rem_one), rem_one.eq(remaining == 2)]
                with m.If(rem_zero | (issue & rem_one)):
                    m.next = "IDLE"
        if cfg.register_slices:
            # Each column's parameter registers load under an enable register of their own
            # ("in PARAMS" is "in FETCH a cycle before"): not one state bit routed to the
            # enables of the lanes' 800 registers.
            lane_load = fanout(m, fsm.ongoing("FETCH"), cfg.cols, name="lane_load", separate=dsp)
            for n in range(cfg.cols):
                with m.If(lane_load[n]):
                    m.d.sync += lane[n].eq(param_q[n])
        if passes > 1:
            with m.If(issue):
                m.d.sync += gap.eq(passes - 1)
            with m.Elif(gap != 0):
                m.d.sync += gap.eq(gap - 1)

        m.d.comb += self.reading.eq(~fsm.ongoing("IDLE"))

        m.d.comb += [self.acc_rd_addr.eq(addr), self.acc_rd_en.eq(issue)]

        row = Signal(output_layout(cfg))
        if passes == 1:
            # One lane per column: a row per cycle through one pipeline.
            valid = Signal(self._stages)     # valid[i]: stage i+1 holds a row
            m.d.sync += valid.eq((valid << 1) | issue)
            m.d.comb += [fifo_write.eq(valid[-1]), pipeline_empty.eq(~valid.any())]
            for n in range(cfg.cols):
                result = requantize_lane(
                    m, "sync", self.acc_rd_data[n], lane[n], cmd.zero_point, cmd.clamp_lo, cmd.clamp_hi,
                    acc_width=cfg.acc_width, data_width=cfg.data_width, dsp=dsp,
                    local_bounds=cfg.register_slices, name=f"lane{n}")
                m.d.comb += row[n].eq(result)
        else:
            self._lane_passes(m, cfg, lane, cmd, issue, row, fifo_write, pipeline_empty, dsp)
        m.d.comb += [out_fifo.w_data.eq(row), out_fifo.w_en.eq(fifo_write)]
        m.d.comb += self.idle.eq(fsm.ongoing("IDLE") & pipeline_empty & (out_fifo.level == 0))
        return m

    def _lane_passes(self, m, cfg, lane, cmd, issue, row, fifo_write, pipeline_empty, dsp):
        """Fewer lanes than columns: each row is captured, then requantised ``L`` columns
        per cycle in ``cols / L`` passes, and assembled before it enters the FIFO.

        Cycle t reads the row; t+D captures it (D: ``acc_read_latency``); passes p = 0..P-1
        enter the lanes at t+D+1+p and leave them LANE_STAGES cycles later, into ``assembled`` (the last pass goes
        straight to the FIFO with it). The next row is read at t+P, so the lanes are busy
        every cycle of a long command.
        """
        L, P = cfg.requant_lanes, cfg.requant_passes
        reads = Signal(self._read_latency)      # reads[i]: a read i+1 cycles old
        m.d.sync += reads.eq((reads << 1) | issue)
        captured = reads[-1]
        row_buf = Signal(data.ArrayLayout(signed(cfg.acc_width), cfg.cols))
        # The pass sequencer: which pass of the captured row enters the lanes this cycle.
        active = Signal()
        index = Signal(range(P))
        with m.If(captured):
            m.d.sync += [active.eq(1), index.eq(0)]
        with m.Elif(active):
            m.d.sync += index.eq(index + 1)
            with m.If(index == P - 1):
                m.d.sync += active.eq(0)
        # The lanes always read columns 0..L-1 (no column select in front of them): each
        # pass shifts the captured row down by L columns and rotates the column parameters
        # by L, so after the P passes of a row they are back in place for the next.
        # (A row is captured in the cycle of the previous row's last pass.)
        if cfg.register_slices:
            # The rotation's enable as a register per column too (``active``'s next value), and
            # so is "captured" for the row register (``reads``' next value): not two state
            # registers routed to the enables of the whole row and parameter set. (Separate
            # flip-flops on an ECP5: Yosys would merge the copies, with ``reads`` too.)
            rotate = fanout(m, Mux(captured, 1, active & (index != P - 1)), cfg.cols, name="lane_rotate",
                            separate=dsp)
            capture = fanout(m, reads[-2] if len(reads) > 1 else issue, cfg.cols, name="row_capture", separate=dsp)
        else:
            rotate = [active] * cfg.cols
            capture = [captured] * cfg.cols
        for n in range(cfg.cols):
            with m.If(capture[n]):
                m.d.sync += row_buf[n].eq(self.acc_rd_data[n])
            if n < cfg.cols - L:
                with m.Elif(rotate[n]):
                    m.d.sync += row_buf[n].eq(row_buf[n + L])
        for n in range(cfg.cols):
            with m.If(rotate[n]):
                m.d.sync += lane[n].eq(lane[(n + L) % cfg.cols])
        results = []
        for lane_no in range(L):
            results.append(requantize_lane(
                m, "sync", row_buf[lane_no], lane[lane_no], cmd.zero_point, cmd.clamp_lo, cmd.clamp_hi,
                acc_width=cfg.acc_width, data_width=cfg.data_width, param_per_row=True, dsp=dsp,
                local_bounds=cfg.register_slices, name=f"lane{lane_no}"))
        # Each pass's (valid, index) travels beside its results through the LANE_STAGES lane stages.
        tag_valid = Signal(LANE_STAGES)
        tag_index = [Signal(range(P), name=f"tag_index{i}") for i in range(LANE_STAGES)]
        m.d.sync += tag_valid.eq((tag_valid << 1) | active)
        m.d.sync += [tag_index[0].eq(index), *(tag_index[i].eq(tag_index[i - 1]) for i in range(1, LANE_STAGES))]
        out_valid, out_index = tag_valid[-1], tag_index[-1]
        assembled = Signal(output_layout(cfg))
        with m.If(out_valid):
            with m.Switch(out_index):
                for p in range(P - 1):
                    with m.Case(p):
                        m.d.sync += [assembled[p * L + i].eq(results[i]) for i in range(L)]
        for n in range(cfg.cols):
            p, i = divmod(n, L)
            m.d.comb += row[n].eq(results[i] if p == P - 1 else assembled[n])
        m.d.comb += [
            fifo_write.eq(out_valid & (out_index == P - 1)),
            pipeline_empty.eq(~(reads.any() | active | tag_valid.any())),
        ]

    def _banked_params(self, m, cfg, read_addr, *, separate):
        """The parameter memory with register slices: banks of ``PARAM_BANK_BITS`` bits of
        columns (four 36-bit ECP5 block RAMs), each with registered copies of its write
        (``param_wr`` lands a cycle late) and of ``read_addr``, the next value of the
        command's entry, read every cycle. Returns the entry of ``read_addr`` two cycles
        before, registered. Without the copies one address register drives the twenty-odd
        block RAMs of a wide array across the device, and the DMA unit's row write address
        both them and the buffers'. ``separate``: see :func:`~npu.hdl.pipeline.register`."""
        lane_layout = param_lane_layout(cfg)
        per_bank = max(1, PARAM_BANK_BITS // lane_layout.size)
        wr = self.param_wr
        read = Signal(data.ArrayLayout(lane_layout, cfg.cols), name="param_read")
        for bank, first in enumerate(range(0, cfg.cols, per_bank)):
            cols = range(first, min(first + per_bank, cfg.cols))
            mem = Memory(shape=data.ArrayLayout(lane_layout, len(cols)), depth=cfg.param_depth, init=[],
                         attrs=CollisionFreeReadPort.ATTRS)
            m.submodules[f"params{bank}"] = mem
            w = mem.write_port(granularity=1)
            m.d.comb += [
                w.addr.eq(register(m, wr.payload.addr, name=f"param_wr_addr{bank}", separate=separate)),
                w.en.eq(register(m, Cat(wr.valid & wr.payload.mask[n] for n in cols),
                                 name=f"param_wr_en{bank}", separate=separate)),
                w.data.eq(register(m, Cat(wr.payload.data[n] for n in cols), name=f"param_wr_data{bank}")),
            ]
            r = CollisionFreeReadPort(m, mem, name=f"param_r{bank}")
            m.d.comb += [r.addr.eq(register(m, read_addr, name=f"param_rd_addr{bank}", separate=separate)),
                         r.en.eq(1), *(read[n].eq(r.data[i]) for i, n in enumerate(cols))]
        param_q = Signal.like(read, name="param_q")
        m.d.sync += param_q.eq(read)
        return param_q

    def _streamed_params(self, m, cfg, group_bits):
        """Parameter memories written a bus word at a time (``config.streamed_params``; one
        lane, so a column group is a column): a row's words ``0 .. C-1`` are the biases,
        ``C .. 2C-1`` the multipliers, then four shifts per word (``isa.row_format``). Each
        memory takes its own words; a read port stands in for the one parameter memory,
        with the shift of the column picked from its word (by the column of the read, a
        cycle later). Returns that read port (``addr``: entry and column; ``en``; ``data``)."""
        C = cfg.cols
        shift_words = -(-C // 4)
        shift_bits = ceil_log2(shift_words)
        depth = cfg.param_depth << group_bits
        mems = {
            "bias": Memory(shape=signed(cfg.acc_width), depth=depth, init=[], attrs=CollisionFreeReadPort.ATTRS),
            "mult": Memory(shape=REQUANT_MULT_WIDTH, depth=depth, init=[], attrs=CollisionFreeReadPort.ATTRS),
            "shift": Memory(shape=data.ArrayLayout(REQUANT_SHIFT_WIDTH, 4), depth=cfg.param_depth << shift_bits,
                            init=[], attrs=CollisionFreeReadPort.ATTRS),
        }
        wr = self.param_wr
        word, value = wr.payload.word, wr.payload.data
        m.d.comb += wr.ready.eq(1)
        firsts = {"bias": 0, "mult": C, "shift": 2 * C}
        counts = {"bias": C, "mult": C, "shift": shift_words}
        reads = {}
        for name, mem in mems.items():
            m.submodules[f"{name}_params"] = mem
            port = mem.write_port()
            index = Signal(range(counts[name]), name=f"{name}_word")
            bits = group_bits if name != "shift" else shift_bits
            m.d.comb += [index.eq(word - firsts[name]), port.addr.eq(Cat(index[:bits], wr.payload.addr)),
                         port.en.eq(wr.valid & (word >= firsts[name]) & (word < firsts[name] + counts[name]))]
            if name == "shift":
                m.d.comb += [port.data[i].eq(value[8 * i:8 * i + REQUANT_SHIFT_WIDTH]) for i in range(4)]
            else:
                m.d.comb += port.data.eq(value[:len(port.data)])
            reads[name] = CollisionFreeReadPort(m, mem, name=f"{name}_r")

        port = SimpleNamespace(addr=Signal(ceil_log2(depth), name="param_r_addr"), en=Signal(name="param_r_en"),
                                data=Signal(data.ArrayLayout(param_lane_layout(cfg), 1), name="param_r_data"))
        column = Signal(max(group_bits, 2), name="param_r_column")     # the column read, a cycle late
        m.d.sync += column.eq(port.addr[:group_bits])
        entry = port.addr[group_bits:]
        for name in ("bias", "mult"):
            m.d.comb += [reads[name].addr.eq(port.addr), reads[name].en.eq(port.en),
                         getattr(port.data[0], name).eq(reads[name].data)]
        m.d.comb += [reads["shift"].addr.eq(Cat(port.addr[2:group_bits][:shift_bits], entry)),
                     reads["shift"].en.eq(port.en),
                     port.data[0].shift.eq(reads["shift"].data.as_value().word_select(column[:2],
                                                                                     REQUANT_SHIFT_WIDTH))]
        return port

    def _serial(self, m, cfg):
        """Serial lanes (``SerialLane``): lane ``l`` requantises columns ``k*L + l`` of a row,
        k = 0 .. P-1, all lanes in step. Per column group: the row is read (the cycle the
        command is accepted, or the one a group finishes), the lanes load it, run until all
        are done, and write their results into ``row``, which is ``out``'s payload once it
        is complete. A group waits for ``row`` to be free, so nothing is lost under back-
        pressure.

        The parameter memory holds one column group per word (``L`` lanes' bias, multiplier
        and shift): ``cols * 69`` bits in one word would take a block RAM per 16 bits on an
        iCE40 however shallow the buffer. A row on ``param_wr`` is written a group per cycle
        (``ready`` in the last), and a group's parameters are read beside its accumulator
        row. A command reads only its own entry, and no entry is written while a command
        that uses it is in progress: in an NPU, a LOAD of parameters behind a STORE waits in
        the DMA queue for the STORE's rows, which leave after their last read, and a STORE
        behind a LOAD of its entry waits for that LOAD (the scoreboard). So no read meets a
        write of its address, and the memory needs no read-during-write logic
        (:class:`~npu.hdl.ram.CollisionFreeReadPort`).
        """
        L, P = cfg.requant_lanes, cfg.requant_passes
        lane_layout = param_lane_layout(cfg)
        group_bits = ceil_log2(P)
        wr = self.param_wr
        if cfg.streamed_params:
            param_r = self._streamed_params(m, cfg, group_bits)
        else:
            m.submodules.params = params = Memory(shape=data.ArrayLayout(lane_layout, L),
                                                  depth=cfg.param_depth << group_bits, init=[],
                                                  attrs=CollisionFreeReadPort.ATTRS)
            param_w = params.write_port(granularity=1)      # per lane
            param_r = CollisionFreeReadPort(m, params, name="param_r")
            # Writes: group ``wgroup`` of the row on param_wr, then the next; the row is taken
            # with its last group.
            if P > 1:
                wgroup = Signal(range(P))
                with m.If(wr.valid):
                    m.d.sync += wgroup.eq(Mux(wgroup == P - 1, 0, wgroup + 1))
                with m.Switch(wgroup):
                    for k in range(P):
                        with m.Case(k):
                            m.d.comb += [param_w.data.eq(Cat(wr.payload.data[k * L + l] for l in range(L))),
                                         param_w.en.eq(Mux(wr.valid, wr.payload.mask[k * L:(k + 1) * L], 0))]
                m.d.comb += [param_w.addr.eq(Cat(wgroup, wr.payload.addr)), wr.ready.eq(wgroup == P - 1)]
            else:
                m.d.comb += [param_w.data.eq(wr.payload.data), param_w.addr.eq(wr.payload.addr),
                             param_w.en.eq(Mux(wr.valid, wr.payload.mask, 0)), wr.ready.eq(1)]
        cmd = Signal(ppu_command_layout(cfg))
        addr = Signal.like(cmd.acc_addr)         # the next accumulator read
        remaining = Signal.like(cmd.count)       # rows with reads still to issue
        # Columns group*L .. group*L + L-1 are in the lanes.
        group = Signal(range(P)) if P > 1 else Const(0, 1)
        step = Signal(range(SERIAL_MULT_STEPS + 1))
        row = Signal(output_layout(cfg))
        full = Signal()                          # row holds a whole row for out
        # A group finishes into ``row`` only while it is empty (not in the cycle ``out`` takes
        # it: a row takes the lanes 17 cycles or more, so this costs nothing but a path from
        # the DMA unit's ``ready`` into the accumulator's read enable).
        free = ~full

        load, multiply, finish, read = Signal(), Signal(), Signal(), Signal()
        multiplying = Signal()      # RUN's first SERIAL_MULT_STEPS cycles (a register: step != STEPS)
        lanes = []
        for l in range(L):
            m.submodules[f"lane{l}"] = lane = SerialLane(cfg)
            lanes.append(lane)
            m.d.comb += [lane.load.eq(load), lane.multiply.eq(multiply), lane.param.eq(param_r.data[l]),
                         lane.zero_point.eq(cmd.zero_point),
                         lane.clamp_lo.eq(cmd.clamp_lo), lane.clamp_hi.eq(cmd.clamp_hi)]
            with m.Switch(group):
                for k in range(P):
                    with m.Case(k):
                        m.d.comb += lane.acc.eq(self.acc_rd_data[k * L + l])
                        with m.If(finish):
                            m.d.sync += row[k * L + l].eq(lane.result)
        all_done = Cat(lane.done for lane in lanes).all()

        m.d.comb += [self.out.valid.eq(full), self.out.payload.eq(row)]
        with m.If(self.out.ready):
            m.d.sync += full.eq(0)
        with m.If(finish & (group == P - 1)):
            m.d.sync += full.eq(1)

        # The group's parameters are read with its accumulator row: the entry's group 0 when
        # a command is accepted, the next group when one finishes.
        next_group = Mux(group == P - 1, 0, group + 1) if P > 1 else Const(0, 1)
        m.d.comb += [self.acc_rd_en.eq(read), self.acc_rd_addr.eq(addr), param_r.en.eq(read),
                     param_r.addr.eq(Cat(next_group[:group_bits], cmd.param_addr))]
        with m.FSM() as fsm:
            with m.State("IDLE"):
                payload = self.cmd.payload
                m.d.comb += [self.cmd.ready.eq(1), param_r.addr.eq(Cat(Const(0, group_bits), payload.param_addr))]
                with m.If(self.cmd.valid & self.cmd.ready):
                    m.d.sync += cmd.eq(payload)
                    with m.If(payload.count != 0):
                        completes = P == 1
                        m.d.comb += [read.eq(1), self.acc_rd_addr.eq(payload.acc_addr)]
                        m.d.sync += [addr.eq(payload.acc_addr + completes), remaining.eq(payload.count - completes)]
                        m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += load.eq(1)
                m.d.sync += [step.eq(0), multiplying.eq(1)]
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += multiply.eq(multiplying)
                with m.If(multiply):
                    m.d.sync += step.eq(step + 1)
                    with m.If(step == SERIAL_MULT_STEPS - 1):
                        m.d.sync += multiplying.eq(0)
                with m.If(all_done & free):
                    m.d.comb += finish.eq(1)
                    if P > 1:
                        m.d.sync += group.eq(Mux(group == P - 1, 0, group + 1))
                    with m.If(remaining != 0):
                        # The read of a row's last column group moves on to the next row.
                        m.d.comb += read.eq(1)
                        with m.If(group == (P - 2) % P):
                            m.d.sync += [addr.eq(addr + 1), remaining.eq(remaining - 1)]
                        m.next = "LOAD"
                    with m.Else():
                        m.next = "IDLE"

        m.d.comb += [self.reading.eq((self.cmd.valid & self.cmd.ready) | (~fsm.ongoing("IDLE") & (remaining != 0))),
                     self.idle.eq(fsm.ongoing("IDLE") & ~full)]

