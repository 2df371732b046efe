"""Register map -> ``npu_regs.h`` (C), ``registers.md`` (docs) and ``npu_regs.py`` (Python).

Everything here is read from :mod:`npu.hdl.regs` and :mod:`npu.hdl.isa`; nothing is
typed twice. The identification registers whose reset is ``"configuration"`` take
their values from the :class:`~npu.generators.config.NPUConfig`, so a driver can
compare them with the header it was compiled against.

``docs/registers.md`` is the page for the default configuration; regenerate it with::

    .venv/bin/python -m npu.generators.regmap docs/registers.md
"""

import inspect
import re
import sys
from pathlib import Path

from ..hdl import isa, regs
from .config import NPUConfig

__all__ = ["FILES", "REGENERATE_DOCS", "reset_value", "field_values", "sparsity_nm", "config_constants",
           "c_header", "markdown", "python_module", "write_all"]

#: Files :func:`write_all` writes, in order.
FILES = ("npu_regs.h", "registers.md", "npu_regs.py")

#: The command that rewrites the checked-in ``docs/registers.md``.
REGENERATE_DOCS = ".venv/bin/python -m npu.generators.regmap docs/registers.md"

_ACCESS = {
    "ro": "read-only; writes are ignored",
    "rw": "read/write",
    "w1c": "read; writing 1 to a bit clears it, writing 0 leaves it",
    "wo": "write-only; reads return 0",
}


def sparsity_nm(config):
    """``(N, M)`` of the config's N:M sparsity; ``(0, 0)`` when dense."""
    return config.sparse_nm


def _config_fields(config):
    """Field (or whole-register) values of the ``init="configuration"`` registers."""
    n, m = sparsity_nm(config)
    return {
        "ID_ARRAY": {"ROWS": config.rows, "COLS": config.cols, "DATA_WIDTH": config.data_width,
                     "ACC_WIDTH": config.acc_width},
        "ID_ACT_DEPTH": config.act_depth,
        "ID_WGT_DEPTH": config.wgt_depth,
        "ID_ACC_DEPTH": config.acc_depth,
        "ID_PARAM_DEPTH": config.param_depth,
        "ID_BUS": {"BUS_WIDTH": config.bus_width, "SPARSITY_N": n, "SPARSITY_M": m},
    }


def _pack(reg, value):
    if isinstance(value, int):
        if not 0 <= value < 1 << 32:
            raise ValueError(f"{reg.name} = {value} does not fit in 32 bits")
        return value
    known = {f.name: f for f in reg.fields}
    if set(value) != set(known):
        raise ValueError(f"{reg.name}: configuration gives fields {sorted(value)}, register has {sorted(known)}")
    word = 0
    for name, v in value.items():
        f = known[name]
        if not 0 <= v < 1 << f.width:
            raise ValueError(f"{reg.name}.{name} = {v} does not fit in its {f.width} bits")
        word |= v << f.offset
    return word


def reset_value(reg, config):
    """The value ``reg`` reads after reset in the NPU generated from ``config``."""
    if reg.init == "configuration":
        table = _config_fields(config)
        if reg.name not in table:
            raise ValueError(f"{reg.name} has init='configuration' but no configuration value is defined "
                             f"for it in npu.generators.regmap")
        return _pack(reg, table[reg.name])
    if not isinstance(reg.init, int):
        raise ValueError(f"{reg.name}: init must be an integer or 'configuration', not {reg.init!r}")
    return _pack(reg, reg.init)


def field_values(reg, value):
    """``{field name: value}`` of the register word ``value``."""
    return {f.name: (value >> f.offset) & ((1 << f.width) - 1) for f in reg.fields}


def config_constants(config):
    """Configuration values exported as ``NPU_CFG_<NAME>`` and ``CONFIG[...]``."""
    n, m = sparsity_nm(config)
    return {
        "ROWS": config.rows, "COLS": config.cols, "DATA_WIDTH": config.data_width,
        "ACC_WIDTH": config.acc_width, "ACT_DEPTH": config.act_depth, "WGT_DEPTH": config.wgt_depth,
        "ACC_DEPTH": config.acc_depth, "PARAM_DEPTH": config.param_depth, "BUS_WIDTH": config.bus_width,
        "BUS_BYTES": config.bus_bytes, "ELEMENT_BYTES": config.element_bytes,
        "BIAS_BYTES": config.bias_bytes, "MACS_PER_CYCLE": config.macs_per_cycle,
        "SPARSITY_N": n, "SPARSITY_M": m, "ACT_LANES": config.act_lanes, "DENSE_PARTS": config.dense_parts,
        "IDX_BITS": config.idx_bits, "IDX_DEPTH": config.idx_depth,
    }


def _mask(f):
    return ((1 << f.width) - 1) << f.offset


def _bits(f):
    return str(f.offset) if f.width == 1 else f"{f.offset + f.width - 1}:{f.offset}"


def _summary(config):
    return (f"'{config.name}': {config.rows}x{config.cols} array, {config.data_width}-bit data, "
            f"{config.acc_width}-bit accumulators, {config.bus_width}-bit DMA bus, {config.sparsity}")


def _param_groups(config):
    """``{name: (offset, size)}`` of the parameter row's fields; lane ``i`` is at ``offset + i*size``."""
    groups = {}
    for f in isa.row_format(config, "param"):
        offset, size = groups.setdefault(f.name, (f.offset, f.size))
        if f.offset != offset + f.index * size or f.size != size:
            raise AssertionError(f"param row field {f.name}[{f.index}] is not evenly strided")
    return groups


def _check_instruction_fields():
    for op in isa.Opcode:
        for f in isa.fields(op):
            if f.offset // 32 != (f.offset + f.width - 1) // 32:
                raise AssertionError(f"{op.name}.{f.name} straddles a 32-bit word; npu_insn_set cannot set it")


# -- C ---------------------------------------------------------------------------------------------

def _c_comment(text):
    return "/* " + text.replace("*/", "* /") + " */"


def _define(name, value, comment=None):
    text = f"#define {name:<44} {value}"
    if comment:
        text = f"{text}  {_c_comment(comment)}"
    return text


def _hex(value, digits=8):
    return f"0x{value:0{digits}X}u"


def c_header(config):
    """``npu_regs.h`` for ``config``: C99 register offsets, fields, ISA constants and helpers."""
    _check_instruction_fields()
    offset_digits = len(f"{(4 << regs.CSR_ADDR_WIDTH) - 1:X}")
    out = [
        "/*",
        f" * npu_regs.h: register map and instruction set of the NPU {_summary(config)}.",
        " * Generated by npu-gen (npu generate) from npu/hdl/regs.py and npu/hdl/isa.py; do not edit.",
        " *",
        " * Registers are 32 bits wide at the byte offsets below (multiples of 4) on the",
        " * Wishbone slave; pass them to npu_read32 / npu_write32 with the slave's base address.",
        " */",
        "#ifndef NPU_REGS_H",
        "#define NPU_REGS_H",
        "",
        "#include <stdint.h>",
        "",
        _define("NPU_MAGIC_VALUE", _hex(regs.MAGIC), "ID_MAGIC reads this"),
        _define("NPU_VERSION_VALUE", _hex(regs.VERSION), "ID_VERSION: major << 8 | minor"),
        _define("NPU_CSR_ADDR_WIDTH", f"{regs.CSR_ADDR_WIDTH}u", "word-address bits of the register slave"),
        _define("NPU_CSR_BYTES", _hex(4 << regs.CSR_ADDR_WIDTH, offset_digits), "bytes of register space"),
        "",
        "/* Configuration this header was generated for (compare with the ID_* registers). */",
    ]
    out += [_define(f"NPU_CFG_{name}", f"{value}u") for name, value in config_constants(config).items()]
    out += ["", "/* Register byte offsets. */"]
    out += [_define(f"NPU_{reg.name}", _hex(reg.offset, offset_digits), f"{reg.access}: {reg.doc}")
            for reg in regs.REGISTERS]
    out += ["", "/* Reset values (ID_* registers: the values for this configuration). */"]
    out += [_define(f"NPU_{reg.name}_RESET", _hex(reset_value(reg, config))) for reg in regs.REGISTERS]
    for reg in regs.REGISTERS:
        if not reg.fields:
            continue
        out += ["", _c_comment(f"{reg.name} fields.")]
        for f in reg.fields:
            out.append(_define(f"NPU_{reg.name}_{f.name}_SHIFT", f"{f.offset}u", f.doc))
            out.append(_define(f"NPU_{reg.name}_{f.name}_MASK", _hex(_mask(f))))
    out += ["", "/* Performance counters: read _LO first (it latches _HI); npu_read_perf64 does. */",
            _define("NPU_PERF_COUNT", f"{len(regs.PERF_COUNTERS)}u"),
            _define("NPU_PERF_COUNTER_BITS", f"{config.perf_counter_bits}u")]
    out += ["", "/* Error codes (STATUS.ERROR_CODE). */"]
    out += [_define(f"NPU_ERR_{name}", f"{value}u") for name, value in regs.ERROR_CODES.items()]
    out += ["", "/* Instructions: 16 bytes, little endian; word i holds bits 32*i+31 .. 32*i. */",
            _define("NPU_INSTRUCTION_BYTES", f"{isa.INSTRUCTION_BYTES}u"),
            _define("NPU_INSTRUCTION_WORDS", f"{isa.INSTRUCTION_BYTES // 4}u")]
    out += [_define(f"NPU_OP_{op.name}", f"{op.value}u") for op in isa.Opcode]
    out += [_define(f"NPU_BUF_{buf.name}", f"{buf.value}u") for buf in isa.Buffer]
    opcode_field = isa.fields(isa.Opcode.LOAD)[0]
    out += ["", "/* Instruction fields: bit offset in the 128-bit instruction and width. */",
            _define("NPU_INSN_OPCODE_OFFSET", f"{opcode_field.offset}u", opcode_field.doc),
            _define("NPU_INSN_OPCODE_WIDTH", f"{opcode_field.width}u")]
    for op, op_fields in isa.FIELDS.items():
        for f in op_fields:
            out.append(_define(f"NPU_{op.name}_{f.name.upper()}_OFFSET", f"{f.offset}u", f.doc))
            out.append(_define(f"NPU_{op.name}_{f.name.upper()}_WIDTH", f"{f.width}u"))
    out += ["", "/* Data rows in memory: bytes that carry data, bus words a row occupies. */"]
    for kind in isa.row_kinds(config):
        out.append(_define(f"NPU_ROW_BYTES_{kind.upper()}", f"{isa.row_bytes(config, kind)}u"))
    for kind in isa.row_kinds(config):
        out.append(_define(f"NPU_ROW_WORDS_{kind.upper()}", f"{isa.row_words(config, kind)}u"))
    out += ["", "/* Parameter row: lane n of each field is at OFFSET + n * SIZE bytes. */"]
    for name, (offset, size) in _param_groups(config).items():
        out.append(_define(f"NPU_PARAM_{name.upper()}_OFFSET", f"{offset}u"))
        out.append(_define(f"NPU_PARAM_{name.upper()}_SIZE", f"{size}u"))
    out += [
        "",
        "/* NPU_GET(status, NPU_STATUS_ERROR_CODE); NPU_SET(NPU_CTRL_START, 1). */",
        "#define NPU_GET(value, field) (((uint32_t)(value) & field##_MASK) >> field##_SHIFT)",
        "#define NPU_SET(field, value) (((uint32_t)(value) << field##_SHIFT) & field##_MASK)",
        "/* NPU_INSN_SET(words, NPU_LOAD_ROWS, 4): OR a field into a zeroed uint32_t[4]. */",
        "#define NPU_INSN_SET(insn, field, value) npu_insn_set((insn), field##_OFFSET, field##_WIDTH, (value))",
        "",
        "static inline uint32_t npu_read32(volatile uint32_t *base, uint32_t offset)",
        "{",
        "    return base[offset / 4u];",
        "}",
        "",
        "static inline void npu_write32(volatile uint32_t *base, uint32_t offset, uint32_t value)",
        "{",
        "    base[offset / 4u] = value;",
        "}",
        "",
        "/* A performance counter by the offset of its _LO register. */",
        "static inline uint64_t npu_read_perf64(volatile uint32_t *base, uint32_t lo_offset)",
        "{",
        "    uint32_t lo = npu_read32(base, lo_offset);",
        "    return ((uint64_t)npu_read32(base, lo_offset + 4u) << 32) | lo;",
        "}",
        "",
        "/* No field straddles a 32-bit word (the generator checks), so one word is touched. */",
        "static inline void npu_insn_set(uint32_t insn[4], uint32_t offset, uint32_t width, uint32_t value)",
        "{",
        "    uint32_t mask = width >= 32u ? 0xFFFFFFFFu : (1u << width) - 1u;",
        "    insn[offset / 32u] |= (value & mask) << (offset % 32u);",
        "}",
        "",
        "#endif /* NPU_REGS_H */",
    ]
    return "\n".join(out) + "\n"


# -- Markdown --------------------------------------------------------------------------------------

def _md(text):
    return str(text).replace("|", "\\|")


def markdown(config=None):
    """The register page for ``config`` (the default :class:`NPUConfig` when None)."""
    if config is None:
        config = NPUConfig()
    out = [
        "# Registers",
        "",
        "<!-- Generated from npu/hdl/regs.py by npu.generators.regmap; do not edit. -->",
        "",
        f"Generated from `npu/hdl/regs.py`, the one definition of the register map. `npu generate` "
        f"writes this page as `registers.md` next to `npu.v` for the configuration it builds, "
        f"together with `npu_regs.h` (C) and `npu_regs.py` (Python). This page is for the configuration "
        f"{_summary(config)}. `docs/registers.md` in the repository is the default configuration's copy; "
        f"regenerate it with `{REGENERATE_DOCS}`.",
        "",
        f"The registers are 32 bits wide, on a Wishbone slave with 32-bit data and "
        f"{regs.CSR_ADDR_WIDTH} word-address bits ({4 << regs.CSR_ADDR_WIDTH} bytes of register space): "
        f"`adr` is the byte offset divided by 4. Register map version "
        f"{regs.VERSION >> 8}.{regs.VERSION & 0xFF}; `ID_MAGIC` reads `0x{regs.MAGIC:08X}`. "
        f"The instruction set is in [isa.md](isa.md).",
        "",
        "| access | meaning |",
        "|---|---|",
        *(f"| {a} | {m} |" for a, m in _ACCESS.items()),
        "",
        "## Register map",
        "",
        "| offset | name | access | reset | description |",
        "|---|---|---|---|---|",
    ]
    for reg in regs.REGISTERS:
        reset = f"`0x{reset_value(reg, config):08X}`"
        if reg.init == "configuration":
            reset += " (configuration)"
        out.append(f"| `0x{reg.offset:03X}` | {reg.name} | {reg.access} | {reset} | {_md(reg.doc)} |")
    out += ["", "## Fields"]
    for reg in regs.REGISTERS:
        if not reg.fields:
            continue
        values = field_values(reg, reset_value(reg, config))
        out += ["", f"### {reg.name} (`0x{reg.offset:03X}`, {reg.access})", "",
                _md(reg.doc[0].upper() + reg.doc[1:]) + ".", "",
                "| bits | field | reset | description |", "|---|---|---|---|"]
        out += [f"| {_bits(f)} | {f.name} | {values[f.name]} | {_md(f.doc)} |" for f in reg.fields]
    out += ["", "## Error codes", "", "`STATUS.ERROR_CODE` after the NPU stopped on an error "
            "(`STATUS.ERROR`); see [isa.md](isa.md) for exactly when each is raised.", "",
            "| code | name | meaning |", "|---|---|---|"]
    for code in isa.ErrorCode:
        doc = "no error" if code == isa.ErrorCode.NONE else _error_doc(code)
        out.append(f"| {code.value} | {code.name} | {_md(doc)} |")
    out += ["", "## Performance counters", "",
            f"Each counter is `perf_counter_bits` bits ({config.perf_counter_bits} in this configuration; "
            f"32 to {regs.PERF_COUNTER_BITS}), and wraps: `PERF_<NAME>_LO` (bits 31:0) then "
            f"`PERF_<NAME>_HI` (bits {config.perf_counter_bits - 1}:32, or 0 for 32-bit counters). "
            "Reading `_LO` latches `_HI`, so read `_LO` first for a consistent pair. The counters count "
            "while `STATUS.BUSY` is set and are cleared by `CTRL.PERF_CLEAR`, reset and soft reset."
            + (" **This configuration builds only `PERF_CYCLES`** (`perf_counters = \"cycles\"`): the other "
               "counters' registers read 0." if config.perf_counters == "cycles" else ""), "",
            "| LO offset | counter | counts |", "|---|---|---|"]
    for name, doc in regs.PERF_COUNTERS.items():
        lo = regs.register(f"PERF_{name.upper()}_LO")
        out.append(f"| `0x{lo.offset:03X}` | PERF_{name.upper()} | {_md(doc)} |")
    return "\n".join(out) + "\n"


def _error_doc(code):
    """The ``#:`` comment of an :class:`~npu.hdl.isa.ErrorCode` member (its one documentation)."""
    source = inspect.getsource(isa.ErrorCode)
    match = re.search(rf"^\s*{code.name}\s*=\s*\d+\s*#:\s*(.+)$", source, re.MULTILINE)
    return match[1].strip() if match else ""


# -- Python ----------------------------------------------------------------------------------------

def python_module(config):
    """``npu_regs.py`` for ``config``: the constants of the header as a standalone module."""
    _check_instruction_fields()

    def block(name, items, comment):
        lines = [f"#: {comment}", f"{name} = {{"]
        lines += [f"    {k!r}: {v}," for k, v in items]
        return lines + ["}", ""]

    out = [
        f'"""Register map and instruction set of the NPU {_summary(config)}.',
        "",
        "Generated by npu-gen (npu generate) from npu/hdl/regs.py and npu/hdl/isa.py; do not edit.",
        "Standalone: needs nothing but Python.",
        '"""',
        "",
        f"MAGIC = 0x{regs.MAGIC:08X}",
        f"VERSION = 0x{regs.VERSION:04X}",
        f"CSR_ADDR_WIDTH = {regs.CSR_ADDR_WIDTH}",
        f"INSTRUCTION_BYTES = {isa.INSTRUCTION_BYTES}",
        f"PERF_COUNTER_BITS = {config.perf_counter_bits}",
        "",
    ]
    out += block("CONFIG", config_constants(config).items(), "The configuration this module describes.")
    out += block("REGISTERS", ((r.name, f"0x{r.offset:03X}") for r in regs.REGISTERS), "Register byte offsets.")
    out += block("ACCESS", ((r.name, repr(r.access)) for r in regs.REGISTERS),
                 "Access: 'ro', 'rw', 'w1c' (write 1 to clear) or 'wo' (reads 0).")
    out += block("RESET", ((r.name, f"0x{reset_value(r, config):08X}") for r in regs.REGISTERS),
                 "Reset values (ID_* registers: for this configuration).")
    out += block("FIELDS", ((r.name, "{" + ", ".join(f"{f.name!r}: ({f.offset}, {f.width})" for f in r.fields)
                             + "}") for r in regs.REGISTERS if r.fields),
                 "Register fields: name -> (bit offset, width).")
    out += block("PERF_COUNTERS", ((name, f"(0x{regs.register(f'PERF_{name.upper()}_LO').offset:03X}, "
                                    f"0x{regs.register(f'PERF_{name.upper()}_HI').offset:03X})")
                                   for name in regs.PERF_COUNTERS),
                 "Performance counters: name -> (LO offset, HI offset); read LO first (it latches HI).")
    out += block("ERROR_CODES", regs.ERROR_CODES.items(), "STATUS.ERROR_CODE values.")
    out += block("OPCODES", ((op.name, op.value) for op in isa.Opcode), "Instruction opcodes (bits 3:0).")
    out += block("BUFFERS", ((b.name, b.value) for b in isa.Buffer), "LOAD buffer field values.")
    out += block("INSTRUCTION_FIELDS",
                 ((op.name, "{" + ", ".join(f"{f.name!r}: ({f.offset}, {f.width})" for f in isa.fields(op)) + "}")
                  for op in isa.Opcode),
                 "Instruction fields, opcode first: name -> (bit offset in the 128-bit instruction, width).")
    out += block("ROW_BYTES", ((k, isa.row_bytes(config, k)) for k in isa.row_kinds(config)),
                 "Bytes of a data row that carry data, per row kind.")
    out += block("ROW_WORDS", ((k, isa.row_words(config, k)) for k in isa.row_kinds(config)),
                 "Bus words a data row occupies, per row kind.")
    out += [
        "",
        "def field_get(register, field, value):",
        '    """The ``field`` of ``register`` in the register word ``value``."""',
        "    offset, width = FIELDS[register][field]",
        "    return (value >> offset) & ((1 << width) - 1)",
        "",
        "",
        "def field_set(register, field, value):",
        '    """``value`` placed in ``field`` of ``register`` (to OR into a register word)."""',
        "    offset, width = FIELDS[register][field]",
        "    if not 0 <= value < 1 << width:",
        '        raise ValueError(f"{register}.{field} = {value} does not fit in {width} bits")',
        "    return value << offset",
        "",
        "",
        "def encode(opcode, **fields):",
        '    """The 16 bytes of one instruction (unnamed fields 0)."""',
        "    table = INSTRUCTION_FIELDS[opcode]",
        "    word = OPCODES[opcode]",
        "    for name, value in fields.items():",
        "        if name not in table or name == 'opcode':",
        '            raise ValueError(f"{opcode} has no field {name!r}; fields: {\', \'.join(table)}")',
        "        offset, width = table[name]",
        "        if not 0 <= value < 1 << width:",
        '            raise ValueError(f"{opcode}.{name} = {value} does not fit in {width} bits")',
        "        word |= value << offset",
        "    return word.to_bytes(INSTRUCTION_BYTES, 'little')",
    ]
    return "\n".join(out) + "\n"


def write_all(config, out_dir):
    """Write :data:`FILES` for ``config`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in zip(FILES, (c_header(config), markdown(config), python_module(config))):
        path = out_dir / name
        path.write_text(text)
        paths.append(path)
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m npu.generators.regmap PATH  (writes the default configuration's "
                 "register page, e.g. docs/registers.md)")
    Path(sys.argv[1]).write_text(markdown(NPUConfig()))
