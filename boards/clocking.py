"""PLL settings for the board top level: iCE40 SB_PLL40 and ECP5 EHXPLLL.

Each function searches the divider space for the exact output frequency (or the nearest
one) within the datasheet's VCO and phase-detector ranges, and raises a one-line
``ValueError`` when the board clock cannot reach it.
"""

__all__ = ["ice40_pll", "ecp5_pll"]


def ice40_pll(f_in, f_out):
    """``(DIVR, DIVF, DIVQ, FILTER_RANGE, f_actual)`` for an iCE40 SB_PLL40 (SIMPLE feedback).

    ``f_out = f_in * (DIVF+1) / ((DIVR+1) * 2**DIVQ)``, with the phase detector at
    10..133 MHz and the VCO at 533..1066 MHz (iCE40 sysCLOCK PLL guide).
    """
    best = None
    for divr in range(16):
        f_pfd = f_in / (divr + 1)
        if not 10e6 <= f_pfd <= 133e6:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533e6 <= f_vco <= 1066e6:
                continue
            for divq in range(1, 7):
                f = f_vco / 2 ** divq
                error = abs(f - f_out)
                if best is None or error < best[0]:
                    best = (error, divr, divf, divq, f_pfd, f)
    if best is None or best[0] > 0.01 * f_out:
        raise ValueError(f"an iCE40 PLL cannot make {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz")
    _, divr, divf, divq, f_pfd, f = best
    filter_range = next(i for i, top in enumerate((17e6, 26e6, 44e6, 66e6, 101e6, 133e6)) if f_pfd < top) + 1
    return divr, divf, divq, filter_range, f


def ecp5_pll(f_in, f_out):
    """``(CLKI_DIV, CLKFB_DIV, CLKOP_DIV, f_actual)`` for an ECP5 EHXPLLL fed back from CLKOP.

    ``f_out = f_in / CLKI_DIV * CLKFB_DIV``, the VCO ``f_out * CLKOP_DIV`` at 400..800 MHz
    and the phase detector ``f_in / CLKI_DIV`` at 3.125..400 MHz (ECP5 sysCLOCK guide).
    """
    best = None
    for clki in range(1, 129):
        f_pfd = f_in / clki
        if not 3.125e6 <= f_pfd <= 400e6:
            continue
        for clkfb in range(1, 81):
            f = f_pfd * clkfb
            for clkop in range(1, 129):
                if 400e6 <= f * clkop <= 800e6:
                    error = abs(f - f_out)
                    if best is None or error < best[0]:
                        best = (error, clki, clkfb, clkop, f)
                    break
    if best is None or best[0] > 0.01 * f_out:
        raise ValueError(f"an ECP5 PLL cannot make {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz")
    return best[1:]
