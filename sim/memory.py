"""A byte-addressed memory image: the system memory the NPU's DMA master sees.

Shared by the golden model (:class:`npu.sim.golden.NPUModel`) and the cocotb bus model
(:mod:`npu.sim.wishbone`), so a test can compare the two images byte for byte.
"""

__all__ = ["MemoryImage"]


class MemoryImage:
    """``size`` bytes starting at byte address ``base`` (both multiples of 16)."""

    def __init__(self, base, size, fill=0):
        if base % 16 or size % 16 or size <= 0 or base < 0 or base + size > 1 << 32:
            raise ValueError(f"memory base {base:#x} and size {size:#x} must be multiples of 16 "
                             f"within the 32-bit address space")
        self.base = base
        self.size = size
        self.data = bytearray([fill]) * size

    def contains(self, addr, length=1):
        return self.base <= addr and addr + length <= self.base + self.size

    def _offset(self, addr, length):
        if not self.contains(addr, length):
            raise IndexError(f"access {addr:#x}+{length} outside memory {self.base:#x}..{self.base + self.size - 1:#x}")
        return addr - self.base

    def read(self, addr, length):
        o = self._offset(addr, length)
        return bytes(self.data[o:o + length])

    def write(self, addr, data):
        o = self._offset(addr, len(data))
        self.data[o:o + len(data)] = data

    def read_word(self, addr, nbytes):
        return int.from_bytes(self.read(addr, nbytes), "little")

    def write_word(self, addr, value, nbytes, sel=None):
        """Write the bytes of ``value`` whose bit is set in ``sel`` (all when None)."""
        for i in range(nbytes):
            if sel is None or sel >> i & 1:
                self.write(addr + i, bytes([(value >> (8 * i)) & 0xFF]))

    def copy(self):
        other = MemoryImage(self.base, self.size)
        other.data[:] = self.data
        return other

    def diff(self, other, limit=8):
        """Byte addresses where ``self`` and ``other`` differ (at most ``limit``), for messages."""
        out = []
        for i, (a, b) in enumerate(zip(self.data, other.data)):
            if a != b:
                out.append((self.base + i, a, b))
                if len(out) >= limit:
                    break
        return out
