"""npu.firmware."""
