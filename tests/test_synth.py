"""ECP5 synthesis through the pip-installed Yosys (what `make bench` uses for the sparse
front end's cost): a processing element maps its multiplier to one MULT18X18D."""

import pytest
from amaranth.back import verilog

from npu.generators.synth import SynthesisError, synthesise
from npu.hdl.pe import ProcessingElement


def test_pe_maps_to_one_dsp(tmp_path):
    for group in (1, 4):
        pe = ProcessingElement(data_width=8, psum_width=19, group=group)
        src = tmp_path / f"pe{group}.v"
        src.write_text(verilog.convert(pe, name="pe"))
        cells = synthesise(src, "pe", tmp_path / f"synth{group}", family="ecp5")
        assert cells["dsps"] == 1, cells
        # two weight banks + activation register(s) + psum + sel (+ two index registers)
        assert cells["ffs"] >= 2 * 8 + 8 * group + 19 + 1 + (4 if group > 1 else 0), cells


def test_unknown_family_is_one_line(tmp_path):
    with pytest.raises(SynthesisError, match="family 'virtex' is not supported; allowed: ecp5"):
        synthesise(tmp_path / "x.v", "x", tmp_path, family="virtex")
