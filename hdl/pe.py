"""Processing element of the weight-stationary systolic array."""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .pipeline import register

__all__ = ["ProcessingElement", "dual_int8_dsp", "sb_mac16_pair", "registered_dsp", "mult18x18d_registered"]


class ProcessingElement(wiring.Component):
    """One multiply-accumulate cell with a double-buffered weight register.

    Every cycle the cell passes its activations (and the weight-bank select that travels
    with them) to the right, registered; the product ``a * w[sel_in]`` is registered,
    and a cycle later ``psum_in + product`` goes downwards, registered.
    The bank not selected by the activations in flight can be rewritten at the same
    time (``w_load``), so the next tile's weights load while this tile computes.

    With ``group`` > 1 (the sparse front end) ``a_in`` carries a group of ``group``
    activations and each weight bank also holds an index: the cell multiplies its
    weight with ``a_in[idx[sel_in]]``, the activation its stored non-zero weight meets.

    Parameters
    ----------
    data_width : int
        Width of activations and weights (signed).
    psum_width : int
        Width of the partial sums (signed); sums wrap at this width.
    group : int
        Activations per cell input (1: dense; M of N:M sparsity).
    external_multiplier : bool
        Leave the multiply to the array: the cell presents its operands on ``mul_a`` /
        ``mul_w`` and adds ``mul_p`` to the partial sum. ``mul_p`` is their product
        *registered* (the operands of the previous cycle), so the multiplier's own output
        register serves as the cell's product register. The array then packs two cells'
        products into one DSP block where the device allows it (:func:`dual_int8_dsp`).
    banks : int
        Weight banks: 2 (double-buffered, as above) or 1 (``sel`` is ignored and does not
        travel; a tile's weights load only once the tile before has left the array).
    weight_in_multiplier : bool
        With one bank and an external multiplier (pipeline 1, dense): the multiplier keeps
        the weight in its own operand register, loaded from ``mul_w`` while
        ``mul_w_load`` is high (an iCE40 SB_MAC16's B register): the cell has none.
    separate_select : bool
        The bank select's register is kept apart from every other cell's
        (:func:`~npu.hdl.pipeline.register`): the cells on an anti-diagonal of the array
        see the same select, and synthesis would otherwise drive them all from one register.
    bank_loads : bool
        With two banks: ``w_load`` loads bank 0 and ``w_load1`` bank 1 (``w_bank`` unused),
        so each bank's register enable is an input as it comes, with no logic in front.
    external_stages : int
        With ``external_multiplier``: the registers the array's multiplier has from the
        operands to ``mul_p``. 1 (the product register), or ``pipeline``: the multiplier
        holds all of the cell's multiply registers (an ECP5 MULT18X18D with its input,
        pipeline and output registers, :func:`mult18x18d_registered`), and the cell has
        none of its own there.
    pipeline : int
        Registers from the cell's inputs to the product it adds: 1 (the product
        register), 3 (also the multiplier's operands, and the product once more) or 5
        (the operands twice, the product three times). An ECP5 DSP block is
        combinational as Yosys and nextpnr use it and sits in a column of its own, which
        may be across the device when every DSP block is used: the extra registers let
        the placer put registers beside the DSP on each side, so neither the operands'
        nor the product's long route shares a cycle with the multiply. Every cell adds
        ``pipeline - 1`` cycles later, and so does the cell above it: the column's
        schedule holds.
    """

    def __init__(self, *, data_width, psum_width, group=1, external_multiplier=False, pipeline=1,
                 external_stages=1, banks=2, weight_in_multiplier=False, separate_select=False, bank_loads=False):
        if bank_loads and (banks != 2 or weight_in_multiplier):
            raise ValueError("bank_loads needs two banks and no weight_in_multiplier")
        self._bank_loads = bank_loads
        if banks not in (1, 2):
            raise ValueError(f"banks must be 1 or 2, not {banks}")
        if weight_in_multiplier and not (external_multiplier and banks == 1 and pipeline == 1 and group == 1):
            raise ValueError("weight_in_multiplier needs an external multiplier, one bank, pipeline 1, dense")
        self._banks = banks
        self._separate_select = separate_select
        self._weight_in_multiplier = weight_in_multiplier
        if pipeline not in (1, 3, 5):
            raise ValueError(f"pipeline must be 1, 3 or 5, not {pipeline}")
        if external_stages not in (1, pipeline) or (external_stages != 1 and not external_multiplier):
            raise ValueError(f"external_stages must be 1 or pipeline ({pipeline}) with an external multiplier, "
                             f"not {external_stages}")
        self._external_stages = external_stages
        self._pipeline = pipeline
        if data_width < 1 or psum_width < 2 * data_width:
            raise ValueError(f"psum_width ({psum_width}) must be at least 2*data_width ({2 * data_width})")
        self._data_width = data_width
        self._psum_width = psum_width
        self._group = group
        self._idx_bits = (group - 1).bit_length()
        act = signed(data_width) if group == 1 else data.ArrayLayout(signed(data_width), group)
        ports = {
            "a_in":     In(act),
            "sel_in":   In(1),
            "a_out":    Out(act),
            "sel_out":  Out(1),
            "psum_in":  In(signed(psum_width)),
            "psum_out": Out(signed(psum_width)),
            "w_load":   In(1),
            "w_bank":   In(1),
            "w_data":   In(signed(data_width)),
        }
        if group > 1:
            ports["w_idx"] = In(unsigned(self._idx_bits))
        self._external = external_multiplier
        if external_multiplier:
            ports["mul_a"] = Out(signed(data_width))
            ports["mul_w"] = Out(signed(data_width))
            ports["mul_p"] = In(signed(2 * data_width))
        if weight_in_multiplier:
            ports["mul_w_load"] = Out(1)
        if bank_loads:
            ports["w_load1"] = In(1)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        two = self._banks == 2
        w0 = Signal(signed(self._data_width))
        w1 = Signal(signed(self._data_width))

        def load_banks(r0, r1, value):
            """Load ``value`` into bank register ``r0`` or ``r1`` as the weight load says."""
            if self._bank_loads:
                with m.If(self.w_load):
                    m.d.sync += r0.eq(value)
                with m.If(self.w_load1):
                    m.d.sync += r1.eq(value)
                return
            with m.If(self.w_load):
                with m.If(self.w_bank & two):
                    m.d.sync += r1.eq(value)
                with m.Else():
                    m.d.sync += r0.eq(value)
        load_banks(w0, w1, self.w_data)
        weight = Mux(self.sel_in, w1, w0) if two else w0
        if self._weight_in_multiplier:
            # The multiplier's operand register is the weight register: it takes ``mul_w``
            # when ``mul_w_load`` is high and holds it otherwise.
            m.d.comb += self.mul_w_load.eq(self.w_load)
            weight = self.w_data
        if self._group == 1:
            a = self.a_in
        else:
            i0 = Signal(self._idx_bits)
            i1 = Signal(self._idx_bits)
            load_banks(i0, i1, self.w_idx)
            a = self.a_in[Mux(self.sel_in, i1, i0) if two else i0]
        # The product is registered before it is added (the multiplier's output register):
        # every cell adds a cycle late, and so does the cell above it, so the column's
        # schedule holds and the whole array is one cycle longer.
        # The operand and product registers beyond the product register: in the cell, or
        # all of them inside the array's multiplier.
        extra = (self._pipeline - 1) // 2 if self._external_stages == 1 else 0
        for i in range(extra):
            # The operands, registered (the weight is picked when the activation arrives,
            # as without these registers: the weight banks' timing is unchanged).
            a_q = Signal.like(a, name=f"a_q{i}")
            w_q = Signal.like(weight, name=f"w_q{i}")
            m.d.sync += [a_q.eq(a), w_q.eq(weight)]
            a, weight = a_q, w_q
        if self._external:
            m.d.comb += [self.mul_a.eq(a), self.mul_w.eq(weight)]
            product_q = self.mul_p          # registered by the array's multiplier
        else:
            product_q = Signal(signed(2 * self._data_width))
            m.d.sync += product_q.eq(a * weight)
        for i in range(extra):
            product_qn = Signal.like(product_q, name=f"product_q{i + 2}")
            m.d.sync += product_qn.eq(product_q)
            product_q = product_qn
        m.d.sync += [self.a_out.eq(self.a_in), self.psum_out.eq(self.psum_in + product_q)]
        if two:
            m.d.comb += self.sel_out.eq(register(m, self.sel_in, name="sel_q", separate=self._separate_select))
        return m


def registered_dsp(platform):
    """True when ``platform``'s multipliers are ECP5 MULT18X18D blocks, whose input, pipeline
    and output registers can hold a cell's three multiply registers
    (:func:`mult18x18d_registered`). A simulation may pass a platform object with
    ``npu_registered_dsp = True`` (and the behavioural model ``sim/MULT18X18D.v``).
    """
    flag = getattr(platform, "npu_registered_dsp", None)
    if flag is not None:
        return bool(flag)
    return str(getattr(platform, "device", "")).startswith(("LFE5U", "LFE5UM"))


def mult18x18d_registered(a, w, p, *, pipeline=True, site=None):
    """An ECP5 MULT18X18D with its input, pipeline and output registers on: ``p`` is
    ``a * w`` (signed) of three cycles before (two with ``pipeline=False``: input and output
    registers only), and no logic-cell register sits between the
    operands' registers and the block or between the block and the adder. (As Yosys maps a
    ``*`` the block is combinational, and the fabric registers around it may be placed far
    from it: the routes to and from the block each took 4 ns on a full ULX3S-25F.)
    Operands up to 18 bits go in the top bits of the block's 18-bit inputs, with zeros
    below (``a * 2**(18 - len(a))``), not sign-extended: the zeros are constants the block's
    input muxes provide, so an int8 operand is 8 routed pins, not 18 (the ULX3S-85F's array
    fills the DSP rows, where routing is scarce). ``p`` takes the product's bits above the
    zeros' (sign-extended when it is wider). ``site``: the block's place, as nextpnr names it
    (``"X4/Y10/MULT18_0"``, the cell's ``BEL`` attribute), or None for the placer's choice."""
    from amaranth.hdl import Cat, ClockSignal, Const, Instance

    def top_aligned(v, prefix):
        bits = Cat(Const(0, 18 - len(v)), v)
        return {f"i_{prefix}{i}": bits[i] for i in range(18)}
    shift = (18 - len(a)) + (18 - len(w))
    product = Signal(36)
    instance = Instance(
        "MULT18X18D",
        **({"a_BEL": site} if site is not None else {}),
        p_REG_INPUTA_CLK="CLK0", p_REG_INPUTB_CLK="CLK0", p_REG_PIPELINE_CLK="CLK0" if pipeline else "NONE",
        p_REG_OUTPUT_CLK="CLK0",
        p_GSR="DISABLED", p_RESETMODE="SYNC",
        **top_aligned(a, "A"), **top_aligned(w, "B"), **{f"i_C{i}": 0 for i in range(18)},
        i_SIGNEDA=1, i_SIGNEDB=1, i_SOURCEA=0, i_SOURCEB=0,
        i_CLK0=ClockSignal("sync"), i_CE0=1, i_RST0=0,
        **{f"o_P{i}": product[i] for i in range(36)})
    return instance, [p.eq(product[shift:].as_signed())]


def dual_int8_dsp(platform):
    """True when ``platform``'s DSP blocks hold two independent int8 multiplies.

    The iCE40UP's SB_MAC16 in 8x8 mode (``MODE_8x8``) multiplies the upper bytes and
    the lower bytes of its operands separately, signed, with both 16-bit products on
    its output: two processing elements share one block. (An ECP5 MULT18X18D holds one
    int8 multiply as Yosys and nextpnr use it.) A simulation may pass a platform object
    with ``npu_dual_int8_dsp = True`` to build the same netlist.
    """
    flag = getattr(platform, "npu_dual_int8_dsp", None)
    if flag is not None:
        return bool(flag)
    return str(getattr(platform, "device", "")).startswith("iCE40UP")


def sb_mac16_pair(a_hi, w_hi, a_lo, w_lo, p_hi, p_lo, *, w_load=None):
    """An SB_MAC16 in 8x8 mode: ``p_hi = a_hi * w_hi`` and ``p_lo = a_lo * w_lo``, signed,
    registered in the block's 8x8 product registers (clocked by the ``sync`` domain), so
    the products cost no logic-cell flip-flops. Operands narrower than 8 bits are
    sign-extended. With ``w_load``, the weights go through the block's B register: it
    takes ``w_hi``/``w_lo`` in a cycle ``w_load`` is high and the multiplies use what it
    holds (``BHOLD`` otherwise)."""
    from amaranth.hdl import Cat, ClockSignal, Instance

    def byte(v):
        return v.as_signed() if len(v) == 8 else Cat(v, *([v[-1]] * (8 - len(v))))
    out = Signal(32)
    instance = Instance(
        "SB_MAC16",
        p_MODE_8x8=1, p_A_SIGNED=1, p_B_SIGNED=1, p_TOPOUTPUT_SELECT=2, p_BOTOUTPUT_SELECT=2,
        p_TOP_8x8_MULT_REG=1, p_BOT_8x8_MULT_REG=1, p_B_REG=int(w_load is not None),
        i_A=Cat(byte(a_lo), byte(a_hi)), i_B=Cat(byte(w_lo), byte(w_hi)),
        i_C=0, i_D=0, i_CLK=ClockSignal("sync"), i_CE=1, i_IRSTTOP=0, i_IRSTBOT=0, i_ORSTTOP=0, i_ORSTBOT=0,
        i_AHOLD=0, i_BHOLD=0 if w_load is None else ~w_load, i_CHOLD=0, i_DHOLD=0, i_OHOLDTOP=0, i_OHOLDBOT=0,
        i_OLOADTOP=0, i_OLOADBOT=0, i_ADDSUBTOP=0, i_ADDSUBBOT=0, i_CI=0, i_ACCUMCI=0, i_SIGNEXTIN=0,
        o_O=out)
    return instance, [p_hi.eq(out[16:32].as_signed()), p_lo.eq(out[0:16].as_signed())]
