"""The register map: the one source of the RTL decoder, ``npu_regs.h``, the register
page in ``docs/`` and the Python constants (:mod:`npu.generators.regmap`).

Registers are 32 bits at byte offsets that are multiples of 4 on the Wishbone slave
(32-bit data, word addressed: ``adr`` is the byte offset divided by 4).
"""

from dataclasses import dataclass, field

from .isa import ErrorCode

__all__ = ["MAGIC", "VERSION", "BitField", "Register", "REGISTERS", "PERF_COUNTERS", "register",
           "CSR_ADDR_WIDTH", "PERF_COUNTER_BITS", "ERROR_CODES", "field_of"]

#: ID_MAGIC reads "NPU0" as a little-endian ASCII string.
MAGIC = 0x3055504E
#: ID_VERSION: instruction-set / register-map version, major << 8 | minor.
VERSION = (1 << 8) | 0
#: Word-address width of the register slave (1 KiB of register space).
CSR_ADDR_WIDTH = 8


@dataclass(frozen=True)
class BitField:
    name: str
    offset: int
    width: int
    doc: str


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    #: "ro" read-only, "rw" read/write, "w1c" write 1 to clear, "wo" write-only (reads 0)
    access: str
    doc: str
    fields: tuple = field(default_factory=tuple)
    #: Value after reset (and soft reset); for identification registers, a description.
    init: object = 0


#: Widest performance counter: 48 bits (78 hours at 1 GHz), read as ``PERF_<NAME>_LO``
#: (bits 31:0) then ``_HI`` (bits 47:32); reading LO latches HI so the pair is consistent.
#: ``perf_counter_bits`` (32 to 48, 48 by default) sets the width of a generated NPU.
PERF_COUNTER_BITS = 48

#: Performance counters. They count while STATUS.BUSY is set and are cleared by
#: CTRL.PERF_CLEAR, reset and soft reset.
PERF_COUNTERS = {
    "cycles":            "cycles with STATUS.BUSY set",
    "dma_busy":          "cycles the DMA unit is executing a LOAD or STORE",
    "fetch_busy":        "cycles the instruction fetcher owns the memory bus",
    "array_busy":        "cycles an activation row entered the systolic array",
    "ppu_busy":          "cycles the post-processing unit had a STORE's rows in progress",
    "macs":              "multiply-accumulates performed (rows * cols per activation row)",
    "bytes_read":        "bytes read from memory (LOAD data and instruction fetch)",
    "bytes_written":     "bytes written to memory (STORE data)",
    "instructions":      "instructions dispatched",
    "stall_weight":      "cycles the array waited for a tile's weights",
    "stall_output":      "cycles a post-processed row waited for the STORE DMA",
    "stall_dependency":  "cycles dispatch waited for an earlier instruction it depends on",
    "stall_queue_full":  "cycles dispatch waited for room in a unit's queue (or a FENCE/END drain)",
    "stall_fetch":       "cycles dispatch had no instruction while the ring had some (fetch latency)",
    "stall_bus":         "cycles the memory bus held the DMA master (stall or no acknowledge yet)",
}

_PERF_BASE = 0x80

REGISTERS = (
    Register("ID_MAGIC", 0x00, "ro", "reads 0x3055504E (\"NPU0\")", init=MAGIC),
    Register("ID_VERSION", 0x04, "ro", "instruction set and register map version", (
        BitField("MINOR", 0, 8, "minor version"), BitField("MAJOR", 8, 8, "major version")),
        init=VERSION),
    Register("ID_ARRAY", 0x08, "ro", "array geometry", (
        BitField("ROWS", 0, 8, "array rows R"), BitField("COLS", 8, 8, "array columns C"),
        BitField("DATA_WIDTH", 16, 8, "operand width in bits"),
        BitField("ACC_WIDTH", 24, 8, "accumulator width in bits")), init="configuration"),
    Register("ID_ACT_DEPTH", 0x0C, "ro", "entries per activation bank", init="configuration"),
    Register("ID_WGT_DEPTH", 0x10, "ro", "weight buffer entries", init="configuration"),
    Register("ID_ACC_DEPTH", 0x14, "ro", "entries per accumulator bank", init="configuration"),
    Register("ID_PARAM_DEPTH", 0x18, "ro", "parameter buffer entries", init="configuration"),
    Register("ID_BUS", 0x1C, "ro", "DMA bus and sparsity", (
        BitField("BUS_WIDTH", 0, 8, "DMA Wishbone data width in bits"),
        BitField("SPARSITY_N", 8, 8, "N of N:M sparsity (0 = dense)"),
        BitField("SPARSITY_M", 16, 8, "M of N:M sparsity (0 = dense)")), init="configuration"),
    Register("CTRL", 0x20, "wo", "control; every bit is a one-cycle command, reads 0", (
        BitField("START", 0, 1, "start executing at RING_HEAD (ignored while BUSY or ERROR)"),
        BitField("SOFT_RESET", 1, 1, "reset the whole NPU except this bus interface; "
                                     "aborts any bus cycle; every register returns to its reset value"),
        BitField("PERF_CLEAR", 2, 1, "clear every performance counter"))),
    Register("STATUS", 0x24, "ro", "state of the command processor", (
        BitField("BUSY", 0, 1, "executing (from START until END or an error)"),
        BitField("DONE", 1, 1, "an END completed (same as IRQ_PENDING.DONE)"),
        BitField("ERROR", 2, 1, "stopped on an error; only SOFT_RESET clears it"),
        BitField("WAITING", 3, 1, "BUSY, and every instruction up to RING_TAIL has been fetched"),
        BitField("ERROR_CODE", 8, 8, "why the NPU stopped (see the error codes)"))),
    Register("IRQ_ENABLE", 0x28, "rw", "interrupt enables; irq = |(IRQ_PENDING & IRQ_ENABLE)", (
        BitField("DONE", 0, 1, "END completed"), BitField("ERROR", 1, 1, "stopped on an error"))),
    Register("IRQ_PENDING", 0x2C, "w1c", "interrupt causes; write 1 to clear", (
        BitField("DONE", 0, 1, "END completed"), BitField("ERROR", 1, 1, "stopped on an error"))),
    Register("ERROR_ADDR", 0x30, "ro", "byte address of the faulting memory access (WINDOW, BUS_ERROR, "
                                       "MISALIGNED)"),
    Register("ERROR_CMD", 0x34, "ro", "ring slot of the instruction that caused the error"),
    Register("RING_BASE", 0x40, "rw", "byte address of ring slot 0 (16-byte aligned)"),
    Register("RING_SIZE", 0x44, "rw", "slots in the command ring (16 bytes each), at least 1"),
    Register("RING_HEAD", 0x48, "rw", "next slot to fetch; advanced by the NPU, writable while not BUSY"),
    Register("RING_TAIL", 0x4C, "rw", "slot after the last valid instruction; writing it is the doorbell"),
    Register("WINDOW_BASE", 0x50, "rw", "lowest byte address the NPU may access (bus-word aligned)"),
    Register("WINDOW_LIMIT", 0x54, "rw", "first byte address above the DMA window; the window is "
                                         "WINDOW_BASE <= address < WINDOW_LIMIT (empty after reset)"),
    *(reg for i, (name, doc) in enumerate(PERF_COUNTERS.items()) for reg in (
        Register(f"PERF_{name.upper()}_LO", _PERF_BASE + 8 * i, "ro", f"{doc} (bits 31:0; reading latches _HI)"),
        Register(f"PERF_{name.upper()}_HI", _PERF_BASE + 8 * i + 4, "ro",
                 f"{doc} (bits 47:32; latched when _LO was read)"))),
)

#: Error codes, exported with the register map.
ERROR_CODES = {code.name: code.value for code in ErrorCode}


def register(name):
    """The register called ``name``."""
    for reg in REGISTERS:
        if reg.name == name:
            return reg
    raise KeyError(name)


def field_of(reg_name, field_name):
    """The bit field ``field_name`` of register ``reg_name``."""
    for f in register(reg_name).fields:
        if f.name == field_name:
            return f
    raise KeyError(f"{reg_name}.{field_name}")
