"""Run reports: ``report.json`` and a PNG of per-layer cycles and utilisation."""

import json
from pathlib import Path

__all__ = ["write_report", "layer_table"]


def write_report(result, out_dir):
    """Write ``report.json`` and ``report.png`` for a :class:`~npu.firmware.runtime.RunResult`;
    return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = result.report()
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(report, indent=2, default=_plain) + "\n")
    png_path = out_dir / "report.png"
    _plot(report, png_path)
    return json_path, png_path


def _plain(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _plot(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    npu = [entry for entry in report["layers"] if entry["where"] == "npu"]
    names = [entry["name"] for entry in npu]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names) + 3), 4.2))
    x = range(len(names))
    if report["total_cycles"] is not None:
        ax.bar(x, [entry["cycles"] for entry in npu], color="#4c72b0", label="cycles")
        ax.set_ylabel("cycles")
        util = ax.twinx()
        util.plot(x, [100 * (entry["utilisation"] or 0) for entry in npu], "o-", color="#dd8452",
                  label="MAC utilisation")
        util.set_ylabel("MAC utilisation (%)")
        util.set_ylim(0, 105)
        title = (f"{report['model']} on {report['config']['array']['rows']}x{report['config']['array']['cols']} "
                 f"({report['backend']}): {report['total_cycles']} cycles, "
                 f"{100 * report['utilisation']:.1f}% utilisation, batch {report['batch']}")
    else:
        ax.bar(x, [entry["macs"] for entry in npu], color="#4c72b0", label="MACs")
        ax.set_ylabel("MACs")
        title = f"{report['model']} ({report['backend']} backend: no timing; MACs per layer)"
    ax.set_xticks(list(x))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def layer_table(result):
    """Lines of a per-node table for the terminal."""
    peak = result.config.macs_per_cycle
    lines = [f"  {'node':<28} {'op':<18} {'where':<5} {'cycles':>9} {'MACs':>10} {'util':>6}"]
    for s in result.layers:
        if s.where == "npu":
            cyc = "-" if s.cycles is None else str(s.cycles)
            util = "-" if not s.cycles else f"{100 * s.macs / (s.cycles * peak):.1f}%"
            lines.append(f"  {s.name[:28]:<28} {s.op[:18]:<18} {'npu':<5} {cyc:>9} {s.macs:>10} {util:>6}")
        else:
            lines.append(f"  {s.name[:28]:<28} {s.op[:18]:<18} {'host':<5} {'':>9} {'':>10} {'':>6}")
    return lines
