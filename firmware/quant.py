"""Quantisation helpers: float scales to the datapath's fixed-point requantisation."""

import math

from ..generators.config import REQUANT_MULT_WIDTH, REQUANT_SHIFT_WIDTH

__all__ = ["quantize_multiplier"]


def quantize_multiplier(scale):
    """Return ``(mult, shift)`` with ``mult / 2**shift`` as close to ``scale`` as the hardware allows.

    ``mult`` is normalised to ``[2**30, 2**31)`` (31 significant bits, as TFLite does)
    and ``shift`` lies in ``0 .. 63``. A scale of 0 gives ``(0, 0)`` (every output is the
    zero point). Below ``2**-33`` the shift is pinned at 63 and ``mult`` keeps fewer
    significant bits (the nearest multiple of ``2**-63``, possibly 0); scales that round
    to ``2**31`` or more are refused.
    """
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"requantisation scale {scale!r} is invalid: must be a finite number >= 0")
    if scale == 0:
        return 0, 0
    mantissa, exponent = math.frexp(scale)          # scale = mantissa * 2**exponent, 0.5 <= m < 1
    mult = round(mantissa * (1 << REQUANT_MULT_WIDTH))
    shift = REQUANT_MULT_WIDTH - exponent
    if mult == 1 << REQUANT_MULT_WIDTH:             # rounding carried into the next power of two
        mult >>= 1
        shift -= 1
    max_shift = (1 << REQUANT_SHIFT_WIDTH) - 1
    if shift > max_shift:                           # tiny: the nearest multiple of 2**-63
        mult, shift = round(scale * 2.0**max_shift), max_shift
        if mult == 0:
            return 0, 0
    if shift < 0:
        raise ValueError(f"requantisation scale {scale!r} is too large: the largest is 2**31 - 1")
    return mult, shift
