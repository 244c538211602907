"""Reports of pruning runs: the per-layer crossbar table and the accuracy-vs-crossbars Pareto plot."""

from __future__ import annotations

from pathlib import Path

from ..report.plots import pyplot


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


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both fewer crossbars and higher accuracy, by crossbars."""
    front, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def write_pareto(path: str | Path, series: dict[str, list[tuple[float, float]]], *, title: str = "",
                 dense: tuple[float, float] | None = None, xlabel: str = "compute crossbars") -> Path:
    """PNG of accuracy (percent) against a cost (compute crossbars by default), one marker set per series, each
    with its front."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    for (label, points), marker in zip(series.items(), "osd^vx+*"):
        if not points:
            continue
        xs, ys = zip(*points)
        line = ax.scatter(xs, ys, marker=marker, label=label, alpha=0.7)
        fx, fy = zip(*pareto_front(points))
        ax.step(fx, fy, where="post", color=line.get_facecolor()[0], alpha=0.5)
    if dense is not None:
        ax.axhline(dense[1], color="grey", linestyle=":", label="dense accuracy")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
