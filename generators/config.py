"""NPU configuration: the one description every generator, model and tool reads.

An :class:`NPUConfig` is validated when it is made, so a bad value is reported where
it enters (a TOML file or a CLI flag) with the parameter's name, the bad value and
what is allowed, and never surfaces later as an elaboration error.
"""

import dataclasses
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from amaranth.utils import ceil_log2

__all__ = ["ConfigError", "NPUConfig", "load_config", "parse_sparsity", "SPARSITY_MODES",
           "SPARSE_GROUP_SIZES", "BUS_WIDTHS"]

#: Sparsity settings: "dense", or "N:M" (N of every M consecutive weights along K may be
#: non-zero) with M one of SPARSE_GROUP_SIZES, 1 <= N < M and N dividing ``rows``.
SPARSITY_MODES = ("dense", "N:M")
SPARSE_GROUP_SIZES = (2, 4, 8, 16)

#: Fixed-point requantisation multiplier width (unsigned) and shift width.
REQUANT_MULT_WIDTH = 31
REQUANT_SHIFT_WIDTH = 6


class ConfigError(ValueError):
    """A configuration value is outside what the generator supports.

    The message is one line naming the parameter, the bad value and what is allowed.
    """


# (section in TOML, name, minimum, maximum); maximum may be None (no upper bound).
_INT_LIMITS = {
    "rows":        ("array",   1, 64),
    "cols":        ("array",   1, 64),
    "data_width":  ("array",   2, 16),
    "acc_width":   ("array",   None, 64),  # minimum depends on data_width and rows
    "act_depth":   ("buffers", 2, 65536),
    "wgt_depth":   ("buffers", None, 65536),  # minimum depends on rows
    "acc_depth":   ("buffers", 2, 65536),
    "param_depth": ("buffers", 1, 4096),
    "bus_width":   ("bus",     32, 128),
    "ppu_lanes":   ("array",   0, 64),     # 0: one per column
    "compute_queue":     ("control", 2, 16),   # a power of two
    "dma_queue":         ("control", 2, 16),   # a power of two
    "perf_counter_bits": ("control", 32, 48),
    "ring_bits":         ("control", 4, 32),
}

# name -> (section in TOML, allowed string values; the first is the default).
_STR_CHOICES = {
    "requantiser": ("array", ("pipelined", "serial")),
    "activations": ("array", ("systolic", "broadcast")),
    "perf_counters": ("control", ("all", "cycles")),
    "dispatch": ("control", ("overlapped", "sequential")),
}
# name -> section in TOML of each true/false setting.
_BOOLS = {
    "register_slices": "control",
}

#: Data widths the DMA Wishbone master supports.
BUS_WIDTHS = (32, 64, 128)


@dataclass(frozen=True)
class NPUConfig:
    """Parameters of one generated NPU.

    Parameters
    ----------
    name : str
        Identifier used for the Verilog top-level module and build directories.
    rows : int
        Array rows R: the reduction (K) dimension of one weight tile.
    cols : int
        Array columns C: output channels (N) computed at once.
    data_width : int
        Width of activations and weights, signed (8 for int8).
    acc_width : int
        Width of the accumulators, signed; arithmetic wraps modulo ``2**acc_width``.
        At least ``2*data_width + ceil_log2(rows)`` so one tile's dot product is exact.
    act_depth : int
        Entries per activation bank (one bank per array row): the largest M of a tile.
    wgt_depth : int
        Rows of the weight buffer (each ``cols`` weights wide); a tile uses ``rows`` of them.
    acc_depth : int
        Entries per accumulator bank (one bank per array column).
    param_depth : int
        Entries of the post-processing parameter buffer (per-column bias, multiplier, shift).
    bus_width : int
        Data width of the Wishbone DMA master in bits: 32, 64 or 128.
    ppu_lanes : int
        Requantisation lanes of the post-processing unit: it turns an accumulator row
        into an output row in ``cols / ppu_lanes`` cycles. 0 (the default) means one
        lane per column (a row per cycle). Fewer lanes save the 32x31-bit multipliers
        (four DSP blocks each on ECP5) on small FPGAs; must divide ``cols``.
    requantiser : str
        How a requantisation lane is built: ``"pipelined"`` (a result per cycle; the
        32x31-bit multiply as DSP-sized limb products, eight pipeline stages, for 100 MHz
        on ECP5) or ``"serial"`` (a result every few cycles from a small shift-and-add
        multiplier and shifter: for devices whose multipliers all go to the array, such as
        the iCE40UP5K).
    activations : str
        How activations reach the array's columns: ``"systolic"`` (the default: from
        cell to cell, a register per column, and the columns' sums de-skewed at the
        bottom) or ``"broadcast"`` (each array row's activation goes to all its cells in
        the same cycle: no forwarding registers between the cells and no de-skew
        registers, and ``cols - 1`` cycles less latency; for small arrays on small
        devices, where a fan-out of ``cols`` is cheap). Results are the same.
    dispatch : str
        How the command processor hands instructions to the units: ``"overlapped"``
        (the default: through the compute and DMA queues, with a scoreboard, so loads,
        computes and stores of different tiles overlap) or ``"sequential"`` (one
        instruction at a time: each waits until every earlier one has finished; no
        queues, no scoreboard, no instruction fetcher (the DMA unit fetches) and one
        weight bank, for small devices such as the iCE40UP5K). Results are the same;
        only cycle counts differ. ``compute_queue`` and ``dma_queue`` are unused when
        sequential.
    compute_queue : int
        Entries of the compute queue: COMPUTEs and STOREs dispatched to the datapath and
        not yet finished (2, 4, 8 or 16). Deeper queues let more instructions overlap.
    dma_queue : int
        Entries of the DMA queue: LOADs and STOREs dispatched to the DMA unit and not yet
        finished (2, 4, 8 or 16).
    perf_counter_bits : int
        Width of each performance counter (32 to 48); counters wrap at this width.
    perf_counters : str
        Which performance counters are built: ``"all"`` (the default), or ``"cycles"``
        (only ``PERF_CYCLES``; the other ``PERF_*`` registers read 0). Fifteen 48-bit
        counters are about a tenth of a small FPGA (iCE40UP5K).
    ring_bits : int
        The command ring may have up to ``2**ring_bits`` slots (4 to 32; 32 by default):
        a larger ``RING_SIZE`` is refused with ``BAD_RING``. The ring's slot numbers are
        this wide inside the NPU (fetcher, decode, queues); 32-bit ones cost a small FPGA
        (iCE40UP5K) hundreds of logic cells.
    register_slices : bool
        Timing cuts for 100 MHz on ECP5: register slices on the NPU's bus master, its
        command and output-row streams and, in a board system, around the interconnect;
        two more registers in each array cell; the accumulator's read data registered;
        a second STORE row register; window checks of every next request address.
        False saves their flip-flops and logic on small, slow devices (iCE40), and
        changes only cycle counts.
    sparsity : str
        ``"dense"``, or ``"N:M"`` for the sparse front end: a COMPUTE may then run a
        tile of N:M-compressed weights (at most N non-zeros in every M consecutive
        weights along K, per output column) over ``rows*M/N`` activations, so it does
        the work of ``rows*M/N`` dense K positions in the cycles of ``rows``. M is 2, 4,
        8 or 16; N divides ``rows``. Dense tiles still run on a sparse NPU.
    """

    name: str = "npu"
    rows: int = 8
    cols: int = 8
    data_width: int = 8
    acc_width: int = 32
    act_depth: int = 512
    wgt_depth: int = 256
    acc_depth: int = 512
    param_depth: int = 16
    bus_width: int = 32
    ppu_lanes: int = 0
    requantiser: str = "pipelined"
    activations: str = "systolic"
    dispatch: str = "overlapped"
    compute_queue: int = 8
    dma_queue: int = 4
    perf_counter_bits: int = 48
    perf_counters: str = "all"
    ring_bits: int = 32
    register_slices: bool = True
    sparsity: str = "dense"

    def __post_init__(self):
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.name):
            raise ConfigError(f"name = {self.name!r} is invalid: must be a Verilog identifier "
                              f"(letters, digits, '_', not starting with a digit)")
        for param, (_, lo, hi) in _INT_LIMITS.items():
            value = getattr(self, param)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{param} = {value!r} is invalid: must be an integer")
            lo = self._minimum(param) if lo is None else lo
            if value < lo or (hi is not None and value > hi):
                raise ConfigError(f"{param} = {value} is invalid: must be an integer from {lo} to {hi}"
                                  + self._why_minimum(param))
        for param, (_, choices) in _STR_CHOICES.items():
            value = getattr(self, param)
            if value not in choices:
                raise ConfigError(f"{param} = {value!r} is invalid: allowed: {', '.join(map(repr, choices))}")
        for param in _BOOLS:
            if not isinstance(getattr(self, param), bool):
                raise ConfigError(f"{param} = {getattr(self, param)!r} is invalid: must be true or false")
        for param in ("compute_queue", "dma_queue"):
            value = getattr(self, param)
            if value & (value - 1):
                raise ConfigError(f"{param} = {value} is invalid: must be a power of two from 2 to 16")
        if self.bus_width not in BUS_WIDTHS:
            raise ConfigError(f"bus_width = {self.bus_width} is invalid: allowed: "
                              f"{', '.join(map(str, BUS_WIDTHS))}")
        if self.ppu_lanes and (self.ppu_lanes > self.cols or self.cols % self.ppu_lanes):
            raise ConfigError(f"ppu_lanes = {self.ppu_lanes} is invalid for cols = {self.cols}: must divide cols "
                              f"(or be 0: one lane per column)")
        n, m = parse_sparsity(self.sparsity)
        if m and self.rows % n:
            raise ConfigError(f"sparsity = {self.sparsity!r} is invalid for rows = {self.rows}: N = {n} must "
                              f"divide rows (each group of N array rows shares one group of M activations)")

    def _minimum(self, param):
        if param == "acc_width":
            return self.min_acc_width
        if param == "wgt_depth":
            return 2 * self.rows
        raise AssertionError(param)

    def _why_minimum(self, param):
        if param == "acc_width":
            return f" (2*data_width + ceil_log2(rows) = {self.min_acc_width} bits hold one tile's dot product)"
        if param == "wgt_depth":
            return " (at least two weight tiles of 'rows' rows, for double buffering)"
        return ""

    # Derived quantities: one place, read by the RTL, the golden model and the manifest.

    @property
    def min_acc_width(self):
        """Smallest accumulator width that holds a ``rows``-long dot product exactly."""
        return 2 * self.data_width + ceil_log2(self.rows)

    @property
    def psum_width(self):
        """Width of partial sums inside the array (exact; sign-extended into the accumulator)."""
        return self.min_acc_width

    @property
    def sparse_nm(self):
        """``(N, M)`` of the N:M sparsity; ``(0, 0)`` when dense."""
        return parse_sparsity(self.sparsity)

    @property
    def sparse(self):
        """True when the NPU has the sparse front end."""
        return self.sparsity != "dense"

    @property
    def act_lanes(self):
        """Elements of one activation entry (one bank each): ``rows`` when dense, else
        ``rows/N*M``: the K positions one sparse tile covers."""
        n, m = self.sparse_nm
        return self.rows // n * m if m else self.rows

    @property
    def act_banks(self):
        """Activation buffer banks: one per element of an activation entry."""
        return self.act_lanes

    @property
    def dense_parts(self):
        """Dense tiles one activation entry holds (``act_lanes // rows``; 1 when dense):
        a dense COMPUTE on a sparse NPU names its part of the entry."""
        return self.act_lanes // self.rows

    @property
    def idx_bits(self):
        """Bits of one sparse weight's index within its group of M (0 when dense)."""
        return self.sparse_nm[1].bit_length() - 1 if self.sparse else 0

    @property
    def idx_depth(self):
        """Entries of the index buffer (one per weight tile: ``rows x cols`` indices); 0 when dense."""
        return self.wgt_depth // self.rows if self.sparse else 0

    @property
    def requant_lanes(self):
        """Lanes of the post-processing unit (``ppu_lanes``, or ``cols`` when 0)."""
        return self.ppu_lanes or self.cols

    @property
    def weight_banks(self):
        """Weight banks in each array cell: two (the next tile's weights load while a tile
        computes), one with sequential dispatch (nothing overlaps)."""
        return 1 if self.dispatch == "sequential" else 2

    @property
    def streamed_params(self):
        """Parameter rows go from the bus into the requantiser word by word: its bias,
        multiplier and shift memories each take the words that hold their fields, and the
        DMA unit keeps no parameter row. With sequential dispatch and one serial lane, a
        32-bit bus, 4-byte biases, 1-byte elements, and the zero point and clamps in one
        bus word (the iCEBreaker's configuration)."""
        return (self.dispatch == "sequential" and self.requantiser == "serial" and self.requant_lanes == 1
                and self.bus_width == 32 and self.bias_bytes == 4 and self.element_bytes == 1
                and (9 * self.cols) % 4 <= 1)

    def builds_counter(self, name):
        """Whether performance counter ``name`` is built (``perf_counters``); one that is
        not reads 0."""
        return self.perf_counters == "all" or name == "cycles"

    @property
    def requant_passes(self):
        """Cycles the post-processing unit spends on one accumulator row."""
        return self.cols // self.requant_lanes

    @property
    def acc_banks(self):
        """Accumulator buffer banks: one per array column."""
        return self.cols

    @property
    def wgt_banks(self):
        """Weight buffer lanes: one per array column, ``data_width`` bits each, written
        under a per-lane mask (one memory, ``cols`` lanes wide)."""
        return self.cols

    @property
    def macs_per_cycle(self):
        """Peak multiply-accumulates per clock cycle."""
        return self.rows * self.cols

    @property
    def bus_bytes(self):
        """Bytes per DMA bus word."""
        return self.bus_width // 8

    @property
    def element_bytes(self):
        """Bytes one activation, weight or output element occupies in memory (1 or 2)."""
        return (self.data_width + 7) // 8

    @property
    def bias_bytes(self):
        """Bytes one bias occupies in a parameter block in memory (4 or 8)."""
        return 4 if self.acc_width <= 32 else 8

    def replace(self, **changes):
        """Return a copy with ``changes`` applied (validated like any new config)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        """The configuration as TOML-shaped nested dicts (the form :func:`load_config` reads)."""
        out = {"name": self.name, "sparsity": self.sparsity}
        for param, section in _sections().items():
            out.setdefault(section, {})[param] = getattr(self, param)
        return out

    @classmethod
    def from_dict(cls, data, *, source="configuration"):
        """Build a config from TOML-shaped nested dicts, rejecting unknown keys."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a table of settings")
        flat = {}
        tabled = _sections()
        sections = set(tabled.values())
        for key, value in data.items():
            if key in sections:
                if not isinstance(value, dict):
                    raise ConfigError(f"{source}: [{key}] must be a table")
                for sub, sub_value in value.items():
                    if tabled.get(sub) != key:
                        allowed = sorted(p for p, s in tabled.items() if s == key)
                        raise ConfigError(f"{source}: unknown parameter {key}.{sub}; allowed in [{key}]: "
                                          f"{', '.join(allowed)}")
                    flat[sub] = sub_value
            elif key in ("name", "sparsity"):
                flat[key] = value
            elif key in tabled:
                raise ConfigError(f"{source}: parameter {key!r} belongs in the [{tabled[key]}] table")
            else:
                raise ConfigError(f"{source}: unknown parameter {key!r}; allowed top-level keys: name, "
                                  f"sparsity and the tables [{'], ['.join(sorted(sections))}]")
        return cls(**flat)

    @classmethod
    def parameter_names(cls):
        """Names of all parameters that can be set (for CLI overrides)."""
        return ["name", "sparsity", *_sections()]


def _sections():
    """``{parameter: TOML table}`` of every parameter that lives in a table."""
    return {**{p: v[0] for p, v in _INT_LIMITS.items()}, **{p: v[0] for p, v in _STR_CHOICES.items()}, **_BOOLS}


def parse_sparsity(value):
    """``(N, M)`` of an ``"N:M"`` sparsity setting, ``(0, 0)`` for ``"dense"``; one-line
    :class:`ConfigError` for anything else."""
    allowed = (f"allowed: 'dense' or 'N:M' with M in {', '.join(map(str, SPARSE_GROUP_SIZES))} "
               f"and 1 <= N < M (e.g. '2:4', '1:4', '2:8')")
    if not isinstance(value, str):
        raise ConfigError(f"sparsity = {value!r} is invalid: must be a string; {allowed}")
    if value == "dense":
        return 0, 0
    match = re.fullmatch(r"(\d+):(\d+)", value)
    if not match:
        raise ConfigError(f"sparsity = {value!r} is invalid: {allowed}")
    n, m = int(match[1]), int(match[2])
    if m not in SPARSE_GROUP_SIZES or not 1 <= n < m:
        raise ConfigError(f"sparsity = {value!r} is invalid: {allowed}")
    return n, m


def _manifest_config(path):
    """The configuration section of a generated manifest (``npu.json``)."""
    import json
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict):
        raise ConfigError(f"{path}: not an NPU manifest (no 'config' section); give a TOML configuration "
                          f"or the npu.json that 'npu generate' wrote")
    return manifest["config"]


def load_config(path=None, **overrides):
    """Load a config from a TOML file, or from the manifest (``npu.json``) that ``npu
    generate`` wrote for a design (defaults when ``path`` is None), and apply overrides.

    Raises :class:`ConfigError` with a one-line message for any problem, including a
    missing or malformed file.
    """
    data = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            if path.suffix == ".json":
                data = _manifest_config(path)
            else:
                with path.open("rb") as f:
                    data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such configuration file") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a directory, expected a TOML file") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read: {e}") from None
    config = NPUConfig.from_dict(data, source=source)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return config.replace(**overrides) if overrides else config
