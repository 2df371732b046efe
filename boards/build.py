"""``npu build``: board top level -> Yosys -> nextpnr -> bitstream, and ``report.json``.

The amaranth-boards platform writes the build files (RTLIL, Yosys script, pin and clock
constraints); this module runs the tools on them itself, so it can pick them (``$YOSYS``
and friends, else a recent system tool, else the YoWASP tool from PyPI), print progress
while they run, and read their logs into the report: resources used and available,
Fmax against the constraint, MACs per cycle and peak GMAC/s.
"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .clocking import ecp5_pll, ice40_pll
from .platforms import board as get_board

__all__ = ["BuildError", "build_board", "toolchain", "read_report"]

#: The tools of each family: (environment variable, tool name), in the order they run.
TOOLS = {
    "ice40": [("YOSYS", "yosys"), ("NEXTPNR_ICE40", "nextpnr-ice40"), ("ICEPACK", "icepack")],
    "ecp5":  [("YOSYS", "yosys"), ("NEXTPNR_ECP5", "nextpnr-ecp5"), ("ECPPACK", "ecppack")],
}
#: Oldest system tools used in place of the YoWASP ones (the versions the flow is tested with).
MIN_VERSIONS = {"yosys": (0, 40), "nextpnr-ice40": (0, 7), "nextpnr-ecp5": (0, 7)}

#: nextpnr's resource names -> the report's summary names.
SUMMARY = {
    "ice40": {"ICESTORM_LC": "logic_cells", "ICESTORM_RAM": "block_ram", "ICESTORM_DSP": "dsp",
              "ICESTORM_SPRAM": "spram", "ICESTORM_PLL": "pll", "SB_IO": "io"},
    "ecp5":  {"TRELLIS_COMB": "luts", "TRELLIS_FF": "ffs", "TRELLIS_SLICE": "slices", "DP16KD": "block_ram",
              "MULT18X18D": "dsp", "EHXPLLL": "pll", "TRELLIS_IO": "io"},
}
#: Flip-flop cells in Yosys' statistics, per family.
FF_CELLS = {"ice40": r"SB_DFF\w*", "ecp5": r"TRELLIS_FF"}


class BuildError(RuntimeError):
    """A tool is missing or failed, or the design does not fit; the message is one line."""


def _version(command):
    try:
        out = subprocess.run([command, "--version"] if "nextpnr" in command else [command, "-V"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"(\d+)\.(\d+)", out.stdout + out.stderr)
    return (int(match[1]), int(match[2])) if match else None


def toolchain(family):
    """``{env var: command}`` for ``family``: ``$VAR`` if set, else a recent system tool,
    else the YoWASP tool installed with the project."""
    tools = {}
    venv_bin = Path(sys.executable).parent
    for var, name in TOOLS[family]:
        if os.environ.get(var):
            tools[var] = os.environ[var]
            continue
        system = shutil.which(name)
        minimum = MIN_VERSIONS.get(name)
        if system and (minimum is None or (_version(system) or (0, 0)) >= minimum):
            tools[var] = system
            continue
        yowasp = venv_bin / f"yowasp-{name}"
        if yowasp.exists() or shutil.which(f"yowasp-{name}"):
            tools[var] = str(yowasp) if yowasp.exists() else shutil.which(f"yowasp-{name}")
            continue
        raise BuildError(f"{name} not found: install the project (it brings yowasp-{name}), install {name}, "
                         f"or set {var}")
    return tools


class _Progress:
    """Prints the stages a tool's log reaches while it runs (a line per stage), and the
    router's progress (arcs left, or overused wires) at most once per ``every`` seconds."""

    PATTERNS = [
        re.compile(r"^(\d+\.\d+)\. Executing (\w+) pass"),          # Yosys, inside synth_*
        re.compile(r"^Info: (Packing|Running main analytical placer|Running simulated annealing|Placing"
                   r"|Routing|Router2|Program finished|Max frequency|Device utilisation|HeAP|Running router)"),
    ]

    def __init__(self, log, echo, label, every=60.0):
        self.log, self.echo, self.label, self.every = Path(log), echo, label, every
        self.started = time.monotonic()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _say(self, text):
        self.echo(f"  [{self.label} {time.monotonic() - self.started:5.0f} s] {text[:100]}")

    def _run(self):
        seen = 0
        last = None
        said_route = 0.0
        while not self.stop.wait(1.0):
            if not self.log.exists():
                continue
            with self.log.open(errors="replace") as f:
                f.seek(seen)
                chunk = f.read()
            cut = chunk.rfind("\n") + 1
            seen += len(chunk[:cut].encode(errors="replace"))
            state = None
            for line in chunk[:cut].splitlines():
                for pattern in self.PATTERNS:
                    match = pattern.search(line)
                    if match and match[0] != last:
                        last = match[0]
                        self._say(f"{match[2]}" if match.re is self.PATTERNS[0] else line[6:].strip())
                state = router_state(line) or state
            if state and time.monotonic() - said_route >= self.every:
                said_route = time.monotonic()
                self._say(f"routing: {state}")

    def close(self):
        self.stop.set()
        self.thread.join()


#: nextpnr's router progress lines: router1's table rows (iterations | arcs routed with and
#: without rip-up | ... | arcs remaining) and router2's iteration lines.
_ROUTER1_ROW = re.compile(r"^Info:\s+(\d+)\s*\|\s*\d+\s+\d+\s*\|\s*\d+\s+\d+\s*\|\s*(\d+)\s*\|")
_ROUTER2_ITER = re.compile(r"^Info:\s+iter=(\d+)\s+wires=\d+\s+overused=(\d+)")


def router_state(line):
    """A router progress line of nextpnr's log as words, e.g. ``"2271 overused wires
    (router2 iteration 45)"``; None for any other line."""
    match = _ROUTER1_ROW.match(line)
    if match:
        return f"{int(match[2])} arcs left to route (router1, {int(match[1])} iterations)"
    match = _ROUTER2_ITER.match(line)
    if match:
        return f"{int(match[2])} overused wires (router2 iteration {int(match[1])})"
    return None


def _run(cmd, cwd, log, echo, label, env, limit_s=None):
    """Run one tool, its output in ``cwd/label.out``: ``(exit code, seconds)``; the exit
    code is None when the tool was stopped at ``limit_s`` seconds."""
    progress = _Progress(log, echo, label) if echo else None
    started = time.monotonic()
    try:
        with open(Path(cwd) / f"{label}.out", "w") as out:
            # In a session of its own, so a wrapper script's tool is stopped with it.
            process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            try:
                code = process.wait(timeout=limit_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                code = None
            except BaseException:           # Ctrl-C: no tool left running
                os.killpg(process.pid, signal.SIGKILL)
                raise
    except OSError as e:
        raise BuildError(f"cannot run {cmd[0]}: {e}") from None
    finally:
        if progress:
            progress.close()
    return code, time.monotonic() - started


def _commands(plan_dir, family, tools, name="top"):
    """The three tool command lines of the platform's build script, with our tools."""
    script = (Path(plan_dir) / f"build_{name}.sh").read_text()
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line.startswith('"$'):
            continue
        argv = shlex.split(line)
        var = argv[0].lstrip("$")
        commands.append((var, [tools[var], *argv[1:]]))
    if [var for var, _ in commands] != [var for var, _ in TOOLS[family]]:
        raise BuildError(f"unexpected build script from the platform: {[v for v, _ in commands]}")
    return commands


def _utilisation(text):
    """nextpnr's last 'Device utilisation' table: {resource: (used, available)}."""
    start = text.rfind("Device utilisation")
    if start < 0:
        return {}
    table = {}
    for match in re.finditer(r"^Info:\s+([A-Z][A-Z0-9_]+):\s+(\d+)/\s*(\d+)", text[start:], re.M):
        if match[1] in table:
            break
        table[match[1]] = (int(match[2]), int(match[3]))
    return table


def _fmax(text):
    """``(fmax_mhz, constraint_mhz)`` of the NPU clock from nextpnr's last timing report."""
    found = re.findall(r"Max frequency for clock\s+'([^']+)': ([\d.]+) MHz \((?:PASS|FAIL) at ([\d.]+) MHz\)", text)
    if not found:
        return None, None
    npu = [f for f in found if "clk_npu" in f[0] or "sync" in f[0]] or found
    return float(npu[-1][1]), float(npu[-1][2])


def _cells(text):
    stat = text[text.rfind("Printing statistics"):] if "Printing statistics" in text else ""
    cells = {}
    for match in re.finditer(r"^\s+(\d+)\s+([\w$\\]+)\s*$", stat, re.M):
        cells.setdefault(match[2], int(match[1]))     # the flattened top; a hierarchy summary repeats it
    return cells


#: Minutes place-and-route may take before ``npu build`` stops it (nextpnr has no limit of
#: its own, and its router runs without end on a design too congested to route).
PNR_MINUTES = 60


def build_board(name, config=None, out_dir=None, *, baud=None, clk_hz=None, echo=print, program=False,
                pnr_minutes=PNR_MINUTES, placer=None, router=None, seed=1, seeds=None, mapping=None,
                dsp_placement=None):
    """Build board ``name`` with ``config`` (the board's default when None) into ``out_dir``.

    ``clk_hz`` is the NPU clock the PLL makes and nextpnr is constrained to (the board's
    target clock when None). ``pnr_minutes`` limits place-and-route (None or 0: no limit);
    a build stopped there gets its report (``"routed": false``) and a :class:`BuildError`.
    ``placer`` and ``router`` choose nextpnr's (the board's defaults when None), ``seed``
    its placement seed (a positive integer; another seed places the design differently,
    and Fmax moves with it). ``seeds`` > 1 places and routes with ``seed`` and the next
    ones, up to ``seeds`` of them, until one meets timing, and keeps the fastest routed
    result (the report's ``nextpnr.tried`` lists each seed's Fmax); None: the board's
    default (:attr:`Board.seeds`). ``mapping`` is how Yosys maps logic to LUTs, ``"area"``
    or ``"delay"`` (the board's default when None; :attr:`Board.mapping`).
    ``dsp_placement``: ``"array"`` pins the array cells' DSP blocks in array order where
    the device's sites are known (placed with HeAP: the static placer does not settle around
    them), ``"placer"`` leaves them to nextpnr (the board's default when None;
    :attr:`Board.dsp_placement`).

    Returns the report (also written to ``out_dir/report.json``). Raises
    :class:`BuildError` when a tool fails; a design that does not fit the device still
    gets its report (``"fits": false``) before the error.
    """
    from .platforms import DSP_PLACEMENTS, ECP5_DSP_SITES, MAPPINGS, PLACERS, ROUTERS, array_dsp_sites, board_config
    from .top import DEFAULT_BAUD, BoardTop

    board = get_board(name)
    dsp_placement = dsp_placement or board.dsp_placement
    if dsp_placement == "array" and placer == "static":
        raise ValueError("placer = 'static' does not go with dsp_placement = 'array': nextpnr's static placer "
                         "does not settle around fixed DSP blocks (the 85F's placement diverged); use the heap placer")
    if dsp_placement == "array" and placer is None:
        placer = "heap"
    placer, router, mapping = placer or board.placer, router or board.router, mapping or board.mapping
    seeds = board.seeds if seeds is None else seeds
    for option, value, allowed in (("placer", placer, PLACERS), ("router", router, ROUTERS),
                                   ("mapping", mapping, tuple(MAPPINGS)),
                                   ("dsp_placement", dsp_placement, DSP_PLACEMENTS)):
        if value not in allowed:
            raise ValueError(f"{option} = {value!r} is invalid: must be one of {', '.join(allowed)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 1:
        raise ValueError(f"seed = {seed!r} is invalid: must be a positive integer")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds = {seeds!r} is invalid: must be a positive integer (how many seeds to try)")
    config = config or board_config(name)
    sites = array_dsp_sites(board.device, config.rows, config.cols) if dsp_placement == "array" else None
    if dsp_placement == "array" and not sites:
        if board.device not in ECP5_DSP_SITES:
            raise ValueError(f"dsp_placement = 'array' is not available on the {board.device}: its DSP sites are "
                             f"known only for {', '.join(ECP5_DSP_SITES)}; use 'placer'")
        raise ValueError(f"dsp_placement = 'array' cannot place a {config.rows}x{config.cols} array on the "
                         f"{board.device}'s DSP rows; use 'placer'")
    out_dir = Path(out_dir or Path("build") / "boards" / name).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    tools = toolchain(board.family)
    platform = board.platform_class()()
    if clk_hz:      # a clock the PLL cannot make is a one-line error before anything runs
        f_in = platform.lookup(platform.default_clk).clock.frequency
        if f_in != clk_hz:
            (ice40_pll if board.family == "ice40" else ecp5_pll)(f_in, clk_hz)
    if sites:       # (the array reads them from the platform while it is elaborated)
        platform.npu_dsp_sites = sites
    top = BoardTop(board, config, baud=baud or DEFAULT_BAUD, clk_hz=clk_hz)
    # Yosys' synth script ends with `autoname`, which takes minutes to tens of minutes on
    # Amaranth's netlists under YoWASP and only renames cells: run the script up to its
    # `check` step, then that step without `autoname`.
    # Amaranth gives every state machine's state register an init value, and Yosys does not
    # re-encode a state machine whose register has one: drop it (the board design is held
    # in reset until its clock is up, and the reset state is the init value), so Yosys
    # extracts the state machines and encodes them one-hot (fewer logic levels).
    # With mapping = "delay" ABC9 runs the script MAPPINGS gives (through Yosys' scratchpad).
    after_read = "setattr -unset init w:fsm_state"
    if MAPPINGS[mapping]:
        after_read += f"\nscratchpad -set abc9.script {MAPPINGS[mapping]}"
    # On ECP5 the script stops before its LUT mapping for `splitnets`: the pinned Yosys'
    # ABC9 can stop on an internal assertion (``count_id(wire->name) == 0``, Yosys issue
    # 4349) when it puts back a multi-bit wire by its bits' names, which one-bit wires make
    # unambiguous (the 85F's NPU trips it without).
    after_synth = "hierarchy -check\nstat\ncheck -noinit\nblackbox =A:whitebox"
    synth_opts = "-run begin:check"
    if board.family == "ecp5":
        synth_opts = "-run begin:map_luts"
        after_synth = "splitnets\nsynth_ecp5 -run map_luts:check -top top\n" + after_synth
    overrides = {"nextpnr_opts": f"--timing-allow-fail --seed {seed} --placer {placer} --router {router}",
                 "synth_opts": synth_opts,
                 "script_after_read": after_read,
                 "script_after_synth": after_synth}
    if echo:
        echo(f"{board.name}: {board.device}, NPU {config.rows}x{config.cols} ({config.macs_per_cycle} MACs/cycle), "
             f"{(clk_hz or board.clk_hz) / 1e6:g} MHz clock (board target {board.clk_hz / 1e6:g}), {board.ram_bytes // 1024} KiB {board.ram.upper()}; "
             f"tools: {', '.join(Path(t).name for t in tools.values())} (nextpnr: {placer} placer, {router}; LUT mapping for {mapping})")
    started = time.monotonic()
    plan = platform.build(top, name="top", build_dir=str(out_dir), do_build=False, **overrides)
    plan.extract(str(out_dir))
    for stale in ("top.bin", "top.bit", "top.svf", "report.json"):
        (out_dir / stale).unlink(missing_ok=True)       # never left from an earlier build
    (out_dir / "npu.toml").write_text(_toml(config))
    env = {**os.environ, **tools}
    seconds = {"elaborate": round(time.monotonic() - started, 1)}
    report = {
        "board": board.name, "device": board.device, "family": board.family, "description": board.description,
        "config": config.to_dict(), "baud": baud or DEFAULT_BAUD, "ram": {"kind": board.ram,
                                                                           "bytes": board.ram_bytes},
        "tools": {var: Path(cmd).name for var, cmd in tools.items()},
        "nextpnr": {"placer": placer, "router": router, "seed": seed, "seeds": seeds}, "mapping": mapping,
        "dsp_placement": "array" if sites else "placer", "clock_hz": top.clk_hz,
    }
    labels = {"YOSYS": "synthesis", "NEXTPNR_ICE40": "place-and-route", "NEXTPNR_ECP5": "place-and-route",
              "ICEPACK": "bitstream", "ECPPACK": "bitstream"}
    logs = {"YOSYS": "top.rpt", "NEXTPNR_ICE40": "top.tim", "NEXTPNR_ECP5": "top.tim"}
    failure = None
    for var, cmd in _commands(out_dir, board.family, tools):
        label = labels[var]
        if echo:
            echo(f"  {label}: {Path(cmd[0]).name} ...")
        limit = pnr_minutes * 60 if pnr_minutes and label == "place-and-route" else None
        code, secs = _run(cmd, out_dir, out_dir / logs.get(var, f"{label}.out"), echo, label, env, limit)
        if code and var == "YOSYS" and board.family == "ecp5" and _abc9_failed(out_dir):
            # Should the pinned Yosys' ABC9 still fail an internal assertion (it did on the
            # sparse NPUs and the 85F's before `splitnets`), map with the classic ABC
            # (slower logic).
            if echo:
                echo("  synthesis: Yosys' ABC9 mapping failed; again with the classic ABC (-noabc9) ...")
            script = out_dir / "top.ys"
            script.write_text(script.read_text().replace("synth_ecp5 ", "synth_ecp5 -noabc9 "))
            report["abc9"] = False
            code, more = _run(cmd, out_dir, out_dir / logs["YOSYS"], echo, label, env)
            secs += more
        first_seed = seed
        while (code and label == "place-and-route" and board.family == "ecp5"
               and seed < first_seed + PNR_SEEDS - 1 and _global_buffer_unroutable(out_dir)):
            # nextpnr placed a DCCA (a reset's global buffer) where the router cannot reach
            # its input: another seed places it elsewhere.
            seed += 1
            if echo:
                echo(f"  place-and-route: the router could not reach a global buffer's input; again with seed {seed} ...")
            cmd = [f"{seed}" if prev == "--seed" else arg for prev, arg in zip(["", *cmd], cmd)]
            code, more = _run(cmd, out_dir, out_dir / logs[var], echo, label, env, limit)
            secs += more
            report["nextpnr"]["seed"] = seed
        if code == 0 and label == "place-and-route" and seeds > 1:
            secs += _sweep_seeds(cmd, out_dir, seed, seeds, top.clk_hz / 1e6, echo,
                                 lambda c: _run(c, out_dir, out_dir / logs[var], echo, label, env, limit), report)
        seconds[label] = round(secs, 1)
        if code != 0:
            failure = (label, code)
            break
    report["seconds"] = seconds
    _fill_report(report, board, config, out_dir)
    bitstream = out_dir / ("top.bin" if board.family == "ice40" else "top.bit")
    report["bitstream"] = str(bitstream) if bitstream.exists() and not failure else None
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if failure:
        label, code = failure
        over = ", ".join(f"{k} {u}/{a}" for k, (u, a) in report["resources_raw"].items() if u > a)
        if not report["fits"] and over:
            raise BuildError(f"the design does not fit the {board.device}: {over} (report: {out_dir / 'report.json'})")
        if code is None:
            left = report["routing"] or "no router progress yet"
            raise BuildError(f"place-and-route stopped after {pnr_minutes:g} minutes without a routed design "
                             f"({left}; {_fullest(report)}); 'npu build --pnr-minutes N' allows longer, 0 without "
                             f"limit (report: {out_dir / 'report.json'})")
        log = out_dir / logs.get(label, f"{label}.out")
        raise BuildError(f"{label} failed (exit {code}): {_last_error(out_dir)}; log: {log}")
    if echo:
        echo(summary_line(report))
        clock = report["clock"]
        if clock["fmax_mhz"] and not clock["met"]:
            echo(f"warning: the design misses timing at {clock['clock_mhz']:g} MHz (Fmax {clock['fmax_mhz']:.1f} MHz) "
                 f"and may not work on the board; 'npu build --board {board.name} --clock-mhz "
                 f"{int(clock['fmax_mhz'])}' builds it at a clock it meets")
    return report


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else str(value)


def _toml(config):
    lines = [f'name = "{config.name}"', f'sparsity = "{config.sparsity}"']
    for section, values in config.to_dict().items():
        if isinstance(values, dict):
            lines.append(f"\n[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


#: nextpnr seeds a build tries (its seed and the next ones) when the router cannot reach a
#: global buffer (see build_board).
PNR_SEEDS = 3


def _sweep_seeds(cmd, out_dir, seed, seeds, clock_mhz, echo, run, report):
    """Place and route again with the seeds after ``seed`` (``seeds`` in all) until one
    meets ``clock_mhz``; leave the fastest routed result in ``top.tim`` and ``top.config``.
    Returns the seconds the runs after the first took; the seeds' Fmax (None: not routed)
    go to ``report["nextpnr"]["tried"]``."""
    out_dir = Path(out_dir)
    results = out_dir / "top.tim", out_dir / "top.config"

    def fmax():
        text = results[0].read_text(errors="replace")
        return _fmax(text)[0] if _routed(text) else None

    def keep(n):
        for path in results:
            shutil.copyfile(path, path.with_suffix(f".seed{n}{path.suffix}"))

    tried = {seed: fmax()}
    keep(seed)
    secs = 0.0
    for n in range(seed + 1, seed + seeds):
        best = max((f for f in tried.values() if f), default=None)
        if best is not None and best >= clock_mhz:
            break
        if echo:
            echo(f"  place-and-route: Fmax {best or 0:.1f} MHz < {clock_mhz:g} MHz; again with seed {n} "
                 f"({n - seed + 1} of {seeds}) ...")
        code, more = run([f"{n}" if prev == "--seed" else arg for prev, arg in zip(["", *cmd], cmd)])
        secs += more
        tried[n] = fmax() if code == 0 else None       # (a seed that fails is passed over)
        if code == 0:
            keep(n)
    best_seed = max((n for n in tried if tried[n]), key=lambda n: tried[n], default=seed)
    for path in results:
        shutil.copyfile(path.with_suffix(f".seed{best_seed}{path.suffix}"), path)
    for n in tried:
        if n != best_seed:
            path = results[1].with_suffix(f".seed{n}{results[1].suffix}")
            path.unlink(missing_ok=True)        # (each seed's log stays)
    report["nextpnr"]["seed"] = best_seed
    report["nextpnr"]["tried"] = {str(n): f for n, f in tried.items()}
    if echo and len(tried) > 1:
        echo(f"  place-and-route: seed {best_seed} kept (" +
             ", ".join(f"seed {n}: {f:.1f} MHz" if f else f"seed {n}: not routed" for n, f in tried.items()) + ")")
    return secs


def _routed(log_text):
    """nextpnr's log says routing finished."""
    return "Routing complete" in log_text or "Program finished normally" in log_text


def _global_buffer_unroutable(out_dir):
    """nextpnr's router failed on the arc into a DCCA's input (``G_CLKI_...``)."""
    log = Path(out_dir, "top.tim")
    return log.exists() and re.search(r"Failed to route arc .* to \S*G_CLKI_", log.read_text(errors="replace")[-20000:])


def _abc9_failed(out_dir):
    """Yosys stopped on an internal assertion inside its ABC9 mapping."""
    text = "".join(Path(out_dir, name).read_text(errors="replace")[-20000:]
                   for name in ("top.rpt", "synthesis.out") if Path(out_dir, name).exists())
    return "Assert" in text and "ABC9" in text


def _last_error(out_dir):
    for name in ("top.tim", "top.rpt", "bitstream.out", "synthesis.out", "place-and-route.out"):
        path = Path(out_dir) / name
        if path.exists():
            errors = [line.strip() for line in path.read_text(errors="replace").splitlines()
                      if line.startswith("ERROR") or "Error" in line[:20]]
            if errors:
                return errors[-1][:200]
    return "no error message in the logs"


def _fill_report(report, board, config, out_dir):
    rpt = out_dir / "top.rpt"
    tim = out_dir / "top.tim"
    cells = _cells(rpt.read_text(errors="replace")) if rpt.exists() else {}
    text = tim.read_text(errors="replace") if tim.exists() else ""
    raw = _utilisation(text)
    report["resources_raw"] = raw
    summary = {}
    for key, (used, available) in raw.items():
        if key in SUMMARY[board.family]:
            summary[SUMMARY[board.family][key]] = {"used": used, "available": available}
    ffs = sum(n for cell, n in cells.items() if re.fullmatch(FF_CELLS[board.family], cell))
    summary.setdefault("ffs", {"used": ffs, "available": raw.get("ICESTORM_LC", raw.get("TRELLIS_COMB",
                                                                                          (0, None)))[1]})
    report["resources"] = summary
    report["fits"] = bool(raw) and all(used <= available for used, available in raw.values())
    # Fmax counts only after routing; before, nextpnr's figure is the placer's estimate.
    report["routed"] = _routed(text)
    states = [state for state in map(router_state, text.splitlines()) if state]
    report["routing"] = states[-1] if states and not report["routed"] else None
    fmax, constraint = _fmax(text)
    report["placed_estimate_mhz"] = _fmax(re.split(r"Info: Routing|Info: Running router", text)[0])[0]
    if not report["routed"]:
        fmax = None
    macs = config.macs_per_cycle
    target = board.clk_hz / 1e6
    built = report.get("clock_hz", board.clk_hz) / 1e6
    report["clock"] = {"target_mhz": target, "clock_mhz": built, "constraint_mhz": constraint, "fmax_mhz": fmax,
                       "met": fmax is not None and fmax >= built,
                       "target_met": fmax is not None and fmax >= target}
    report["macs_per_cycle"] = macs
    report["peak_gmacs"] = round(macs * fmax / 1e3, 3) if fmax else None
    report["peak_gmacs_at_target"] = round(macs * min(fmax, board.clk_hz / 1e6) / 1e3, 3) if fmax else None


def _fullest(report):
    """The device resource most used, e.g. ``"ICESTORM_LC 5125/5280 (97%)"``."""
    raw = {k: (u, a) for k, (u, a) in report.get("resources_raw", {}).items() if a}
    if not raw:
        return "no utilisation reported"
    kind, (used, available) = max(raw.items(), key=lambda kv: kv[1][0] / kv[1][1])
    return f"{kind} {used}/{available} ({100 * used // available}%)"


def summary_line(report):
    res = report["resources"]
    logic = res.get("logic_cells") or res.get("luts") or {}
    clock = report["clock"]
    fmax = f"{clock['fmax_mhz']:.1f}" if clock["fmax_mhz"] else "?"
    return (f"{report['board']}: {'fits' if report['fits'] else 'DOES NOT FIT'}; "
            f"logic {logic.get('used')}/{logic.get('available')}, "
            f"DSP {res.get('dsp', {}).get('used')}/{res.get('dsp', {}).get('available')}, "
            f"Fmax {fmax} MHz (clock {clock.get('clock_mhz', clock['target_mhz']):g} MHz "
            f"{'met' if clock['met'] else 'NOT met'}; board target {clock['target_mhz']:g}), "
            f"{report['macs_per_cycle']} MACs/cycle, {report['peak_gmacs']} GMAC/s peak")


def read_report(out_dir):
    path = Path(out_dir) / "report.json"
    if not path.exists():
        raise BuildError(f"{path}: no build report; run 'npu build --board NAME' first")
    return json.loads(path.read_text())
