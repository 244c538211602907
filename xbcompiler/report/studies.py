"""Accuracy studies over chips: confidence intervals and the accuracy-against-non-ideality plot.

A study programs a compiled model onto several chips per setting (fault rate, ``program_sigma``, ...)
and measures the accuracy of each; :func:`interval` summarises the chips of one setting, and
:func:`plot_accuracy` draws one line per encoding or compensation with its 95% intervals
(docs/faults.md).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .plots import pyplot

#: Two-sided 95% Student t quantiles by degrees of freedom (the largest tabulated one at most ``dof`` is used).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


@dataclass(frozen=True)
class Interval:
    """The mean of ``n`` measurements and the half-width of its 95% confidence interval (Student t)."""

    mean: float
    half: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.half:.2f}"


def interval(values: Sequence[float]) -> Interval:
    """Mean and 95% interval of ``values`` (half-width 0 for a single value)."""
    if not values:
        raise ValueError("an interval needs at least one value")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Interval(mean, 0.0, 1)
    dof = len(values) - 1
    t = T95[max(k for k in T95 if k <= dof)]
    return Interval(mean, t * statistics.stdev(values) / math.sqrt(len(values)), len(values))


def plot_accuracy(path: str | Path, series: Mapping[str, Sequence[tuple[float, Interval]]], xlabel: str,
                  title: str = "", reference: float | None = None, log_x: bool = False, *,
                  ylabel: str = "test accuracy (%)", bands: bool = False) -> Path:
    """Accuracy (%) against a non-ideality, one line with 95% error bars per entry of ``series``.

    ``series`` maps a label (an encoding, a compensation) to its ``(x, Interval)`` points; ``reference``
    draws a dashed line (e.g. the fault-free accuracy); ``log_x`` puts x on a symmetric log scale (rates
    spanning decades, 0 included). ``ylabel`` names another metric; ``bands`` shades the intervals instead
    of drawing error bars. Writes ``path`` (PNG) and returns it.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, points in series.items():
        points = sorted(points, key=lambda p: p[0])
        xs, means, halves = [x for x, _ in points], [i.mean for _, i in points], [i.half for _, i in points]
        if bands:
            (line,) = ax.plot(xs, means, marker="o", markersize=4, label=label)
            ax.fill_between(xs, [m - h for m, h in zip(means, halves)], [m + h for m, h in zip(means, halves)],
                            color=line.get_color(), alpha=0.2, linewidth=0)
        else:
            ax.errorbar(xs, means, yerr=halves, marker="o", markersize=4, capsize=3, label=label)
    if reference is not None:
        ax.axhline(reference, color="0.5", linestyle="--", linewidth=1, label=f"fault-free {reference:.2f} %")
    if log_x:
        smallest = min((x for pts in series.values() for x, _ in pts if x > 0), default=1.0)
        ax.set_xscale("symlog", linthresh=smallest)
        if all(x >= 0 for pts in series.values() for x, _ in pts):
            ax.set_xlim(left=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
