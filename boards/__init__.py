"""npu.boards."""
