"""Register map artefacts (npu.generators.regmap): the C header compiles, the map is
consistent, docs/registers.md is current, the Python module matches npu.hdl.regs."""

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from npu.cli import main
from npu.generators import regmap
from npu.generators.config import NPUConfig
from npu.hdl import isa, regs

REPO = Path(__file__).resolve().parent.parent

CONFIGS = {
    "default": NPUConfig(),
    "16x16_bus64": NPUConfig(rows=16, cols=16, act_depth=1024, wgt_depth=512, acc_depth=1024,
                             param_depth=32, bus_width=64),
}

# Uses offsets, fields, the helpers, ISA constants and the configuration values; CHECK is
# a C99 compile-time assertion (a negative array size fails to compile).
USER_C = r"""
#include "npu_regs.h"

#define CHECK(name, cond) typedef char check_##name[(cond) ? 1 : -1]
CHECK(magic, NPU_MAGIC_VALUE == 0x3055504Eu);
CHECK(status, NPU_STATUS == 0x24u);
CHECK(code_mask, NPU_STATUS_ERROR_CODE_MASK == (0xFFu << NPU_STATUS_ERROR_CODE_SHIFT));
CHECK(rows, NPU_GET(NPU_ID_ARRAY_RESET, NPU_ID_ARRAY_ROWS) == NPU_CFG_ROWS);
CHECK(bus, NPU_GET(NPU_ID_BUS_RESET, NPU_ID_BUS_BUS_WIDTH) == NPU_CFG_BUS_WIDTH);
CHECK(insn, NPU_INSTRUCTION_BYTES == 16u);
CHECK(row, NPU_ROW_WORDS_ACT * NPU_CFG_BUS_BYTES >= NPU_ROW_BYTES_ACT);

int npu_run(volatile uint32_t *npu, uint32_t ring, uint32_t tail)
{
    uint32_t insn[NPU_INSTRUCTION_WORDS] = {0};
    uint32_t status;
    uint64_t cycles;

    NPU_INSN_SET(insn, NPU_INSN_OPCODE, NPU_OP_LOAD);
    NPU_INSN_SET(insn, NPU_LOAD_BUFFER, NPU_BUF_WGT);
    NPU_INSN_SET(insn, NPU_LOAD_ROWS, NPU_CFG_ROWS);
    NPU_INSN_SET(insn, NPU_LOAD_STRIDE, NPU_ROW_WORDS_WGT * NPU_CFG_BUS_BYTES);
    if (npu_read32(npu, NPU_ID_MAGIC) != NPU_MAGIC_VALUE)
        return -1;
    npu_write32(npu, NPU_RING_BASE, ring);
    npu_write32(npu, NPU_RING_TAIL, tail + insn[0]);
    npu_write32(npu, NPU_IRQ_ENABLE, NPU_SET(NPU_IRQ_ENABLE_DONE, 1) | NPU_SET(NPU_IRQ_ENABLE_ERROR, 1));
    npu_write32(npu, NPU_CTRL, NPU_CTRL_START_MASK);
    do {
        status = npu_read32(npu, NPU_STATUS);
    } while (status & NPU_STATUS_BUSY_MASK);
    cycles = npu_read_perf64(npu, NPU_PERF_CYCLES_LO);
    (void)cycles;
    return NPU_GET(status, NPU_STATUS_ERROR_CODE) == NPU_ERR_NONE ? 0 : (int)NPU_ERR_BAD_RING;
}
"""


def _defines(header):
    return dict(re.findall(r"^#define (NPU_\w+)\s+(0x[0-9A-F]+u|\d+u)\b", header, re.MULTILINE))


def _value(text):
    return int(text.rstrip("u"), 0)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
@pytest.mark.parametrize("name", CONFIGS)
def test_header_compiles(tmp_path, name):
    (tmp_path / "npu_regs.h").write_text(regmap.c_header(CONFIGS[name]))
    (tmp_path / "user.c").write_text(USER_C)
    flags = ["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-fsyntax-only"]
    for source in (["-x", "c", "npu_regs.h"], ["user.c"]):
        proc = subprocess.run(["gcc", *flags, *source], cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("name", CONFIGS)
def test_header_values(name):
    config = CONFIGS[name]
    header = regmap.c_header(config)
    names = re.findall(r"^#define (\w+)", header, re.MULTILINE)
    assert len(names) == len(set(names)), "a macro is defined twice"
    d = {k: _value(v) for k, v in _defines(header).items()}
    for reg in regs.REGISTERS:
        assert d[f"NPU_{reg.name}"] == reg.offset
        for f in reg.fields:
            assert d[f"NPU_{reg.name}_{f.name}_SHIFT"] == f.offset
            assert d[f"NPU_{reg.name}_{f.name}_MASK"] == ((1 << f.width) - 1) << f.offset
    assert (d["NPU_CFG_ROWS"], d["NPU_CFG_COLS"], d["NPU_CFG_BUS_WIDTH"]) == (config.rows, config.cols,
                                                                            config.bus_width)
    assert d["NPU_ID_ARRAY_RESET"] == (config.rows | config.cols << 8 | config.data_width << 16
                                       | config.acc_width << 24)
    assert d["NPU_ID_ACT_DEPTH_RESET"] == config.act_depth
    assert d["NPU_ID_BUS_RESET"] == config.bus_width  # dense: SPARSITY_N = SPARSITY_M = 0
    assert d["NPU_MAGIC_VALUE"] == regs.MAGIC and d["NPU_VERSION_VALUE"] == regs.VERSION
    assert {n: d[f"NPU_ERR_{n}"] for n in regs.ERROR_CODES} == regs.ERROR_CODES
    assert all(d[f"NPU_OP_{op.name}"] == op for op in isa.Opcode)
    assert all(d[f"NPU_BUF_{b.name}"] == b for b in isa.Buffer)
    for op, fields in isa.FIELDS.items():
        for f in fields:
            assert (d[f"NPU_{op.name}_{f.name.upper()}_OFFSET"], d[f"NPU_{op.name}_{f.name.upper()}_WIDTH"]) \
                == (f.offset, f.width)
    assert d["NPU_INSTRUCTION_BYTES"] == isa.INSTRUCTION_BYTES
    for kind in isa.row_kinds(config):
        assert d[f"NPU_ROW_BYTES_{kind.upper()}"] == isa.row_bytes(config, kind)


def test_offsets_unique_aligned_in_range():
    offsets = [reg.offset for reg in regs.REGISTERS]
    assert len(offsets) == len(set(offsets))
    assert len({reg.name for reg in regs.REGISTERS}) == len(regs.REGISTERS)
    assert all(o % 4 == 0 and 0 <= o < 4 << regs.CSR_ADDR_WIDTH for o in offsets)
    for name in regs.PERF_COUNTERS:
        lo, hi = regs.register(f"PERF_{name.upper()}_LO"), regs.register(f"PERF_{name.upper()}_HI")
        assert hi.offset == lo.offset + 4


def test_fields_fit_and_do_not_overlap():
    for reg in regs.REGISTERS:
        used = 0
        for f in reg.fields:
            assert f.width >= 1 and 0 <= f.offset and f.offset + f.width <= 32, f"{reg.name}.{f.name}"
            mask = ((1 << f.width) - 1) << f.offset
            assert not used & mask, f"{reg.name}.{f.name} overlaps another field"
            used |= mask
        assert len({f.name for f in reg.fields}) == len(reg.fields)


def test_configuration_values_must_fit():
    reg = regs.register("ID_ARRAY")
    assert regmap.field_values(reg, regmap.reset_value(reg, NPUConfig(rows=64, cols=64, acc_width=64))) == \
        {"ROWS": 64, "COLS": 64, "DATA_WIDTH": 8, "ACC_WIDTH": 64}


def test_docs_registers_md_is_current():
    path = REPO / "docs" / "registers.md"
    assert path.exists(), f"docs/registers.md is missing; create it with: {regmap.REGENERATE_DOCS}"
    assert path.read_text() == regmap.markdown(NPUConfig()), \
        f"docs/registers.md is stale; regenerate it with: {regmap.REGENERATE_DOCS}"


def test_markdown_lists_every_register_code_and_counter():
    text = regmap.markdown(CONFIGS["16x16_bus64"])
    for reg in regs.REGISTERS:
        assert f"| `0x{reg.offset:03X}` | {reg.name} |" in text
    for name, value in regs.ERROR_CODES.items():
        assert f"| {value} | {name} |" in text
    for name in regs.PERF_COUNTERS:
        assert f"| PERF_{name.upper()} |" in text
    assert "| 7:0 | ROWS | 16 |" in text and "| 7:0 | BUS_WIDTH | 64 |" in text
    # Table cells never split on a '|' from a description.
    for line in text.split("## Fields")[0].splitlines():
        if line.startswith("| `0x"):
            assert len(re.split(r"(?<!\\)\|", line)) == 7, line


def _load(path):
    spec = importlib.util.spec_from_file_location("npu_regs_generated", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", CONFIGS)
def test_python_module_matches(tmp_path, name):
    config = CONFIGS[name]
    path = tmp_path / "npu_regs.py"
    path.write_text(regmap.python_module(config))
    m = _load(path)
    assert m.REGISTERS == {r.name: r.offset for r in regs.REGISTERS}
    assert m.ACCESS == {r.name: r.access for r in regs.REGISTERS}
    assert m.RESET == {r.name: regmap.reset_value(r, config) for r in regs.REGISTERS}
    assert m.FIELDS == {r.name: {f.name: (f.offset, f.width) for f in r.fields}
                        for r in regs.REGISTERS if r.fields}
    assert m.ERROR_CODES == regs.ERROR_CODES
    assert (m.MAGIC, m.VERSION, m.CSR_ADDR_WIDTH) == (regs.MAGIC, regs.VERSION, regs.CSR_ADDR_WIDTH)
    assert m.PERF_COUNTER_BITS == regs.PERF_COUNTER_BITS
    assert list(m.PERF_COUNTERS) == list(regs.PERF_COUNTERS)
    assert m.OPCODES == {op.name: op.value for op in isa.Opcode}
    assert m.CONFIG["ROWS"] == config.rows and m.CONFIG["BUS_WIDTH"] == config.bus_width
    assert m.ROW_WORDS == {k: isa.row_words(config, k) for k in isa.row_kinds(config)}
    assert m.field_get("ID_ARRAY", "COLS", m.RESET["ID_ARRAY"]) == config.cols
    assert m.field_set("STATUS", "ERROR_CODE", 5) == 5 << 8
    # The standalone encoder agrees with the instruction field table.
    insn = int.from_bytes(m.encode("LOAD", buffer=1, rows=3, mem_addr=0x1000, stride=64), "little")
    fields = {f.name: f for f in isa.fields(isa.Opcode.LOAD)}
    get = lambda n: (insn >> fields[n].offset) & ((1 << fields[n].width) - 1)  # noqa: E731
    assert (get("opcode"), get("buffer"), get("rows"), get("mem_addr"), get("stride")) == (1, 1, 3, 0x1000, 64)
    with pytest.raises(ValueError, match="does not fit"):
        m.encode("LOAD", buffer=4)


def test_cli_generate_writes_register_files(tmp_path):
    out = tmp_path / "g"
    result = CliRunner().invoke(main, ["generate", "--rows", "2", "--cols", "3", "--bus-width", "64",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in regmap.FILES:
        assert (out / name).is_file()
        assert str(out / name) in result.output
    config = NPUConfig(rows=2, cols=3, bus_width=64)
    assert (out / "npu_regs.h").read_text() == regmap.c_header(config)
    assert (out / "registers.md").read_text() == regmap.markdown(config)
    assert _load(out / "npu_regs.py").CONFIG["COLS"] == 3
