"""The `npu` command line: files written, one-line errors with exit status 2."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from npu.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_generate_writes_verilog_and_manifest(tmp_path):
    result = run("generate", "--config", "configs/default.toml", "--out", str(tmp_path / "g"))
    assert result.exit_code == 0, result.output
    verilog = (tmp_path / "g" / "npu.v").read_text()
    manifest = json.loads((tmp_path / "g" / "npu.json").read_text())
    assert "module npu(" in verilog
    assert manifest["config"]["array"] == {"rows": 8, "cols": 8, "data_width": 8, "acc_width": 32,
                                           "ppu_lanes": 0, "requantiser": "pipelined", "activations": "systolic"}
    assert manifest["config"]["control"] == {"dispatch": "overlapped", "compute_queue": 8, "dma_queue": 4,
                                             "perf_counter_bits": 48, "perf_counters": "all", "ring_bits": 32,
                                             "register_slices": True}
    assert manifest["queues"] == {"compute": 8, "dma": 4}
    assert manifest["latencies"]["array"] == 19
    port_names = {p["name"] for p in manifest["ports"]}
    for port in port_names:
        assert port in verilog
    assert {"csr__adr", "csr__dat_r", "bus__adr", "bus__err", "irq", "clk", "rst"} <= port_names
    assert manifest["rows"]["param"] == {"bytes": 75, "words": 19}
    assert manifest["registers"]["CTRL"] == 0x20
    # Register offsets are distinct words.
    offsets = list(manifest["registers"].values())
    assert len(set(offsets)) == len(offsets) and all(o % 4 == 0 for o in offsets)


def test_datapath_top_manifest_payloads(tmp_path):
    from npu.generators.config import NPUConfig
    from npu.generators.verilog import generate

    _, json_path = generate(NPUConfig(), tmp_path, top="datapath")
    manifest = json.loads(json_path.read_text())
    # Payload fields tile their vector exactly, without overlap.
    cmd = manifest["payloads"]["cmd"]
    width = next(p["width"] for p in manifest["ports"] if p["name"] == "cmd__payload")
    bits = sorted((f["offset"], f["offset"] + f["width"]) for f in cmd.values())
    assert bits[0][0] == 0 and bits[-1][1] == width
    assert all(a[1] == b[0] for a, b in zip(bits, bits[1:]))


def test_overrides_and_custom_name(tmp_path):
    result = run("generate", "--rows", "3", "--cols", "5", "--name", "my_npu", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "module my_npu(" in (tmp_path / "npu.v").read_text()
    assert "3x5 NPU 'my_npu' (15 MACs/cycle)" in result.output


@pytest.mark.parametrize("toml, message", [
    ("[array]\nrows = 0\n", "error: rows = 0 is invalid: must be an integer from 1 to 64"),
    ("[array]\nacc_width = 4\n", "error: acc_width = 4 is invalid"),
])
def test_bad_config_is_one_line_exit_2(tmp_path, toml, message):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    # A real process: what a user sees, including that no traceback escapes.
    proc = subprocess.run([sys.executable, "-m", "npu.cli", "generate", "--config", str(path),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == proc.stderr.strip().splitlines()[0]
    assert proc.stderr.startswith(message)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "out").exists()


def test_unwritable_output_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run("generate", "--out", str(blocker / "sub"))
    assert result.exit_code == 2
    assert result.output.startswith("error: cannot write to")


def test_bad_gemm_shape():
    result = run("bench", "--gemm", "4,0,4")
    assert result.exit_code == 2
    assert "error: --gemm '4,0,4' is invalid" in result.output


def test_info_prints_derived_figures():
    result = run("info", "--rows", "16", "--cols", "16")
    assert result.exit_code == 0
    info = json.loads(result.output)
    assert info["derived"]["macs_per_cycle"] == 256
    assert info["latencies"]["array"] == 35
