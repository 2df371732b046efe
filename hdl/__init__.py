"""Amaranth components of the NPU (the hardware)."""
