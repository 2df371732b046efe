"""npu.generators."""
