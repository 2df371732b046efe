"""npu: a parameterised weight-stationary NPU generator (Amaranth HDL).

Subpackages: :mod:`npu.hdl` (hardware), :mod:`npu.generators` (configuration and
Verilog), :mod:`npu.sim` (golden model and testbenches), :mod:`npu.firmware` (what
drives the NPU), :mod:`npu.boards` (FPGA boards).
"""

__version__ = "0.1.0"
