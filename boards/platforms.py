"""The dev boards ``npu build`` supports: platform, clock, memory and default NPU per board.

Each :class:`Board` names an amaranth-boards platform and says how the board top level
(:mod:`npu.boards.top`) is put together on it: the NPU clock (made by a PLL from the
board oscillator where they differ), the on-chip memory behind the NPU's DMA (SPRAM on
the iCE40UP5K, block RAM on ECP5), the programmer, and a default NPU configuration sized
to the device (``npu build --board NAME`` without ``--config`` builds that one).
"""

from dataclasses import dataclass, field

from ..generators.config import ConfigError, NPUConfig

__all__ = ["Board", "BOARDS", "DSP_PLACEMENTS", "ECP5_DSP_SITES", "array_dsp_sites", "board", "board_config", "board_names"]


#: nextpnr's placers and routers a board build may use.
PLACERS = ("heap", "static")
ROUTERS = ("router1", "router2")
#: How Yosys' ABC9 maps logic to LUTs (:attr:`Board.mapping`), and the ABC script of each
#: (None: Yosys' own). Yosys' script maps for depth, then recovers area with no bound on
#: the depth (the required times do not hold with ABC9's boxes): on the 85F's NPU ABC's
#: delay went from 2612 to 3940, control paths 8 LUTs deep. "delay" keeps the
#: depth-optimal mapping (no area recovery: ``-F 0 -A 0``), in LUTs of up to five inputs
#: (``-K 5``: one slice each; wider ones are macros of two or four slices, which the
#: static placer did not settle): about 25% more LUTs where ABC maps (15% more logic
#: cells on the 85F).
MAPPINGS = {"area": None,
            "delay": "+&scorr;&sweep;&dc2;&dch,-f,-r;&ps;&if,-W,300,-K,5,-q,-F,0,-A,0,-v;&mfs;&ps,-l"}

#: Where an array cell's DSP block goes (:attr:`Board.dsp_placement`): "placer" (nextpnr
#: picks) or "array" (each cell's block pinned to a site in array order, see
#: :func:`array_dsp_sites`).
DSP_PLACEMENTS = ("placer", "array")


def _ecp5_85k_dsp_rows():
    # Three rows of 13 sysDSP blocks, each with four MULT18X18D sites (X x0, x0+1, x0+4,
    # x0+5); the device's centre column has none. Read from nextpnr's placement of a design
    # of 156 MULT18X18D (the same on the LFE5U-85F and the LFE5UM5G-85F).
    starts = [4 + 9 * i for i in range(7)] + [69 + 9 * i for i in range(6)]
    return tuple(tuple(f"X{x0 + dx}/Y{y}/MULT18_{dx}" for x0 in starts for dx in (0, 1, 4, 5))
                 for y in (10, 34, 58))


#: The MULT18X18D sites of an ECP5 die by DSP row (top to bottom), each row in X order,
#: as nextpnr names them.
ECP5_DSP_SITES = {device: _ecp5_85k_dsp_rows() for device in ("LFE5U-85F", "LFE5UM-85F", "LFE5UM5G-85F")}


def array_dsp_sites(device, rows, cols):
    """``{(row, column): site}`` for an array's MULT18X18D blocks on ``device``, or None
    when its sites are not known or the array does not fit them as below.

    The array's rows are split into as many bands as the die has DSP rows (four array rows
    to a DSP row for the 85F's 12x12 array); in its DSP row a column's cells sit side by
    side, top cell first, and the columns follow each other in order. A partial sum then
    goes to the next site (or, between bands, straight down to the next DSP row), an
    activation four sites to the right, and each cell's adder and registers have one place
    beside their block, where the placer otherwise spread the cells over the die (a 9 ns
    route from one cell's block to its adder on the 85F)."""
    dsp_rows = ECP5_DSP_SITES.get(device)
    if not dsp_rows:
        return None
    band = -(-rows // len(dsp_rows))
    if band * cols > len(dsp_rows[0]):
        return None
    return {(k, n): dsp_rows[k // band][n * band + k % band] for k in range(rows) for n in range(cols)}


@dataclass(frozen=True)
class Board:
    """One supported board.

    Parameters
    ----------
    name : str
        The name ``--board`` takes.
    platform : str
        ``module:Class`` of the amaranth-boards platform.
    family : str
        ``"ice40"`` or ``"ecp5"``.
    clk_hz : int
        The NPU clock (the nextpnr constraint); a PLL makes it from the board clock.
    ram : str
        On-chip memory for the DMA: ``"spram"`` (iCE40UP5K) or ``"bram"``.
    ram_bytes : int
        Its size in bytes.
    npu : dict
        The default NPU configuration for the device (NPUConfig fields).
    programmer : str
        The tool ``npu flash`` runs (through the platform's ``toolchain_program``).
    leds : tuple
        LED resources the status outputs drive, in order.
    placer, router : str
        nextpnr's placer (``heap`` or ``static``) and router (``router1`` or ``router2``)
        for this board's builds.
    seeds : int
        How many nextpnr seeds a build tries by default until one meets timing (the
        fastest is kept): on the large ECP5 devices Fmax moves by 10-15% from seed to seed.
    mapping : str
        How Yosys' ABC9 maps logic to LUTs: ``"area"`` (Yosys' default script: fewest
        LUTs, paths off ABC's critical one made deeper to save area) or ``"delay"``
        (depth-optimal mapping kept, no area recovery: 15% more logic cells on the 85F, every path as
        shallow as ABC can make it; for the large devices, which have the room). See
        :data:`MAPPINGS`.
    dsp_placement : str
        Where the array cells' DSP blocks go: ``"placer"`` (nextpnr's choice) or
        ``"array"`` (pinned in array order where the device's sites are known,
        :func:`array_dsp_sites`; placed with HeAP, as nextpnr's static placer does not
        settle around fixed blocks).
    global_resets : bool
        On ECP5, put the board's and the NPU core's resets on global networks through a
        DCCA each (see :mod:`npu.boards.top`); off where nextpnr cannot route to the DCCA
        it picks (nextpnr 0.10's router2 on the 45F: "Failed to route arc ... to G_CLKI_TDCC0").
    """
    name: str
    platform: str
    family: str
    clk_hz: int
    ram: str
    ram_bytes: int
    npu: dict = field(default_factory=dict)
    programmer: str = "openFPGALoader"
    leds: tuple = ()
    description: str = ""
    placer: str = "heap"
    router: str = "router1"
    seeds: int = 1
    mapping: str = "area"
    global_resets: bool = True
    dsp_placement: str = "placer"

    def platform_class(self):
        import importlib
        module, cls = self.platform.split(":")
        return getattr(importlib.import_module(module), cls)

    @property
    def device(self):
        return self.platform_class().device


#: The iCE40UP5K's eight SB_MAC16 each hold two int8 multiplies (MODE_8x8): a 4x4 array.
#: The small-device control path: a serial requantiser in logic, the shortest queues,
#: one 32-bit counter (cycles), ring slot numbers of 13 bits (8192 slots: the whole
#: 128 KiB memory), no register slices (30 MHz needs no timing cuts).
_ICE40_NPU = dict(rows=4, cols=4, act_depth=256, wgt_depth=64, acc_depth=256, param_depth=16, ppu_lanes=1,
                  requantiser="serial", activations="broadcast", dispatch="sequential", perf_counter_bits=32, perf_counters="cycles",
                  ring_bits=13, register_slices=False)
#: ECP5: one int8 multiply per MULT18X18D; the requantiser's 32x31 multiply takes four.
_ECP5_12_25 = dict(rows=4, cols=6, act_depth=512, wgt_depth=128, acc_depth=512, param_depth=32, ppu_lanes=1)
_ECP5_45 = dict(rows=8, cols=8, act_depth=512, wgt_depth=256, acc_depth=512, param_depth=64, ppu_lanes=1)
_ECP5_85 = dict(rows=12, cols=12, act_depth=512, wgt_depth=384, acc_depth=512, param_depth=64, ppu_lanes=2)

_ULX3S_LEDS = tuple(("led", i) for i in range(8))
#: nextpnr's placer and router: the static placer spreads the large arrays over the die
#: (with HeAP the 85F's 12x12 NPU was packed into 40% of it and never routed).
#: The large devices also map logic for depth (they have the LUTs to spare).
#: They route with router1: nextpnr 0.11's router2 did not converge on four of five
#: placements of the 85F's NPU (overused wires rising again after 40 iterations), where
#: router1 routed seed 1 in 9.5 minutes at 111.5 MHz (the 45F: 106.1 MHz, seed 1).
_SMALL_PNR = ("heap", "router1", 1, "area")
_LARGE_PNR = ("static", "router1", 4, "delay")

BOARDS = {b.name: b for b in [
    Board("icebreaker", "amaranth_boards.icebreaker:ICEBreakerPlatform", "ice40", 30_000_000, "spram",
          128 * 1024, _ICE40_NPU, "iceprog", (("led_g", 0), ("led_r", 0)),
          "1BitSquared iCEBreaker (iCE40UP5K-SG48), 12 MHz oscillator, FTDI FT2232H UART"),
    *(Board(f"ulx3s-{size}", f"amaranth_boards.ulx3s:ULX3S_{size.upper()}_Platform", "ecp5", 100_000_000,
            "bram", ram, npu, "openFPGALoader", _ULX3S_LEDS,
            f"Radiona ULX3S (LFE5U-{size.upper()}-6BG381), 25 MHz oscillator, FT231X UART", *pnr,
            global_resets=size != "45f")
      for size, ram, npu, pnr in (("12f", 32 * 1024, _ECP5_12_25, _SMALL_PNR),
                                  ("25f", 64 * 1024, _ECP5_12_25, _SMALL_PNR),
                                  ("45f", 128 * 1024, _ECP5_45, _LARGE_PNR),
                                  ("85f", 256 * 1024, _ECP5_85, _LARGE_PNR))),
    *(Board(f"ecpix5-{size}", f"amaranth_boards.ecpix5:ECPIX5{size[:2]}Platform", "ecp5", 100_000_000,
            "bram", ram, npu, "openFPGALoader", (("rgb_led", 0), ("rgb_led", 1), ("rgb_led", 2), ("rgb_led", 3)),
            f"LambdaConcept ECPIX-5 (LFE5UM5G-{size.upper()}-8BG554), 100 MHz oscillator, FT2232 UART", *_LARGE_PNR,
            global_resets=size != "45f")
      for size, ram, npu in (("45f", 128 * 1024, _ECP5_45), ("85f", 256 * 1024, _ECP5_85))),
]}


def board_names():
    return list(BOARDS)


def board(name):
    """The :class:`Board` called ``name``; a one-line error naming the supported boards."""
    try:
        return BOARDS[name]
    except KeyError:
        raise ConfigError(f"board {name!r} is not supported; allowed: {', '.join(BOARDS)}") from None


def board_config(name, **overrides):
    """The default NPU configuration of board ``name`` (with ``overrides``)."""
    values = {**board(name).npu, **overrides}
    values.setdefault("name", "npu")
    return NPUConfig(**values)

