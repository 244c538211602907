"""The cost report as text cells: what ``xbc report`` prints and its HTML page shows, formatted once."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .compare import StrategyComparison
    from .costs import CostReport

#: Columns of the per-layer table; the first two are text, the others numbers (right-aligned).
LAYER_COLUMNS = ("layer", "strategy", "w_o", "Kin/Kout", "crossbars", "x replicas", "util", "phases", "period",
                 "ADC conv", "psum adds", "tile bits", "energy", "latency")
TEXT_COLUMNS = ("layer", "strategy")
#: Columns of the strategies table.
STRATEGY_COLUMNS = ("strategy", "crossbars", "logical crossbars", "phases", "period")

_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "u"), (1e-9, "n"),
             (1e-12, "p"))


def plural(n: int, word: str) -> str:
    """``1 tile``, ``2 tiles``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def si(value: float, unit: str) -> str:
    """``value`` with an SI prefix, 3 significant digits."""
    factor, prefix = next(((f, p) for f, p in _PREFIXES if abs(value) >= f), (1.0, ""))
    return f"{value / factor:.3g} {prefix}{unit}".rstrip()


def layer_rows(report: CostReport) -> list[tuple[str, ...]]:
    """One row of :data:`LAYER_COLUMNS` per layer."""
    return [(lc.name, lc.strategy, str(lc.w_o), f"{lc.kin}/{lc.kout}", str(lc.crossbars),
             str(lc.crossbars_with_replicas), f"{lc.utilisation:.2f}", str(lc.phases), str(lc.period),
             si(lc.adc_conversions, ""), si(lc.partial_sum_additions, ""), si(lc.tile_bits, "b"),
             si(lc.energy_pj * 1e-12, "J"), si(lc.latency_ns * 1e-9, "s")) for lc in report.layers]


def total_row(report: CostReport) -> tuple[str, ...]:
    """The ``total`` row of :data:`LAYER_COLUMNS`."""
    t = report.totals
    return ("total", "", "", "", str(t["crossbars"]), str(t["crossbars_with_replicas"]), "", str(t["phases"]),
            str(t["pipeline_period"]), si(t["adc_conversions"], ""), si(t["partial_sum_additions"], ""),
            si(t["tile_bits"], "b"), si(t["energy_pj"] * 1e-12, "J"), si(t["latency_ns"] * 1e-9, "s"))


def totals_pairs(report: CostReport) -> list[tuple[str, str]]:
    """``(what, value)`` of the network totals, for a two-column table."""
    t = report.totals
    pairs = [("compute crossbars", str(t["crossbars"])), ("with replicas", str(t["crossbars_with_replicas"])),
             ("accumulation crossbars", str(t["accumulation_crossbars"])), ("tiles", str(t["tiles"])),
             ("chips", str(t["chips"])), ("area", f"{t['area_um2'] * 1e-6:.3g} mm^2"),
             ("phases", str(t["phases"])),
             ("pipeline period", f"{plural(t['pipeline_period'], 'phase')}, {si(t['period_ns'] * 1e-9, 's')}"),
             ("latency bound", si(t["latency_ns"] * 1e-9, "s")), ("energy per image", si(t["energy_pj"] * 1e-12, "J")),
             ("ADC conversions", si(t["adc_conversions"], "")),
             ("partial-sum additions", si(t["partial_sum_additions"], "")),
             ("bits between tiles", si(t["tile_bits"], "b"))]
    if "fragment_cycles" in t:
        pairs.append(("zero-skipped fragment-cycles", f"{t['zero_skipped_cycles']} of {t['fragment_cycles']}"))
    return pairs


def summary_line(report: CostReport) -> str:
    t = report.totals
    return (f"accumulation crossbars {t['accumulation_crossbars']}, tiles {t['tiles']}, chips {t['chips']}, "
            f"area {t['area_um2'] * 1e-6:.3g} mm^2, pipeline period {si(t['period_ns'] * 1e-9, 's')}")


def polarized_lines(report: CostReport) -> list[str]:
    """One line per polarized (FORMS) layer: fragment rows, lossless ADC bits, zero-skipping when counted."""
    lines = []
    for lc in report.layers:
        if lc.fragment_rows:
            skip = "" if lc.fragment_cycles is None else \
                (f", zero-skip {lc.zero_skipped_cycles} of {lc.fragment_cycles} fragment-cycles "
                 f"({100 * lc.zero_skipped_cycles / max(lc.fragment_cycles, 1):.1f} %)")
            lines.append(f"{lc.name}: polarized, {lc.fragment_rows}-row fragments, lossless ADC "
                         f"{lc.adc_lossless_bits} bits{skip}")
    return lines


def device_line(report: CostReport) -> str:
    """``device: ideal``, or the non-zero rates of the target's ``[device]`` section."""
    if not any(v for v in report.device.values()):
        return "device: ideal"
    return ("device: " + ", ".join(f"{k} {v}" for k, v in report.device.items() if v)
            + " (xb.program samples these; docs/faults.md)")


def strategy_rows(comparison: StrategyComparison) -> list[tuple[str, ...]]:
    """One row of :data:`STRATEGY_COLUMNS` per mapping strategy."""
    totals = comparison.to_dict()["totals"]
    return [(s, str(v["crossbars"]), str(v["logical_crossbars"]), str(v["phases"]), str(v["period"]))
            for s, v in totals.items()]


def saving_line(comparison: StrategyComparison) -> str:
    return (f"semi-folded saves {comparison.crossbar_saving:.1f}x crossbars vs fully-unfolded and "
            f"{comparison.phase_saving:.1f}x phases ({comparison.period_saving:.1f}x period) vs fully-folded")
