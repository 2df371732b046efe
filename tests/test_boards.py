"""Board builds: the board table, PLL settings, report parsing, and one real ECP5
synthesis + place-and-route + bitstream of a small NPU through the pip-installed tools."""

import json
import re
import subprocess

import pytest

from npu.boards import build as board_build
from npu.boards.clocking import ecp5_pll, ice40_pll
from npu.boards.platforms import BOARDS, ECP5_DSP_SITES, array_dsp_sites, board, board_config
from npu.generators.config import ConfigError, NPUConfig
from npu.generators.synth import mapped_cells, yosys_command


def test_every_board_has_a_valid_default_npu_and_platform():
    for name, b in BOARDS.items():
        config = board_config(name)
        assert config.macs_per_cycle >= 16, name
        assert b.platform_class().device == b.device
        assert b.family in ("ice40", "ecp5")
    assert board_config("ulx3s-85f").macs_per_cycle >= 144


def test_unknown_board_is_one_line_naming_the_boards():
    with pytest.raises(ConfigError, match=r"board 'nope' is not supported; allowed: icebreaker, ulx3s-12f"):
        board("nope")


@pytest.mark.parametrize("f_in, f_out", [(12e6, 30e6), (12e6, 36e6), (12e6, 48e6)])
def test_ice40_pll_is_exact_and_in_range(f_in, f_out):
    divr, divf, divq, filter_range, f = ice40_pll(f_in, f_out)
    assert f == pytest.approx(f_out)
    assert 533e6 <= f_in / (divr + 1) * (divf + 1) <= 1066e6
    assert f == f_in * (divf + 1) / ((divr + 1) * 2 ** divq)
    assert filter_range == 1          # a 12 MHz phase detector is in the lowest band (icepll agrees)


@pytest.mark.parametrize("f_in, f_out", [(25e6, 100e6), (25e6, 80e6), (100e6, 50e6)])
def test_ecp5_pll_is_exact_and_in_range(f_in, f_out):
    clki, clkfb, clkop, f = ecp5_pll(f_in, f_out)
    assert f == pytest.approx(f_out)
    assert 400e6 <= f * clkop <= 800e6


def test_pll_out_of_reach_is_one_line():
    with pytest.raises(ValueError, match="cannot make 2000 MHz from 12 MHz"):
        ice40_pll(12e6, 2000e6)


def test_ppu_lanes_must_divide_cols():
    with pytest.raises(ConfigError, match="ppu_lanes = 3 is invalid for cols = 8: must divide cols"):
        NPUConfig(ppu_lanes=3)


NEXTPNR_LOG = """\
Info: Device utilisation:
Info: 	          TRELLIS_IO:     9/  197     4%
Info: 	        TRELLIS_COMB: 12000/24288    49%
Info: 	          MULT18X18D:    30/   28   107%
Info: Max frequency for clock '$glbnet$clk_npu': 61.00 MHz (FAIL at 100.00 MHz)
Info: Routing..
Info:       1000 |      900        100 |  900   100 |      5000|       1.00       1.00|
Info: Routing complete.
Info: Device utilisation:
Info: 	          TRELLIS_IO:     9/  197     4%
Info: 	        TRELLIS_COMB: 12000/24288    49%
Info: 	          MULT18X18D:    30/   28   107%
Info: Max frequency for clock '$glbnet$clk_npu': 58.25 MHz (FAIL at 100.00 MHz)
"""


def test_report_reads_the_last_utilisation_and_fmax(tmp_path):
    (tmp_path / "top.tim").write_text(NEXTPNR_LOG)
    (tmp_path / "top.rpt").write_text("Printing statistics.\n     1234   TRELLIS_FF\n")
    report = {}
    b = board("ulx3s-25f")
    board_build._fill_report(report, b, board_config("ulx3s-25f"), tmp_path)
    assert report["resources"]["dsp"] == {"used": 30, "available": 28}
    assert report["resources"]["ffs"]["used"] == 1234
    assert report["fits"] is False
    assert report["clock"]["fmax_mhz"] == 58.25 and report["clock"]["met"] is False
    assert report["peak_gmacs"] == pytest.approx(24 * 58.25 / 1e3, abs=1e-3)
    assert report["routed"] is True and report["routing"] is None
    assert report["placed_estimate_mhz"] == 61.0


UNROUTED_LOG = """\
Info: Device utilisation:
Info: 	         ICESTORM_LC:  5125/  5280    97%
Info: 	        ICESTORM_RAM:    24/    30    80%
Info: Max frequency for clock 'clk': 14.36 MHz (FAIL at 30.00 MHz)
Info: Running router2...
Info:     iter=1 wires=70000 overused=9000 overuse=9500 archfail=NA
Info:     iter=2 wires=72000 overused=2276 overuse=2280 archfail=NA
"""


def test_report_of_an_unrouted_design_has_no_fmax_and_says_where_routing_stood(tmp_path):
    (tmp_path / "top.tim").write_text(UNROUTED_LOG)
    report = {}
    board_build._fill_report(report, board("icebreaker"), board_config("icebreaker"), tmp_path)
    assert report["fits"] is True and report["routed"] is False
    assert report["clock"]["fmax_mhz"] is None and report["peak_gmacs"] is None
    assert report["placed_estimate_mhz"] == 14.36
    assert report["routing"] == "2276 overused wires (router2 iteration 2)"
    assert board_build.router_state("Info:     104000 |    24370      77582 |  307   664 |     16616|"
                                    "       1.76     264.13|") == "16616 arcs left to route (router1, 104000 iterations)"


def _stand_in_tools(tmp_path, monkeypatch, scripts):
    """Shell scripts standing in for the toolchain: {environment variable: script body}."""
    fake = tmp_path / "tools"
    fake.mkdir()
    for var, body in scripts.items():
        (fake / var).write_text("#!/bin/sh\n" + body)
        (fake / var).chmod(0o755)
        monkeypatch.setenv(var, str(fake / var))
    return fake


def test_place_and_route_past_its_time_limit_is_stopped_with_a_report(tmp_path, monkeypatch):
    # Stand-in tools: Yosys does nothing; nextpnr logs a placement and router2 iterations, then
    # would route for a minute (as nextpnr does, without end, on a congested design).
    _stand_in_tools(tmp_path, monkeypatch, {
        "YOSYS": "exit 0\n", "ICEPACK": "exit 0\n",
        "NEXTPNR_ICE40": f"echo \"$@\" > {tmp_path / 'nextpnr-args'}\n"
                         "while [ \"$1\" != --log ]; do shift; done\n"
                         f"cat > \"$2\" <<'EOF'\n{UNROUTED_LOG}EOF\nsleep 60\n"})
    config = NPUConfig(rows=2, cols=2, act_depth=64, wgt_depth=16, acc_depth=64, param_depth=4)
    lines = []
    with pytest.raises(board_build.BuildError,
                       match=r"place-and-route stopped after 0.05 minutes without a routed design \(2276 overused "
                             r"wires \(router2 iteration 2\); ICESTORM_LC 5125/5280 \(97%\)\); 'npu build "
                             r"--pnr-minutes N' allows longer"):
        board_build.build_board("icebreaker", config, tmp_path / "out", echo=lines.append, clk_hz=12_000_000,
                                pnr_minutes=0.05, placer="static", router="router2", seed=5)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["routed"] is False and report["bitstream"] is None and report["clock"]["fmax_mhz"] is None
    # The placer, router and seed asked for reach nextpnr and the report.
    assert "--seed 5 --placer static --router router2" in (tmp_path / "nextpnr-args").read_text()
    assert report["nextpnr"] == {"placer": "static", "router": "router2", "seed": 5, "seeds": 1}
    assert report["seconds"]["place-and-route"] < 30
    assert any("routing: 2276 overused wires" in line for line in lines)


DCC_UNROUTABLE_LOG = """\
Info: Routing globals...
ERROR: Failed to route arc 0.0 of net 'reset_sync_rst', from X67/Y2/Q4_SLICE to X0/Y0/G_CLKI_TDCC0.
"""


def test_place_and_route_tries_another_seed_when_a_global_buffer_is_unreachable(tmp_path, monkeypatch):
    # Stand-in tools: nextpnr fails to route into a DCCA with seeds 1 and 2, routes with 3.
    fake = _stand_in_tools(tmp_path, monkeypatch, {
        "YOSYS": "exit 0\n",
        "ECPPACK": "while [ \"$1\" != --bit ]; do shift; done\ntouch \"$2\"\n",
        "NEXTPNR_ECP5": f"echo \"$@\" >> {tmp_path / 'nextpnr-args'}\n"
                        "case \"$*\" in *'--seed 3'*) good=1;; *) good=0;; esac\n"
                        "while [ \"$1\" != --log ]; do shift; done\n"
                        f"if [ $good = 1 ]; then cat > \"$2\" <<'EOF'\n{NEXTPNR_LOG}EOF\nexit 0; fi\n"
                        f"cat > \"$2\" <<'EOF'\n{DCC_UNROUTABLE_LOG}EOF\nexit 1\n"})
    config = NPUConfig(rows=2, cols=2, act_depth=64, wgt_depth=16, acc_depth=64, param_depth=4)
    lines = []
    report = board_build.build_board("ulx3s-25f", config, tmp_path / "out", echo=lines.append)
    seeds = [line.split("--seed ")[1].split()[0] for line in (tmp_path / "nextpnr-args").read_text().splitlines()]
    assert seeds == ["1", "2", "3"]
    assert report["nextpnr"]["seed"] == 3 and report["bitstream"] is not None
    assert sum("could not reach a global buffer" in line for line in lines) == 2
    # Other place-and-route failures are not retried.
    (tmp_path / "nextpnr-args").unlink()
    (fake / "NEXTPNR_ECP5").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'nextpnr-args'}\n"
                                  "while [ \"$1\" != --log ]; do shift; done\n"
                                  "echo 'ERROR: Unable to place cell' > \"$2\"; exit 1\n")
    with pytest.raises(board_build.BuildError, match="place-and-route failed"):
        board_build.build_board("ulx3s-25f", config, tmp_path / "out2", echo=None)
    assert len((tmp_path / "nextpnr-args").read_text().splitlines()) == 1


def test_seed_sweep_keeps_the_fastest_routed_result_and_stops_once_timing_is_met(tmp_path, monkeypatch):
    # Stand-in nextpnr: Fmax 80, 95, 90, 101, 99 MHz with seeds 1..5 (the ULX3S's 100 MHz
    # clock); its textcfg says which seed placed it.
    fmax = {1: 80, 2: 95, 3: 90, 4: 101, 5: 99}
    cases = "".join(f"*'--seed {n} '*) f={f};; " for n, f in fmax.items())
    _stand_in_tools(tmp_path, monkeypatch, {
        "YOSYS": "exit 0\n",
        "ECPPACK": "while [ \"$1\" != --bit ]; do shift; done\ntouch \"$2\"\n",
        "NEXTPNR_ECP5": f"echo \"$@\" >> {tmp_path / 'nextpnr-args'}\n"
                        f"case \"$* \" in {cases}esac\n"
                        "seed=$(echo \"$*\" | sed 's/.*--seed \\([0-9]*\\).*/\\1/')\n"
                        "while [ \"$1\" != --log ]; do shift; done\n"
                        "echo \"Info: Routing complete.\" > \"$2\"\n"
                        "echo \"Info: Max frequency for clock 'clk': $f.00 MHz (FAIL at 100.00 MHz)\" >> \"$2\"\n"
                        "echo \"seed $seed\" > top.config\n"})
    config = NPUConfig(rows=2, cols=2, act_depth=64, wgt_depth=16, acc_depth=64, param_depth=4)
    lines = []
    report = board_build.build_board("ulx3s-25f", config, tmp_path / "out", echo=lines.append, seeds=3)
    out = tmp_path / "out"
    assert report["nextpnr"]["tried"] == {"1": 80.0, "2": 95.0, "3": 90.0}
    assert report["nextpnr"]["seed"] == 2 and report["clock"]["fmax_mhz"] == 95.0
    assert (out / "top.config").read_text() == "seed 2\n"       # the bitstream is packed from seed 2's
    assert "95.00 MHz" in (out / "top.tim").read_text()
    assert sorted(p.name for p in out.glob("top.seed*")) == ["top.seed1.tim", "top.seed2.config",
                                                              "top.seed2.tim", "top.seed3.tim"]
    assert any("seed 2 kept (seed 1: 80.0 MHz, seed 2: 95.0 MHz, seed 3: 90.0 MHz)" in line for line in lines)
    # Seeds 2..6: seed 4 meets 100 MHz, so 5 and 6 are not tried.
    (tmp_path / "nextpnr-args").unlink()
    report = board_build.build_board("ulx3s-25f", config, tmp_path / "out2", echo=None, seed=2, seeds=5)
    assert report["nextpnr"]["tried"] == {"2": 95.0, "3": 90.0, "4": 101.0}
    assert report["nextpnr"]["seed"] == 4 and report["clock"]["met"] is True
    assert len((tmp_path / "nextpnr-args").read_text().splitlines()) == 3
    with pytest.raises(ValueError, match="seeds = 0 is invalid: must be a positive integer"):
        board_build.build_board("ulx3s-25f", config, tmp_path / "out3", echo=None, seeds=0)
    # The large ECP5 boards try up to four seeds unless told otherwise (the small ones one).
    report = board_build.build_board("ulx3s-45f", config, tmp_path / "out4", echo=None)
    assert board("ulx3s-45f").seeds == 4 and board("ulx3s-25f").seeds == 1
    assert report["nextpnr"]["seeds"] == 4 and report["nextpnr"]["seed"] == 4
    assert list(report["nextpnr"]["tried"]) == ["1", "2", "3", "4"]
    # They map logic for depth (Yosys' ABC9 script replaced); the small ones keep Yosys' own.
    assert report["mapping"] == "delay" and board("ulx3s-25f").mapping == "area"
    assert "scratchpad -set abc9.script +&scorr;" in (tmp_path / "out4" / "top.ys").read_text()
    assert "scratchpad" not in (tmp_path / "out" / "top.ys").read_text()
    report = board_build.build_board("ulx3s-45f", config, tmp_path / "out5", echo=None, seeds=1, mapping="area")
    assert report["mapping"] == "area" and "scratchpad" not in (tmp_path / "out5" / "top.ys").read_text()


def test_unknown_placer_or_router_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="placer = 'sa' is invalid: must be one of heap, static"):
        board_build.build_board("icebreaker", None, tmp_path, echo=None, placer="sa")
    with pytest.raises(ValueError, match="router = 'router3' is invalid: must be one of router1, router2"):
        board_build.build_board("ulx3s-85f", None, tmp_path, echo=None, router="router3")
    with pytest.raises(ValueError, match="seed = 0 is invalid: must be a positive integer"):
        board_build.build_board("ulx3s-85f", None, tmp_path, echo=None, seed=0)
    with pytest.raises(ValueError, match="mapping = 'speed' is invalid: must be one of area, delay"):
        board_build.build_board("ulx3s-85f", None, tmp_path, echo=None, mapping="speed")
    with pytest.raises(ValueError, match="dsp_placement = 'grid' is invalid: must be one of placer, array"):
        board_build.build_board("ulx3s-85f", None, tmp_path, echo=None, dsp_placement="grid")
    assert not any(tmp_path.iterdir())      # refused before anything was built


def test_array_dsp_sites_follow_the_array_on_the_85f():
    sites = array_dsp_sites("LFE5U-85F", 12, 12)
    rows = ECP5_DSP_SITES["LFE5U-85F"]
    assert len(rows) == 3 and all(len(row) == 52 for row in rows)
    assert len(set(sites.values())) == 144 and set(sites.values()) <= {s for row in rows for s in row}

    def xy(site):
        x, y, _ = site.split("/")
        return int(x[1:]), int(y[1:])
    for n in range(12):
        # A column's four cells of a band side by side in one DSP row, the next band's
        # straight below (the same sites of the next DSP row).
        for band in range(3):
            cells = [sites[(4 * band + j, n)] for j in range(4)]
            assert cells == list(rows[band][4 * n:4 * n + 4])
        assert {xy(sites[(k, n)])[0] for k in (0, 4, 8)} == {xy(sites[(0, n)])[0]}
        assert [xy(sites[(k, n)])[1] for k in (0, 4, 8)] == [10, 34, 58]
    # Columns left to right; an unknown die or an array too wide for a DSP row: no pinning.
    assert xy(sites[(0, 0)])[0] < xy(sites[(0, 1)])[0] < xy(sites[(0, 11)])[0]
    assert array_dsp_sites("LFE5UM5G-85F", 12, 12) == sites
    assert array_dsp_sites("LFE5U-25F", 4, 6) is None
    assert array_dsp_sites("LFE5U-85F", 12, 14) is None


def test_build_pins_the_array_dsp_blocks_where_the_board_says(tmp_path, monkeypatch):
    _stand_in_tools(tmp_path, monkeypatch, {
        "YOSYS": "exit 0\n",
        "ECPPACK": "while [ \"$1\" != --bit ]; do shift; done\ntouch \"$2\"\n",
        "NEXTPNR_ECP5": "while [ \"$1\" != --log ]; do shift; done\n"
                        "echo \"Info: Routing complete.\" > \"$2\"\n"
                        "echo \"Info: Max frequency for clock 'clk': 101.00 MHz (PASS at 100.00 MHz)\" >> \"$2\"\n"})
    config = NPUConfig(rows=3, cols=2, act_depth=64, wgt_depth=16, acc_depth=64, param_depth=4, register_slices=True)
    report = board_build.build_board("ulx3s-85f", config, tmp_path / "pinned", echo=None, seeds=1,
                                     dsp_placement="array")
    netlist = (tmp_path / "pinned" / "top.il").read_text()
    # (HeAP places around the fixed blocks: the static placer, the 85F's default, did not settle.)
    assert report["dsp_placement"] == "array" and report["nextpnr"]["placer"] == "heap"
    expected = array_dsp_sites("LFE5U-85F", 3, 2)
    assert sorted(re.findall(r'attribute \\BEL "([^"]+)"', netlist)) == sorted(expected.values())
    report = board_build.build_board("ulx3s-85f", config, tmp_path / "free", echo=None, seeds=1)
    assert board("ulx3s-85f").dsp_placement == "placer" and report["dsp_placement"] == "placer"
    assert report["nextpnr"]["placer"] == "static" and "BEL" not in (tmp_path / "free" / "top.il").read_text()
    with pytest.raises(ValueError, match="placer = 'static' does not go with dsp_placement = 'array'"):
        board_build.build_board("ulx3s-85f", config, tmp_path / "refused", echo=None, placer="static",
                                dsp_placement="array")
    with pytest.raises(ValueError, match="dsp_placement = 'array' is not available on the LFE5U-25F: its DSP "
                                         "sites are known only for LFE5U-85F"):
        board_build.build_board("ulx3s-25f", config, tmp_path / "refused", echo=None, dsp_placement="array")
    wide = NPUConfig(rows=12, cols=14, act_depth=64, wgt_depth=24, acc_depth=64, param_depth=4)
    with pytest.raises(ValueError, match="cannot place a 12x14 array on the LFE5U-85F's DSP rows"):
        board_build.build_board("ulx3s-85f", wide, tmp_path / "refused", echo=None, dsp_placement="array")
    assert not (tmp_path / "refused").exists()
    report = board_build.build_board("ulx3s-25f", config, tmp_path / "25f", echo=None)
    assert report["dsp_placement"] == "placer" and "BEL" not in (tmp_path / "25f" / "top.il").read_text()


def test_flash_without_bitstream_or_tool_is_one_line(tmp_path, monkeypatch):
    from npu.boards.flash import FlashError, flash_board
    with pytest.raises(FlashError, match="no bitstream .*run 'npu build --board icebreaker' first"):
        flash_board(board("icebreaker"), tmp_path)
    (tmp_path / "top.bit").write_bytes(b"\0")
    monkeypatch.setenv("OPENFPGALOADER", "/nonexistent/openFPGALoader")
    with pytest.raises(FlashError, match="openFPGALoader not found"):
        flash_board(board("ulx3s-85f"), tmp_path)


def test_flash_refuses_a_bitstream_that_misses_timing(tmp_path, monkeypatch):
    from npu.boards.flash import FlashError, flash_board
    (tmp_path / "top.bit").write_bytes(b"\0")
    report = {"board": "ulx3s-25f", "clock": {"target_mhz": 100.0, "clock_mhz": 100.0, "fmax_mhz": 70.12,
                                              "met": False}}
    (tmp_path / "report.json").write_text(json.dumps(report))
    with pytest.raises(FlashError, match=r"misses timing \(Fmax 70.1 MHz < its 100 MHz clock\).*"
                                         r"--board ulx3s-25f --clock-mhz 70', or flash it anyway with --force"):
        flash_board(board("ulx3s-25f"), tmp_path)
    with pytest.raises(FlashError, match="was built for the ulx3s-25f, not the ulx3s-85f"):
        flash_board(board("ulx3s-85f"), tmp_path)
    monkeypatch.setenv("OPENFPGALOADER", "/nonexistent/openFPGALoader")
    with pytest.raises(FlashError, match="openFPGALoader not found"):      # --force gets past the check
        flash_board(board("ulx3s-25f"), tmp_path, force=True)
    report["clock"].update(clock_mhz=70.0, met=True)                      # rebuilt at a clock it meets
    (tmp_path / "report.json").write_text(json.dumps(report))
    with pytest.raises(FlashError, match="openFPGALoader not found"):
        flash_board(board("ulx3s-25f"), tmp_path)


def test_board_clock_is_the_pll_frequency_and_unreachable_is_one_line():
    from npu.boards.top import BoardTop
    b = board("ulx3s-25f")
    platform = b.platform_class()()
    top = BoardTop(b, NPUConfig(rows=2, cols=2, act_depth=64, wgt_depth=16, acc_depth=64, param_depth=4),
                   clk_hz=70_000_000)
    platform.prepare(top)
    assert top.clk_hz == 70_000_000
    top = BoardTop(b, board_config("ulx3s-25f"), clk_hz=1_000_000)
    with pytest.raises(ValueError, match="an ECP5 PLL cannot make 1 MHz from 25 MHz"):
        b.platform_class()().prepare(top)
    # The board's own clock: no PLL (ECPIX-5 at 100 MHz, the iCEBreaker at 12 MHz).
    for name, hz in (("ecpix5-45f", 100_000_000), ("icebreaker", 12_000_000)):
        b = board(name)
        top = BoardTop(b, NPUConfig(rows=2, cols=2, act_depth=64, wgt_depth=16, acc_depth=64, param_depth=4),
                       clk_hz=hz)
        b.platform_class()().prepare(top)
        assert top.clk_hz == hz


def test_resets_on_global_networks_where_the_board_routes_them():
    """ECP5 boards put the board's and the NPU core's resets on globals (a DCCA each),
    except the 45F ones (nextpnr's router2 cannot reach the DCCA it picks there); the
    iCE40 needs none (nextpnr-ice40 promotes a reset by itself)."""
    from npu.boards.top import BoardTop
    small = NPUConfig(rows=2, cols=2, act_depth=64, wgt_depth=16, acc_depth=64, param_depth=4)
    for name, dccas in (("ulx3s-25f", 2), ("ulx3s-85f", 2), ("ulx3s-45f", 0), ("ecpix5-45f", 0), ("icebreaker", 0)):
        b = board(name)
        rtlil_text = b.platform_class()().prepare(BoardTop(b, small)).files["top.il"]
        assert rtlil_text.count("cell \\DCCA") == dccas, name


@pytest.mark.rtl
@pytest.mark.fpga
def test_ecp5_build_of_a_small_npu(tmp_path):
    """The whole flow on a fresh machine: Yosys, nextpnr-ecp5 and ecppack from PyPI."""
    config = NPUConfig(rows=2, cols=2, act_depth=64, wgt_depth=16, acc_depth=64, param_depth=4, ppu_lanes=1)
    lines = []
    # Mapped for depth (the large boards' default): the script goes to Yosys. (This small
    # NPU is one of those the pinned Yosys' ABC9 stopped on with an internal assertion
    # before the script split the nets ahead of the LUT mapping.)
    report = board_build.build_board("ulx3s-25f", config, tmp_path, echo=lines.append, clk_hz=50_000_000,
                                     mapping="delay")
    assert report["mapping"] == "delay"
    script = (tmp_path / "top.ys").read_text()
    assert "scratchpad -set abc9.script" in script and "splitnets\nsynth_ecp5 -run map_luts:check" in script
    assert report.get("abc9", True), "ABC9 failed; mapped with the classic ABC"
    # ABC ran the script (its own output, which would show it, is not logged: Yosys runs
    # with -q): without area recovery it takes more LUTs than Yosys' own script on the
    # same netlist (7862 against 5911 LUT4 on this NPU).
    area_script = script.replace("scratchpad -set abc9.script", "# ").replace("write_json top.json", "")
    (tmp_path / "area.ys").write_text(area_script)
    subprocess.run([*yosys_command(), "-q", "-l", "area.rpt", "area.ys"], cwd=tmp_path, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    delay_luts, area_luts = (mapped_cells((tmp_path / log).read_text(), "LUT4") for log in ("top.rpt", "area.rpt"))
    assert area_luts > 1000 and delay_luts > 1.15 * area_luts, (delay_luts, area_luts)
    assert (tmp_path / "top.bit").stat().st_size > 100_000
    assert report["fits"]
    assert report["resources"]["dsp"]["used"] == 4 + 4     # four PEs + one requantisation lane
    # Built at 50 MHz (the PLL makes it; nextpnr is constrained to it), which a 2x2 NPU meets.
    assert report["clock"]["clock_mhz"] == 50 and report["clock"]["constraint_mhz"] == 50
    assert report["clock"]["met"] and report["clock"]["fmax_mhz"] >= 50
    assert report["macs_per_cycle"] == 4
    assert json.loads((tmp_path / "report.json").read_text())["bitstream"].endswith("top.bit")
    assert any("place-and-route" in line for line in lines)      # progress was shown


@pytest.mark.rtl
@pytest.mark.fpga
def test_ice40_build_of_a_small_npu(tmp_path):
    """The iCE40 flow on a fresh machine: Yosys, nextpnr-ice40 and icepack from PyPI, for a
    2x2 NPU with the iCEBreaker's control path (sequential dispatch, serial requantiser)."""
    config = board_config("icebreaker", rows=2, cols=2, act_depth=64, wgt_depth=16, acc_depth=64, param_depth=4)
    lines = []
    report = board_build.build_board("icebreaker", config, tmp_path, echo=lines.append, clk_hz=12_000_000)
    assert (tmp_path / "top.bin").stat().st_size > 100_000
    assert report["fits"]
    assert report["resources"]["dsp"]["used"] == 2              # four PEs, two per SB_MAC16
    assert report["resources"]["spram"]["used"] == 4            # the 128 KiB RAM
    # Built at the board's 12 MHz (no PLL), which this NPU meets.
    assert report["clock"]["clock_mhz"] == 12 and report["clock"]["met"] and report["clock"]["fmax_mhz"] >= 12
    assert report["macs_per_cycle"] == 4
    assert json.loads((tmp_path / "report.json").read_text())["bitstream"].endswith("top.bin")
    assert any("place-and-route" in line for line in lines)


def test_abc9_failure_is_recognised(tmp_path):
    """An ECP5 synthesis that stops on ABC9's internal assertion is retried with -noabc9."""
    assert not board_build._abc9_failed(tmp_path)
    (tmp_path / "top.rpt").write_text("2.44.19.4. Executing ABC9_EXE pass (technology mapping using ABC9).\n")
    assert not board_build._abc9_failed(tmp_path)
    (tmp_path / "synthesis.out").write_text("ERROR: Assert `GetSize(conn.first) == GetSize(conn.second)' failed\n")
    assert board_build._abc9_failed(tmp_path)


def test_fpga_report_table_has_a_row_for_an_unrouted_board(tmp_path):
    from npu.cli import report_table
    (tmp_path / "top.tim").write_text(UNROUTED_LOG)
    report = {"board": "icebreaker", "device": "iCE40UP5K", "config": board_config("icebreaker").to_dict()}
    board_build._fill_report(report, board("icebreaker"), board_config("icebreaker"), tmp_path)
    lines = report_table([report]).splitlines()
    assert lines[0].split()[-2:] == ["fits", "routed"]
    row = lines[2].split()
    assert row[0] == "icebreaker" and row[4] == "5125/5280" and row[-2:] == ["yes", "NO"]
    assert row[9] == "-"          # no Fmax before routing
