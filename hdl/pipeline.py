"""Small pipeline helpers shared by the datapath blocks."""

from amaranth.hdl import Signal

__all__ = ["delay"]


def delay(m, value, cycles, *, name, domain="sync"):
    """Return ``value`` delayed by ``cycles`` registers in ``domain`` (``value`` for 0)."""
    for i in range(cycles):
        stage = Signal.like(value, name=f"{name}_d{i + 1}")
        m.d[domain] += stage.eq(value)
        value = stage
    return value
