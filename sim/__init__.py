"""npu.sim."""
