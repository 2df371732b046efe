"""The generated Verilog is lint-clean under `verilator --lint-only` (issue acceptance)."""

import shutil
import subprocess

import pytest

from npu.generators.config import NPUConfig
from npu.generators.verilog import generate

verilator = shutil.which("verilator")


@pytest.mark.skipif(verilator is None, reason="verilator is not installed (make setup installs it on Debian)")
@pytest.mark.parametrize("config", [NPUConfig(rows=1, cols=1), NPUConfig(rows=3, cols=5, acc_width=24),
                                    NPUConfig()], ids=["1x1", "3x5", "default"])
def test_verilator_lint_clean(tmp_path, config):
    verilog, _ = generate(config, tmp_path)
    proc = subprocess.run([verilator, "--lint-only", str(verilog), "--top-module", config.name],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "%Warning" not in proc.stderr and "%Error" not in proc.stderr, proc.stderr[-3000:]


def test_generated_verilog_has_no_machine_paths(tmp_path):
    verilog, _ = generate(NPUConfig(rows=2, cols=2), tmp_path)
    text = verilog.read_text()
    assert "site-packages" not in text and str(tmp_path) not in text
