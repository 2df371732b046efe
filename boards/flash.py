"""``npu flash``: program a board through its amaranth-boards platform's programmer.

iCEBreaker: ``iceprog`` (``$ICEPROG``); ULX3S and ECPIX-5: ``openFPGALoader``
(``$OPENFPGALOADER``). A missing bitstream, a missing tool or a board that does not
answer ends in a one-line :class:`FlashError`.
"""

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


def flash_board(board, out_dir, *, echo=print):
    """Program ``board`` with the bitstream in ``out_dir`` (made by ``npu build``)."""
    from amaranth.build.run import LocalBuildProducts

    out_dir = Path(out_dir)
    bitstream = out_dir / ("top.bin" if board.family == "ice40" else "top.bit")
    if not bitstream.exists():
        raise FlashError(f"no bitstream {bitstream}: run 'npu build --board {board.name}' first")
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
