"""Payload layouts of the datapath's streams: the one definition of every field.

The RTL, the cocotb drivers (through the generated manifest) and the documentation
all read field names, offsets and widths from here.
"""

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, enum
from amaranth.utils import ceil_log2

from ..generators.config import REQUANT_MULT_WIDTH, REQUANT_SHIFT_WIDTH
from .isa import row_words

__all__ = ["TileOp", "addr_width", "count_width", "command_layout", "ppu_command_layout", "PPU_COMMAND_FIELDS",
           "act_write_layout", "wgt_write_layout", "idx_entry_layout", "idx_write_layout", "param_write_layout",
           "output_layout"]


class TileOp(enum.Enum, shape=1):
    """Operation of a datapath command."""
    #: Load one weight tile into the array and stream ``count`` activation rows through it.
    COMPUTE = 0
    #: Post-process ``count`` accumulator rows into int8 rows on the output stream.
    OUTPUT = 1


def addr_width(depth):
    """Address width for a memory of ``depth`` entries (at least 1 bit)."""
    return max(1, ceil_log2(depth))


def count_width(config):
    """Width of a row count: 0 up to the deepest buffer, inclusive."""
    return ceil_log2(max(config.act_depth, config.acc_depth) + 1)


def command_layout(config):
    """One tile operation (see ``docs/architecture.md``, "Local control interface").

    N:M configurations add ``sparse`` (the tile is N:M-compressed, its indices are
    index entry ``idx_addr``) and ``part`` (a dense tile's activation elements
    ``part*rows ..``)."""
    sparse = {}
    if config.sparse:
        sparse = {
            "sparse":   unsigned(1),
            "part":     unsigned(max(1, (config.dense_parts - 1).bit_length())),
            "idx_addr": unsigned(addr_width(config.idx_depth)),
        }
    return data.StructLayout({
        "op":         TileOp,
        "accumulate": unsigned(1),
        "count":      unsigned(count_width(config)),
        "act_addr":   unsigned(addr_width(config.act_depth)),
        "wgt_addr":   unsigned(addr_width(config.wgt_depth)),
        "acc_addr":   unsigned(addr_width(config.acc_depth)),
        "param_addr": unsigned(addr_width(config.param_depth)),
        "zero_point": signed(config.data_width),
        "clamp_lo":   signed(config.data_width),
        "clamp_hi":   signed(config.data_width),
        **sparse,
    })


#: Fields of a command that the post-processing unit needs for an OUTPUT.
PPU_COMMAND_FIELDS = ("count", "acc_addr", "param_addr", "zero_point", "clamp_lo", "clamp_hi")


def ppu_command_layout(config):
    """What the post-processing unit needs of an OUTPUT command (a subset of the command)."""
    command = command_layout(config)
    return data.StructLayout({name: command[name].shape for name in PPU_COMMAND_FIELDS})


def act_write_layout(config):
    """Write one activation row: element k goes to bank k, where ``mask[k]`` is set."""
    return data.StructLayout({
        "addr": unsigned(addr_width(config.act_depth)),
        "mask": unsigned(config.act_lanes),
        "data": data.ArrayLayout(signed(config.data_width), config.act_lanes),
    })


def idx_entry_layout(config):
    """One index entry (N:M configurations): per array row r, per column n, the position
    (0 .. M-1) of PE (r, n)'s weight in its group of M activations."""
    return data.ArrayLayout(data.ArrayLayout(unsigned(config.idx_bits), config.cols), config.rows)


def idx_write_layout(config):
    """Write one index entry (N:M configurations)."""
    return data.StructLayout({
        "addr": unsigned(addr_width(config.idx_depth)),
        "data": idx_entry_layout(config),
    })


def wgt_write_layout(config):
    """Write one weight-buffer row (``cols`` weights), lane n where ``mask[n]`` is set."""
    return data.StructLayout({
        "addr": unsigned(addr_width(config.wgt_depth)),
        "mask": unsigned(config.cols),
        "data": data.ArrayLayout(signed(config.data_width), config.cols),
    })


def param_lane_layout(config):
    """Post-processing parameters of one output column."""
    return data.StructLayout({
        "bias":  signed(config.acc_width),
        "mult":  unsigned(REQUANT_MULT_WIDTH),
        "shift": unsigned(REQUANT_SHIFT_WIDTH),
    })


def param_write_layout(config):
    """Write one parameter entry: lane n (column n) where ``mask[n]`` is set. With
    ``config.streamed_params``: one 32-bit word of a parameter row in memory (``word``: its
    index in the row) for entry ``addr``."""
    if config.streamed_params:
        return data.StructLayout({
            "addr": unsigned(addr_width(config.param_depth)),
            "word": unsigned(max(1, (row_words(config, "param") - 1).bit_length())),
            "data": unsigned(32),
        })
    return data.StructLayout({
        "addr": unsigned(addr_width(config.param_depth)),
        "mask": unsigned(config.cols),
        "data": data.ArrayLayout(param_lane_layout(config), config.cols),
    })


def output_layout(config):
    """One output row: ``cols`` int8 (``data_width``) results."""
    return data.ArrayLayout(signed(config.data_width), config.cols)
