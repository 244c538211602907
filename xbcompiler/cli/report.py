"""``xbc report DIR``: the cost report of a saved netlist as a table; ``--plot`` writes PNG plots."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import load_netlist
from ..diagnostics import CompileError, Location
from ..report.compare import compare_netlist
from ..report.costs import cost_report
from .args import command_parser


def add(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = command_parser(sub, common, "report", run,
                       "print the cost report of a compiled netlist; --plot writes PNG plots")
    p.add_argument("netlist", metavar="DIR", help="directory written by xbc compile -o")
    p.add_argument("--plot", action="store_true", help="write occupancy.png and layers.png into DIR")
    p.add_argument("--plot-dir", metavar="OUT", help="write the plots here instead of DIR")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--inputs", metavar="FILE.npy",
                   help="a batch of inputs: count the FORMS zero-skipped fragment-cycles of polarized layers on it")
    return p


_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "u"), (1e-9, "n"),
             (1e-12, "p"))


def _si(value: float, unit: str) -> str:
    """``value`` with an SI prefix, 3 significant digits."""
    factor, prefix = next(((f, p) for f, p in _PREFIXES if abs(value) >= f), (1.0, ""))
    return f"{value / factor:.3g} {prefix}{unit}".rstrip()


def run(args: argparse.Namespace) -> int:
    import sys

    from rich import box
    from rich.console import Console
    from rich.table import Table

    plot_dir = Path(args.plot_dir or args.netlist)
    if (args.plot or args.plot_dir) and plot_dir.exists() and not plot_dir.is_dir():
        raise CompileError("XB004", f"--plot-dir {plot_dir} exists and is not a directory",
                           location=Location(file=str(plot_dir)))
    netlist = load_netlist(args.netlist)
    inputs = None
    if args.inputs is not None:
        from .models import load_npy

        inputs = load_npy(Path(args.inputs), netlist.doc.inputs[0])
    report = cost_report(netlist, inputs)
    comparison = compare_netlist(netlist)
    plots = []
    if args.plot or args.plot_dir:
        from ..report.plots import write_plots

        plot_dir.mkdir(parents=True, exist_ok=True)
        plots = write_plots(netlist, plot_dir)
    if args.json:
        print(json.dumps({**report.to_dict(), "strategies": comparison.to_dict(), "plots": [str(p) for p in plots]},
                         indent=1, sort_keys=True))
        return 0
    tty = sys.stdout.isatty()
    console = Console(width=None if tty else 200, highlight=False, soft_wrap=False, no_color=not tty, emoji=False)
    table = Table(title=f"cost report ({report.target}, per image)", box=box.SIMPLE_HEAD, title_justify="left",
                  pad_edge=False)
    columns = ["layer", "strategy", "w_o", "Kin/Kout", "crossbars", "x replicas", "util", "phases", "period", "ADC conv",
               "psum adds", "tile bits", "energy", "latency"]
    for c in columns:
        table.add_column(c, justify="left" if c in ("layer", "strategy") else "right")
    for lc in report.layers:
        table.add_row(lc.name, lc.strategy, str(lc.w_o), f"{lc.kin}/{lc.kout}", str(lc.crossbars), str(lc.crossbars_with_replicas),
                      f"{lc.utilisation:.2f}", str(lc.phases), str(lc.period), _si(lc.adc_conversions, ""),
                      _si(lc.partial_sum_additions, ""), _si(lc.tile_bits, "b"), _si(lc.energy_pj * 1e-12, "J"),
                      _si(lc.latency_ns * 1e-9, "s"))
    t = report.totals
    table.add_row("total", "", "", "", str(t["crossbars"]), str(t["crossbars_with_replicas"]), "", str(t["phases"]),
                  str(t["pipeline_period"]), _si(t["adc_conversions"], ""), _si(t["partial_sum_additions"], ""),
                  _si(t["tile_bits"], "b"), _si(t["energy_pj"] * 1e-12, "J"), _si(t["latency_ns"] * 1e-9, "s"),
                  style="bold")
    console.print(table)
    console.print(f"accumulation crossbars {t['accumulation_crossbars']}, tiles {t['tiles']}, chips {t['chips']}, "
                  f"area {t['area_um2'] * 1e-6:.3g} mm^2, pipeline period {_si(t['period_ns'] * 1e-9, 's')}")
    for lc in report.layers:
        if lc.fragment_rows:
            skip = "" if lc.fragment_cycles is None else \
                (f", zero-skip {lc.zero_skipped_cycles} of {lc.fragment_cycles} fragment-cycles "
                 f"({100 * lc.zero_skipped_cycles / max(lc.fragment_cycles, 1):.1f} %)")
            console.print(f"{lc.name}: polarized, {lc.fragment_rows}-row fragments, lossless ADC "
                          f"{lc.adc_lossless_bits} bits{skip}")
    device = report.device
    ideal = not any(v for v in device.values())
    console.print("device: ideal" if ideal else "device: " + ", ".join(f"{k} {v}" for k, v in device.items() if v)
                  + " (xb.program samples these; docs/faults.md)")
    d = comparison.to_dict()
    console.print("strategies (cost model): " + ", ".join(
        f"{s} {v['crossbars']} crossbars / {v['phases']} phases" for s, v in d["totals"].items()))
    console.print(f"semi-folded saves {comparison.crossbar_saving:.1f}x crossbars vs fully-unfolded and "
                  f"{comparison.phase_saving:.1f}x phases ({comparison.period_saving:.1f}x period) vs fully-folded")
    for p in plots:
        console.print(f"wrote {p}")
    return 0
