"""Reports of pruning runs: the per-layer crossbar table and the accuracy-vs-crossbars Pareto plot."""

from __future__ import annotations

from pathlib import Path

from ..report.plots import new_figure, png_bytes


def crossbar_table(columns: dict[str, dict[str, int]], dense: dict[str, int], accuracy: dict[str, float] | None = None,
                   ) -> str:
    """Markdown table: crossbars per layer, dense and for each run in ``columns`` (run -> layer -> crossbars),
    with the total, the saving and (optionally) each run's accuracy."""
    runs = list(columns)
    lines = ["| layer | dense | " + " | ".join(runs) + " |", "| --- " * (len(runs) + 2) + "|"]
    for layer, n in dense.items():
        lines.append(f"| {layer} | {n} | " + " | ".join(str(columns[r].get(layer, n)) for r in runs) + " |")
    total = sum(dense.values())
    sums = [sum(columns[r].get(layer, n) for layer, n in dense.items()) for r in runs]
    lines.append(f"| **total** | {total} | " + " | ".join(str(s) for s in sums) + " |")
    lines.append("| saving | | " + " | ".join(f"{100 * (1 - s / total):.1f} %" for s in sums) + " |")
    if accuracy is not None:
        lines.append("| accuracy | | " + " | ".join(f"{accuracy[r]:.2f} %" for r in runs) + " |")
    return "\n".join(lines)


def run_series(outcome) -> dict[str, list[tuple[float, float]]]:
    """The points of a pruning run (a :class:`~.flow.PruneOutcome`) for :func:`pareto_figure`, in compute crossbars
    of the whole network and validation accuracy: dense, what the search evaluated and the result of the joint run.

    Greedy search: every step (accepted and undone; the layers it has not reached yet dense). Knapsack search:
    every sensitivity point (one layer pruned alone at one ratio, the others dense; its expected accuracy;
    split by whether the standing allocation chose that ratio) and every joint-run try not kept (backed off
    from, or a grow undone)."""
    series = {"dense": [(outcome.crossbars_dense, outcome.baseline_accuracy)]}
    knapsack = getattr(outcome, "knapsack", None)
    if outcome.search is not None:
        labels = (("sensitivity (one layer, expected acc.): allocated",
                   "sensitivity (one layer, expected acc.): not allocated")
                  if knapsack is not None else ("search: accepted step", "search: undone step"))
        for accepted, label in zip((True, False), labels):
            series[label] = [(outcome.crossbars_dense - p.freed, p.accuracy) for p in outcome.search.visited
                             if p.accepted == accepted]
    if knapsack is not None:
        series["joint run: try not kept"] = [(outcome.crossbars_dense - a.allocation.freed, a.accuracy)
                                             for a in knapsack.not_kept]
    series["after the joint run"] = [(outcome.crossbars, outcome.accuracy)]
    return series


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both fewer crossbars and higher accuracy, by crossbars."""
    front, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def pareto_figure(series: dict[str, list[tuple[float, float]]], *, title: str = "",
                  dense: tuple[float, float] | None = None, xlabel: str = "compute crossbars", front: str = "series"):
    """Accuracy (percent) against a cost, every point of every series drawn (one marker set each).

    ``front="series"`` draws each series' Pareto front in its colour; ``"all"`` one front over every point,
    highlighted (black steps, ringed points). The scatter collections hold exactly the given points.
    """
    if front not in ("series", "all"):
        raise ValueError(f"front must be 'series' or 'all', got {front!r}")
    fig = new_figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    everything = []
    for i, ((label, points), marker) in enumerate(zip(series.items(), "osd^vx+*")):
        if not points:
            continue
        everything += points
        xs, ys = zip(*points)
        dots = ax.scatter(xs, ys, marker=marker, label=f"{label} ({len(points)})", alpha=0.8, edgecolors="white",
                          linewidths=0.5, zorder=4 + i)  # later series on top, above the front's line
        if front == "series":
            fx, fy = zip(*pareto_front(points))
            ax.step(fx, fy, where="post", color=dots.get_facecolor()[0], alpha=0.5)
    if front == "all" and everything:
        fx, fy = zip(*pareto_front(everything))
        ax.step(fx, fy, where="post", color="black", linewidth=1.5, zorder=3)
        ax.plot(fx, fy, linestyle="none", marker="o", markersize=11, markerfacecolor="none",
                markeredgecolor="black", label=f"Pareto front ({len(fx)})", zorder=3)
    if dense is not None:
        ax.axhline(dense[1], color="grey", linestyle=":", label="dense accuracy")
    if everything and all(float(x).is_integer() for x, _ in everything):
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # crossbar counts
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def write_pareto(path: str | Path, series: dict[str, list[tuple[float, float]]], *, title: str = "",
                 dense: tuple[float, float] | None = None, xlabel: str = "compute crossbars",
                 front: str = "series") -> Path:
    """PNG of :func:`pareto_figure` at ``path`` (its directory created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(pareto_figure(series, title=title, dense=dense, xlabel=xlabel, front=front), dpi=120))
    return path
