"""The instruction set and memory formats: the one definition of every bit.

The RTL decoder (:mod:`npu.hdl.command`), the Python encoder
(:mod:`npu.firmware.isa`), the golden model and ``docs/isa.md`` all read the field
tables here. An instruction is 128 bits, stored in memory as 16 bytes, little endian
(bit ``i`` of the instruction is bit ``i % 8`` of byte ``i // 8``).

Data rows in memory (what LOAD reads and STORE writes) are described by
:func:`row_format`: each field at a fixed byte offset, little endian, a whole number
of bytes; a row starts on a bus-word boundary and occupies :func:`row_words` bus words.
"""

import enum
from dataclasses import dataclass

__all__ = ["INSTRUCTION_BITS", "INSTRUCTION_BYTES", "Opcode", "Buffer", "ErrorCode", "Field",
           "FIELDS", "reserved_mask", "MemField", "row_format", "row_bytes", "row_words", "BUFFER_KINDS",
           "row_kinds"]

INSTRUCTION_BITS = 128
INSTRUCTION_BYTES = INSTRUCTION_BITS // 8


class Opcode(enum.IntEnum):
    """Bits 3:0 of every instruction. Opcode 0 is illegal, so zeroed memory traps."""
    LOAD = 1      #: 2-D strided block from memory into a buffer
    COMPUTE = 2   #: one weight tile over ``count`` activation rows into the accumulators
    STORE = 3     #: accumulators -> post-processing -> int8 -> 2-D strided block in memory
    FENCE = 4     #: wait until every earlier instruction has completed
    END = 5       #: wait for completion, raise the DONE interrupt and stop


class Buffer(enum.IntEnum):
    """The ``buffer`` field of LOAD."""
    ACT = 0       #: activation buffer: one entry = ``rows`` elements (one per bank)
    WGT = 1       #: weight buffer: one entry = ``cols`` weights
    PARAM = 2     #: post-processing parameters: per-column bias, multiplier, shift + output quantisation
    IDX = 3       #: sparse index buffer (N:M configurations only): one entry = a tile's ``rows x cols`` indices


class ErrorCode(enum.IntEnum):
    """``STATUS.ERROR_CODE``: why the NPU stopped (0 while no error)."""
    NONE = 0
    ILLEGAL_INSTRUCTION = 1   #: unknown opcode, a reserved bit set, or a sparse operation on a dense NPU
    BAD_OPERAND = 2           #: a count of 0, or a buffer range beyond the buffer's depth
    MISALIGNED = 3            #: a memory address or stride not a multiple of the bus word
    WINDOW = 4                #: a memory access outside the DMA window (refused before the bus)
    BUS_ERROR = 5             #: the bus answered ERR
    BAD_RING = 6              #: RING_SIZE is 0 or above 2**ring_bits, RING_BASE misaligned, or HEAD/TAIL >= RING_SIZE


@dataclass(frozen=True)
class Field:
    name: str
    offset: int     #: bit offset in the 128-bit instruction
    width: int
    doc: str


_OPCODE = Field("opcode", 0, 4, "operation (Opcode)")

#: Operand fields of each opcode (after the opcode field, bits 3:0). Every other bit is
#: reserved and must be 0; an instruction with a reserved bit set is illegal.
FIELDS = {
    Opcode.LOAD: (
        Field("buffer", 4, 2, "destination buffer: 0 activations, 1 weights, 2 parameters, "
                              "3 sparse indices (N:M configurations only)"),
        Field("rows", 16, 16, "entries to load, 1 .. depth of the buffer"),
        Field("buf_addr", 32, 16, "first buffer entry; entries buf_addr .. buf_addr+rows-1"),
        Field("mem_addr", 64, 32, "byte address of the first row in memory (bus-word aligned)"),
        Field("stride", 96, 32, "bytes from one row to the next in memory (bus-word aligned)"),
    ),
    Opcode.COMPUTE: (
        Field("accumulate", 4, 1, "1: add to the accumulators; 0: overwrite them"),
        Field("count", 16, 16, "activation rows to stream, 1 .. act_depth"),
        Field("act_addr", 32, 16, "first activation entry"),
        Field("wgt_addr", 48, 16, "first of the `rows` weight entries of the tile"),
        Field("acc_addr", 64, 16, "first accumulator entry"),
        Field("sparse", 5, 1, "1: an N:M-compressed tile whose indices are entry idx_addr "
                              "(N:M configurations only)"),
        Field("part", 8, 4, "dense tile on an N:M configuration: activation elements "
                            "part*rows .. part*rows+rows-1 (0 otherwise)"),
        Field("idx_addr", 80, 16, "sparse tile: index buffer entry (0 otherwise)"),
    ),
    Opcode.STORE: (
        Field("count", 16, 16, "accumulator rows to store, 1 .. acc_depth"),
        Field("acc_addr", 32, 16, "first accumulator entry"),
        Field("param_addr", 48, 16, "parameter entry (bias, multiplier, shift, zero point, clamp)"),
        Field("mem_addr", 64, 32, "byte address of the first output row (bus-word aligned)"),
        Field("stride", 96, 32, "bytes from one output row to the next (bus-word aligned)"),
    ),
    Opcode.FENCE: (),
    Opcode.END: (),
}


def fields(opcode):
    """Every field of ``opcode``, the opcode field first."""
    return (_OPCODE, *FIELDS[Opcode(opcode)])


def reserved_mask(opcode):
    """Mask of the bits of ``opcode``'s instructions that must be zero."""
    used = 0
    for f in fields(opcode):
        used |= ((1 << f.width) - 1) << f.offset
    return ((1 << INSTRUCTION_BITS) - 1) & ~used


@dataclass(frozen=True)
class MemField:
    """One field of a data row in memory."""
    name: str       #: e.g. "data", "bias", "mult", "shift", "zero_point"
    index: int      #: lane (element, column) or 0 for per-row fields
    offset: int     #: byte offset in the row
    size: int       #: bytes in memory
    width: int      #: bits used: the low ``width`` bits, sign-extended if ``signed``
    signed: bool


#: Formats of data rows: LOAD into each buffer, and STORE ("out").
ROW_KINDS = ("act", "wgt", "param", "out", "idx")

#: The row kind a LOAD into each buffer reads.
BUFFER_KINDS = {Buffer.ACT: "act", Buffer.WGT: "wgt", Buffer.PARAM: "param", Buffer.IDX: "idx"}


def row_format(config, kind):
    """The fields of one ``kind`` row in memory (``"act"``, ``"wgt"``, ``"param"``, ``"out"``).

    * act: ``act_lanes`` elements (``rows`` when dense), ``element_bytes`` each (signed,
      ``data_width`` bits used).
    * wgt, out: ``cols`` elements likewise (STORE writes each sign-extended to its bytes).
    * param: ``cols`` biases (``bias_bytes`` each, ``acc_width`` bits used), ``cols``
      multipliers (4 bytes, 31 bits used, unsigned), ``cols`` shifts (1 byte, 6 bits used),
      then zero point, clamp low, clamp high (``element_bytes`` each, signed).
    * idx (N:M configurations): one field per array row r, ``ceil(cols*idx_bits/8)``
      bytes, unsigned; bits ``n*idx_bits .. n*idx_bits+idx_bits-1`` hold the index
      (0 .. M-1) of the weight in PE (r, n) within its group of M activations.
    """
    c = config
    eb = c.element_bytes
    if kind in ("act", "wgt", "out"):
        lanes = c.act_lanes if kind == "act" else c.cols
        return [MemField("data", i, i * eb, eb, c.data_width, True) for i in range(lanes)]
    if kind == "idx":
        if not c.sparse:
            raise ValueError("idx rows exist only on N:M configurations")
        bits = c.cols * c.idx_bits
        size = -(-bits // 8)
        return [MemField("idx", r, r * size, size, bits, False) for r in range(c.rows)]
    if kind == "param":
        C, bb = c.cols, c.bias_bytes
        out = [MemField("bias", n, n * bb, bb, c.acc_width, True) for n in range(C)]
        out += [MemField("mult", n, C * bb + 4 * n, 4, 31, False) for n in range(C)]
        out += [MemField("shift", n, C * (bb + 4) + n, 1, 6, False) for n in range(C)]
        base = C * (bb + 5)
        out += [MemField(name, 0, base + i * eb, eb, c.data_width, True)
                for i, name in enumerate(("zero_point", "clamp_lo", "clamp_hi"))]
        return out
    raise ValueError(f"unknown row kind {kind!r}; allowed: {', '.join(ROW_KINDS)}")


def row_kinds(config):
    """The row kinds ``config`` has (``idx`` only with N:M sparsity)."""
    return ROW_KINDS if config.sparse else ROW_KINDS[:-1]


def row_bytes(config, kind):
    """Bytes of one ``kind`` row that carry data."""
    return max(f.offset + f.size for f in row_format(config, kind))


def row_words(config, kind):
    """Bus words one ``kind`` row occupies (rows start on a bus-word boundary)."""
    return -(-row_bytes(config, kind) // config.bus_bytes)
