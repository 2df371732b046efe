"""``npu flash``: program a board through its amaranth-boards platform's programmer.

iCEBreaker: ``iceprog`` (``$ICEPROG``); ULX3S and ECPIX-5: ``openFPGALoader``
(``$OPENFPGALOADER``). A missing bitstream, a missing tool or a board that does not
answer ends in a one-line :class:`FlashError`.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["FlashError", "flash_board"]

#: Environment variable naming each programmer, as the platforms read it.
_TOOL_ENV = {"iceprog": "ICEPROG", "openFPGALoader": "OPENFPGALOADER"}
_INSTALL = {"iceprog": "apt-get install fpga-icestorm", "openFPGALoader": "apt-get install openfpgaloader"}


class FlashError(RuntimeError):
    """The board could not be programmed; one line."""


def flash_board(board, out_dir, *, echo=print, force=False):
    """Program ``board`` with the bitstream in ``out_dir`` (made by ``npu build``).

    A bitstream whose build report says it misses timing at its clock is refused unless
    ``force``: it may compute wrong results on the board.
    """
    from amaranth.build.run import LocalBuildProducts

    out_dir = Path(out_dir)
    bitstream = out_dir / ("top.bin" if board.family == "ice40" else "top.bit")
    if not bitstream.exists():
        raise FlashError(f"no bitstream {bitstream}: run 'npu build --board {board.name}' first")
    report_path = out_dir / "report.json"
    if report_path.exists():
        report = json.loads(report_path.read_text())
        if report.get("board") not in (None, board.name):
            raise FlashError(f"{bitstream} was built for the {report['board']}, not the {board.name}")
        clock = report.get("clock", {})
        if clock.get("fmax_mhz") and not clock.get("met") and not force:
            mhz = clock.get("clock_mhz", clock.get("target_mhz"))
            raise FlashError(f"{bitstream} misses timing (Fmax {clock['fmax_mhz']:.1f} MHz < its {mhz:g} MHz clock) "
                             f"and may compute wrong results; rebuild with 'npu build --board {board.name} "
                             f"--clock-mhz {int(clock['fmax_mhz'])}', or flash it anyway with --force")
    var = _TOOL_ENV[board.programmer]
    tool = os.environ.get(var, board.programmer)
    if shutil.which(tool) is None:
        raise FlashError(f"{board.programmer} not found ({_INSTALL[board.programmer]}, or set {var} to it); "
                         f"it programs the {board.name}")
    echo(f"programming {board.name} with {bitstream.name} through {tool} ...")
    platform = board.platform_class()()
    try:
        platform.toolchain_program(LocalBuildProducts(str(out_dir)), "top")
    except subprocess.CalledProcessError as e:
        raise FlashError(f"{board.programmer} failed (exit {e.returncode}): is the {board.name} plugged in "
                         f"and accessible (USB permissions)?") from None
