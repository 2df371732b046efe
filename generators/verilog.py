"""Configuration -> top-level design -> Verilog and the JSON manifest."""

import json
import time
from importlib import metadata
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Shape, _ast, _ir
from amaranth.lib import data, wiring

from ..hdl import isa, regs
from ..hdl.datapath import PERF_COUNTER_WIDTH, PERF_COUNTERS, Datapath
from ..hdl.layouts import (TileOp, act_write_layout, command_layout, output_layout, param_write_layout,
                           wgt_write_layout)
from ..hdl.npu import NPU
from .regmap import write_all

__all__ = ["build_top", "convert", "generate", "manifest", "layout_fields"]

#: Verilator lint categories switched off in the generated file, and why. Every other
#: category stays on; tests lint each generated configuration.
LINT_WAIVERS = {
    "WIDTH": "Yosys' Verilog writer relies on Verilog's context-determined operand sizing "
             "(implicit zero/sign extension), which is well defined but reported as WIDTH",
    "CASEINCOMPLETE": "state machines are written as casez over the state register after a "
                      "default assignment, so unlisted (unreachable) encodings keep the default",
}


#: Top-level designs ``generate`` can write: the whole NPU, the bare datapath (for
#: datapath-level tests and users who bring their own control), or the board system
#: (NPU, UART host link, RAM: :class:`npu.boards.soc.BoardSoC`).
TOPS = ("npu", "datapath", "soc")


def build_top(config, top="npu", soc=None):
    """The top-level component for ``config``: the NPU or, with ``top="datapath"``, the datapath;
    with ``top="soc"``, the board system built with the keyword arguments ``soc``
    (``ram_bytes``, ``clk_hz``, ``baud``, ...)."""
    if top == "npu":
        return NPU(config)
    if top == "datapath":
        return Datapath(config)
    if top == "soc":
        from ..boards.soc import BoardSoC
        return BoardSoC(config, **(soc or {}))
    raise ValueError(f"top = {top!r} is invalid: allowed: {', '.join(TOPS)}")


def _ports(component):
    ports = {}
    for path, member, value in component.signature.flatten(component):
        if isinstance(value, _ast.ValueCastable):
            value = value.as_value()
        direction = _ir.PortDirection.Input if member.flow == wiring.In else _ir.PortDirection.Output
        ports["__".join(map(str, path))] = (value, direction)
    return ports


def convert(component, *, name, platform=None):
    """Convert ``component`` to Verilog text with module ``name`` as the top level.

    Source locations are left out so the output does not depend on where the
    generator is installed. ``platform`` is handed to every ``elaborate`` (vendor
    primitives, e.g. the iCE40's paired SB_MAC16 multipliers).
    """
    return verilog.convert(component, name=name, emit_src=False, strip_internal_attrs=True, platform=platform)


def layout_fields(layout):
    """Flatten a payload layout into ``{field: {"offset", "width", "signed"}}``.

    Struct members are joined with ``.`` and array elements written ``[i]``, e.g.
    ``data[3].bias``; offsets are bit positions in the flat Verilog payload vector.
    """
    fields = {}

    def walk(shape, name, offset):
        if isinstance(shape, data.StructLayout):
            for member, field in shape:
                walk(field.shape, f"{name}.{member}" if name else member, offset + field.offset)
        elif isinstance(shape, data.ArrayLayout):
            stride = Shape.cast(shape.elem_shape).width
            for i in range(shape.length):
                walk(shape.elem_shape, f"{name}[{i}]", offset + i * stride)
        else:
            cast = Shape.cast(shape)
            fields[name] = {"offset": offset, "width": cast.width, "signed": cast.signed}
            if isinstance(shape, type) and issubclass(shape, TileOp):
                fields[name]["values"] = {member.name: member.value for member in shape}

    walk(layout, "", 0)
    return fields


def manifest(config, top=None):
    """Everything a user or tool needs to drive the generated Verilog, as JSON-ready dicts."""
    if top is None:
        top = build_top(config)
        top._MustUse__silence = True  # only its signature and latencies are read here
    ports = [{"name": "clk", "direction": "input", "width": 1},
             {"name": "rst", "direction": "input", "width": 1}]
    for name, (value, direction) in _ports(top).items():
        ports.append({"name": name, "direction": direction.name.lower(), "width": len(value)})
    try:
        version = metadata.version("npu-gen")
    except metadata.PackageNotFoundError:
        version = "unknown"
    info = {
        "generator": {"name": "npu-gen", "version": version, "amaranth": metadata.version("amaranth")},
        "top_module": config.name,
        "config": config.to_dict(),
        "derived": {
            "macs_per_cycle": config.macs_per_cycle,
            "psum_width": config.psum_width,
            "act_banks": config.act_banks,
            "act_lanes": config.act_lanes,
            "sparsity_n": config.sparse_nm[0],
            "sparsity_m": config.sparse_nm[1],
            "dense_parts": config.dense_parts,
            "idx_bits": config.idx_bits,
            "idx_depth": config.idx_depth,
            "wgt_banks": config.wgt_banks,
            "acc_banks": config.acc_banks,
        },
        "latencies": top.latencies,
        "ports": ports,
    }
    if isinstance(top, Datapath):
        info["payloads"] = {
            "cmd": layout_fields(command_layout(config)),
            "act_wr": layout_fields(act_write_layout(config)),
            "wgt_wr": layout_fields(wgt_write_layout(config)),
            "param_wr": layout_fields(param_write_layout(config)),
            "out": layout_fields(output_layout(config)),
        }
        info["perf_counters"] = {name: {"port": f"perf_{name}", "width": PERF_COUNTER_WIDTH, "meaning": meaning}
                                 for name, meaning in PERF_COUNTERS.items()}
    else:
        info["top"] = "npu"
        info["bus"] = {"csr": {"data_width": 32, "addr_width": regs.CSR_ADDR_WIDTH, "addressing": "word"},
                       "dma": {"data_width": config.bus_width, "addr_width": 32 - (config.bus_bytes.bit_length() - 1),
                               "addressing": "word", "mode": "Wishbone B4 pipelined"}}
        # Sequential dispatch has no queues: one instruction at a time.
        info["queues"] = ({"compute": config.compute_queue, "dma": config.dma_queue}
                          if config.dispatch == "overlapped" else {})
        info["rows"] = {kind: {"bytes": isa.row_bytes(config, kind), "words": isa.row_words(config, kind)}
                        for kind in isa.row_kinds(config)}
        info["registers"] = {reg.name: reg.offset for reg in regs.REGISTERS}
        info["perf_counters"] = {name: {"register": f"PERF_{name.upper()}_LO", "width": config.perf_counter_bits,
                                        "meaning": meaning} for name, meaning in regs.PERF_COUNTERS.items()
                                 if config.builds_counter(name)}
    if hasattr(top, "info_words"):        # the board system around the NPU
        from ..boards.soc import STATUS_LEDS
        from ..hdl.bridge import INFO_FIELDS
        info["top"] = "soc"
        info["soc"] = {"info_block": dict(zip(INFO_FIELDS, top.info_words)), "uart_divisor": top.divisor,
                       "status_leds": list(STATUS_LEDS)}
    info.update({
        "lint_waivers": LINT_WAIVERS,
    })
    return info


def generate(config, out_dir, top="npu", soc=None, platform=None):
    """Write ``npu.v`` and ``npu.json`` for ``config`` into ``out_dir``, plus the register
    map (``npu_regs.h``, ``registers.md``, ``npu_regs.py``); return the first two paths.

    ``top="datapath"`` writes the bare datapath instead of the NPU (no register map);
    ``top="soc"`` the board system, built with the keyword arguments ``soc``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    top_name = top
    top = build_top(config, top, soc)
    started = time.monotonic()
    verilog_text = convert(top, name=config.name, platform=platform)
    header = [f"// {config.name}: generated by npu-gen; do not edit. Configuration in npu.json.",
              *(f"// lint_off {cat}: {why}" for cat, why in LINT_WAIVERS.items()),
              *(f"/* verilator lint_off {cat} */" for cat in LINT_WAIVERS)]
    verilog_path = out_dir / "npu.v"
    verilog_path.write_text("\n".join(header) + "\n" + verilog_text)
    info = manifest(config, top)
    info["generation_seconds"] = round(time.monotonic() - started, 3)
    json_path = out_dir / "npu.json"
    json_path.write_text(json.dumps(info, indent=2) + "\n")
    if top_name in ("npu", "soc"):
        write_all(config, out_dir)
    return verilog_path, json_path
