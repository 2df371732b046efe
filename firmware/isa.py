"""Encode and decode NPU instructions and data rows (``docs/isa.md``).

Field positions come from :mod:`npu.hdl.isa`, the table the RTL decoder reads too.
"""

from dataclasses import dataclass

import numpy as np

from ..hdl.isa import (FIELDS, INSTRUCTION_BITS, INSTRUCTION_BYTES, Buffer, Opcode, reserved_mask,
                       row_bytes, row_format, row_words)

__all__ = ["Load", "Compute", "Store", "Fence", "End", "encode", "decode", "encode_program",
           "DecodeError", "pack_row", "unpack_row", "pack_rows", "unpack_rows", "pack_matrix",
           "unpack_matrix", "pack_idx", "unpack_idx", "Buffer", "Opcode", "row_bytes", "row_words", "INSTRUCTION_BYTES"]


class DecodeError(ValueError):
    """An instruction word that is not a legal instruction."""


@dataclass(frozen=True)
class Load:
    buffer: int
    rows: int
    buf_addr: int
    mem_addr: int
    stride: int
    opcode = Opcode.LOAD


@dataclass(frozen=True)
class Compute:
    count: int
    act_addr: int
    wgt_addr: int
    acc_addr: int
    accumulate: bool = False
    #: N:M configurations: an N:M-compressed tile whose indices are entry ``idx_addr``.
    sparse: bool = False
    #: N:M configurations, dense tile: activation elements ``part*rows .. part*rows+rows-1``.
    part: int = 0
    idx_addr: int = 0
    opcode = Opcode.COMPUTE


@dataclass(frozen=True)
class Store:
    count: int
    acc_addr: int
    param_addr: int
    mem_addr: int
    stride: int
    opcode = Opcode.STORE


@dataclass(frozen=True)
class Fence:
    opcode = Opcode.FENCE


@dataclass(frozen=True)
class End:
    opcode = Opcode.END


_CLASSES = {Opcode.LOAD: Load, Opcode.COMPUTE: Compute, Opcode.STORE: Store, Opcode.FENCE: Fence,
            Opcode.END: End}


def encode(insn):
    """The 128-bit integer of instruction ``insn``; ``ValueError`` if a field does not fit."""
    word = int(insn.opcode)
    for f in FIELDS[insn.opcode]:
        value = int(getattr(insn, f.name))
        if not 0 <= value < 1 << f.width:
            raise ValueError(f"{type(insn).__name__}.{f.name} = {value} does not fit {f.width} bits")
        word |= value << f.offset
    return word


def decode(word):
    """The instruction encoded by the 128-bit integer ``word``; :class:`DecodeError` if illegal."""
    if isinstance(word, (bytes, bytearray)):
        word = int.from_bytes(word, "little")
    op = word & 0xF
    if op not in _CLASSES:
        raise DecodeError(f"illegal opcode {op}")
    op = Opcode(op)
    if word & reserved_mask(op):
        raise DecodeError(f"{op.name}: reserved bits set (mask {word & reserved_mask(op):#x})")
    values = {f.name: (word >> f.offset) & ((1 << f.width) - 1) for f in FIELDS[op]}
    if op == Opcode.LOAD and values["buffer"] not in tuple(Buffer):
        raise DecodeError(f"LOAD: buffer {values['buffer']} is not 0 (act), 1 (wgt), 2 (param) or 3 (idx)")
    if op == Opcode.COMPUTE:
        values["accumulate"] = bool(values["accumulate"])
        values["sparse"] = bool(values["sparse"])
    return _CLASSES[op](**values)


def encode_program(program):
    """The bytes of a list of instructions, 16 bytes each."""
    return b"".join(encode(insn).to_bytes(INSTRUCTION_BYTES, "little") for insn in program)


assert INSTRUCTION_BITS == 8 * INSTRUCTION_BYTES


def _field_bits(value, f):
    """``value`` as the ``f.size``-byte little-endian field (must fit ``f.width`` bits)."""
    value = int(value)
    lo, hi = ((-(1 << (f.width - 1)), (1 << (f.width - 1)) - 1) if f.signed else (0, (1 << f.width) - 1))
    if not lo <= value <= hi:
        raise ValueError(f"{f.name}[{f.index}] = {value} outside {lo}..{hi}")
    return (value & ((1 << (8 * f.size)) - 1)).to_bytes(f.size, "little")


def pack_row(config, kind, values):
    """Bytes of one ``kind`` row, padded to whole bus words.

    ``values``: for act/wgt/out a sequence of elements; for param a dict with ``bias``,
    ``mult``, ``shift`` (sequences of ``cols``) and ``zero_point``, ``clamp_lo``,
    ``clamp_hi``.
    """
    row = bytearray(row_words(config, kind) * config.bus_bytes)
    for f in row_format(config, kind):
        if kind == "param":
            v = values[f.name] if f.name in ("zero_point", "clamp_lo", "clamp_hi") else values[f.name][f.index]
        else:
            v = values[f.index]
        row[f.offset:f.offset + f.size] = _field_bits(v, f)
    return bytes(row)


def unpack_row(config, kind, data):
    """The values of one ``kind`` row read from ``data`` (at least :func:`row_bytes` bytes).

    Each field's low ``width`` bits are taken, sign-extended when signed: what LOAD does.
    """
    out = {}
    for f in row_format(config, kind):
        raw = int.from_bytes(data[f.offset:f.offset + f.size], "little") & ((1 << f.width) - 1)
        if f.signed and raw >> (f.width - 1):
            raw -= 1 << f.width
        out.setdefault(f.name, []).append(raw)
    if kind == "param":
        return {k: (v[0] if k in ("zero_point", "clamp_lo", "clamp_hi") else v) for k, v in out.items()}
    return out["data"]


def pack_rows(config, kind, rows, stride=None):
    """Bytes of consecutive ``kind`` rows ``stride`` bytes apart (default: packed), e.g. a
    matrix whose rows are LOAD entries. Gaps are zero."""
    size = row_words(config, kind) * config.bus_bytes
    stride = size if stride is None else stride
    if stride < size or stride % config.bus_bytes:
        raise ValueError(f"stride {stride} must be a multiple of {config.bus_bytes} and >= {size}")
    out = bytearray(stride * (len(rows) - 1) + size if len(rows) else 0)
    packed = [pack_row(config, kind, values) for values in rows] if kind == "param" else \
        [row.tobytes() for row in np.frombuffer(pack_matrix(config, kind, rows), np.uint8).reshape(-1, size)]
    for i, row in enumerate(packed):
        out[i * stride:i * stride + size] = row
    return bytes(out)


def unpack_rows(config, kind, data, count, stride=None):
    """``count`` rows of ``kind`` from ``data`` (see :func:`pack_rows`) as an int64 array
    (act/wgt/out) or a list of dicts (param)."""
    size = row_words(config, kind) * config.bus_bytes
    stride = size if stride is None else stride
    rows = [data[i * stride:i * stride + size] for i in range(count)]
    if kind == "param":
        return [unpack_row(config, kind, row) for row in rows]
    return unpack_matrix(config, kind, b"".join(rows), count)



def _element_dtype(config):
    return np.dtype("<i1") if config.element_bytes == 1 else np.dtype("<i2")


def pack_matrix(config, kind, values):
    """Bytes of the rows of ``values`` (act, wgt or out rows, one per matrix row), packed
    back to back, each padded to whole bus words: :func:`pack_rows` for a whole matrix,
    vectorised. Every value must fit ``data_width`` signed bits."""
    if kind not in ("act", "wgt", "out"):
        raise ValueError(f"pack_matrix packs act, wgt or out rows, not {kind!r}")
    lanes = config.act_lanes if kind == "act" else config.cols
    values = np.asarray(values, dtype=np.int64).reshape(-1, lanes)
    lo, hi = -(1 << (config.data_width - 1)), (1 << (config.data_width - 1)) - 1
    if values.size and (values.min() < lo or values.max() > hi):
        bad = values[(values < lo) | (values > hi)][0]
        raise ValueError(f"{kind} value {bad} outside {lo}..{hi} ({config.data_width}-bit data)")
    size = row_words(config, kind) * config.bus_bytes
    out = np.zeros((values.shape[0], size), dtype=np.uint8)
    data = values.astype(_element_dtype(config)).view(np.uint8).reshape(values.shape[0], -1)
    out[:, :data.shape[1]] = data
    return out.tobytes()


def unpack_matrix(config, kind, data, count):
    """``count`` act/wgt/out rows packed back to back (see :func:`pack_matrix`) as an
    int64 array; each element's low ``data_width`` bits, sign-extended."""
    lanes = config.act_lanes if kind == "act" else config.cols
    size = row_words(config, kind) * config.bus_bytes
    raw = np.frombuffer(bytes(data[:count * size]), dtype=np.uint8).reshape(count, size)
    eb = config.element_bytes
    values = raw[:, :lanes * eb].copy().view(_element_dtype(config)).astype(np.int64)
    bits = config.data_width
    values &= (1 << bits) - 1
    values -= (values >> (bits - 1)) << bits
    return values


def pack_idx(config, indices):
    """Bytes of index rows (LOAD buffer 3), one per tile: ``indices`` is ``(tiles, rows,
    cols)`` with values 0 .. M-1 (the position of PE (r, n)'s weight in its group of M).
    Each row is padded to whole bus words (see ``row_format(config, "idx")``)."""
    c = config
    fmt = row_format(c, "idx")
    indices = np.asarray(indices, dtype=np.int64).reshape(-1, c.rows, c.cols)
    m = c.sparse_nm[1]
    if indices.size and (indices.min() < 0 or indices.max() >= m):
        raise ValueError(f"sparse index {indices[(indices < 0) | (indices >= m)][0]} outside 0..{m - 1}")
    b, fsize = c.idx_bits, fmt[0].size
    # bit j of the index of (r, n) is bit n*b + j of row r's field
    bits = ((indices[..., None] >> np.arange(b)) & 1).astype(np.uint8).reshape(len(indices), c.rows, -1)
    field = np.zeros((len(indices), c.rows, 8 * fsize), dtype=np.uint8)
    field[:, :, :bits.shape[2]] = bits
    packed = np.packbits(field, axis=2, bitorder="little").reshape(len(indices), -1)
    out = np.zeros((len(indices), row_words(c, "idx") * c.bus_bytes), dtype=np.uint8)
    out[:, :packed.shape[1]] = packed
    return out.tobytes()


def unpack_idx(config, data, count):
    """``count`` index rows packed back to back (see :func:`pack_idx`) as a
    ``(count, rows, cols)`` int64 array."""
    c = config
    size = row_words(c, "idx") * c.bus_bytes
    fsize, b = row_format(c, "idx")[0].size, c.idx_bits
    raw = np.frombuffer(bytes(data[:count * size]), dtype=np.uint8).reshape(count, size)
    fields = raw[:, :c.rows * fsize].reshape(count, c.rows, fsize)
    bits = np.unpackbits(fields, axis=2, bitorder="little")[:, :, :c.cols * b].reshape(count, c.rows, c.cols, b)
    return (bits.astype(np.int64) << np.arange(b)).sum(axis=3)
