"""The board system's parameters and its generated Verilog (fast; the simulation is in
test_board_sim.py)."""

import json
import shutil
import subprocess

import pytest
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from npu.boards.soc import STATUS_LEDS, BoardSoC
from npu.firmware.compiler import MEMORY_BASE
from npu.generators.config import NPUConfig
from npu.generators.verilog import generate
from npu.hdl.bridge import INFO_FIELDS, INFO_MAGIC
from npu.hdl.ram import ram_bus_signature

def unused(*elaboratables):
    """Only their attributes are looked at: no warning that they were never elaborated."""
    for e in elaboratables:
        e._MustUse__silence = True
    return elaboratables[0]


CONFIG = NPUConfig(rows=2, cols=2, act_depth=64, wgt_depth=16, acc_depth=64, param_depth=4, bus_width=64)


def test_generate_soc_verilog_and_manifest(tmp_path):
    verilog, manifest = generate(CONFIG, tmp_path, "soc", {"ram_bytes": 8192, "clk_hz": 12_000_000,
                                                         "baud": 115_200})
    info = json.loads(manifest.read_text())
    assert info["top"] == "soc"
    assert {p["name"]: p["width"] for p in info["ports"]} == {"clk": 1, "rst": 1, "uart_rx": 1, "uart_tx": 1,
                                                               "status": len(STATUS_LEDS)}
    block = info["soc"]["info_block"]
    assert list(block) == list(INFO_FIELDS)
    assert (block["magic"], block["ram_base"], block["ram_size"], block["baud"]) == (INFO_MAGIC, MEMORY_BASE, 8192,
                                                                                    115_200)
    assert block["byte_timeout"] == 1 << 18                   # 20 ms at 12 MHz, rounded up to a power of two
    assert info["soc"]["uart_divisor"] == 104
    assert f"module {CONFIG.name}(" in verilog.read_text()
    assert (tmp_path / "npu_regs.h").exists()


@pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator is not installed")
def test_soc_verilog_lint_clean(tmp_path):
    verilog, _ = generate(CONFIG, tmp_path, "soc", {"ram_bytes": 8192, "clk_hz": 12_000_000, "baud": 1_000_000})
    proc = subprocess.run(["verilator", "--lint-only", str(verilog), "--top-module", CONFIG.name],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "%Warning" not in proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize("kwargs, message", [
    ({"baud": 2_500_000}, r"baud = 2500000 is invalid for clk_hz = 12000000: the UART divides the clock by 5 "
                          r"\(at least 4\), giving 2400000 baud; at most 2% off works"),
    ({"ram_bytes": 1020}, r"size = 1020 is invalid: must be a positive multiple of 8 bytes"),
    ({"clk_hz": 0}, r"clk_hz = 0 is invalid: must be an integer of at least 1000"),
])
def test_soc_parameters_checked(kwargs, message):
    args = {"ram_bytes": 8192, "clk_hz": 12_000_000, "baud": 1_000_000, **kwargs}
    with pytest.raises(ValueError, match=message):
        BoardSoC(CONFIG, **args)


def test_soc_takes_a_ram_with_the_shared_signature():
    class Ram(wiring.Component):
        def __init__(self, size):
            super().__init__({"bus": In(ram_bus_signature(size=size, data_width=64))})

        def elaborate(self, platform):
            raise NotImplementedError

    soc = BoardSoC(CONFIG, ram_bytes=8192, clk_hz=12_000_000, baud=3_000_000, ram=Ram(8192))
    unused(soc, soc.npu, soc.bridge, soc.ram)
    assert soc.divisor == 4                       # the fastest the UART goes
    assert soc.ram.signature.members["bus"] == In(soc.ram_signature)
    with pytest.raises(ValueError, match=r"ram = .* is invalid: it needs a member bus = In\(wishbone.Signature\("
                                         r"addr_width=10, data_width=64\)\)"):
        BoardSoC(CONFIG, ram_bytes=8192, clk_hz=12_000_000, baud=1_000_000, ram=unused(Ram(16384)))
