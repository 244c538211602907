"""PNG plots of a netlist: crossbar occupancy per tile slot, and crossbars/period per layer (matplotlib).

Each plot is built by a function returning the :class:`matplotlib.figure.Figure` (no pyplot state, so
tests inspect it and nothing needs closing); :func:`png_bytes` renders one, :func:`netlist_figures` gives
both under their file names (``xbc report --plot`` and ``--html``).
"""

from __future__ import annotations

import io
import re
from math import ceil

import numpy as np

from ..diagnostics import CompileError
from .table import plural

#: Inches of figure width per layer of ``layers.png``, and the widest figure (then labels are thinned).
INCHES_PER_LAYER = 0.28
MAX_WIDTH_IN = 40.0
#: Longest layer label before the middle is elided.
LABEL_CHARS = 22
#: Bar colours: one per quantity, none shared between the two panels of ``layers.png``.
ONE_COPY, REPLICAS, PERIOD = "tab:blue", "lightskyblue", "tab:orange"


def occupancy(crossbar, layer) -> float:
    """Fraction of a crossbar's logical cells that hold a weight."""
    kw = layer.geometry.kernel[1]
    held = sum((b.channels[1] - b.channels[0]) * (b.kernel_rows[1] - b.kernel_rows[0]) * kw
               * layer.w_o * (b.out_channels[1] - b.out_channels[0]) for b in crossbar.blocks)
    held += sum((s.rows[1] - s.rows[0]) * (s.cols[1] - s.cols[0]) for s in crossbar.slices)
    return held / (crossbar.rows * crossbar.cols)


def occupancy_grid(doc) -> np.ndarray:
    """``[tiles, crossbars per tile]`` occupancy of every slot (NaN where empty); replicas included."""
    layers = {layer.name: layer for layer in doc.layers}
    per_tile = doc.target["hierarchy"]["crossbars_per_tile"]
    sites = []
    for x in doc.crossbars:
        o = occupancy(x, layers[x.layer])
        sites += [(t, s, o) for t, s, _ in [(x.tile, x.slot, x.chip), *x.replica_sites]]
    grid = np.full((max((t for t, _, _ in sites), default=0) + 1, per_tile), np.nan)
    for t, s, o in sites:
        grid[t, s] = o
    return grid


def _matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise CompileError("XB005", "plots need matplotlib", hint="pip install 'xbcompiler[plot]'") from None
    return matplotlib


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend; XB005 when matplotlib is not installed."""
    _matplotlib().use("Agg")
    import matplotlib.pyplot as plt

    return plt


def new_figure(**kwargs):
    """A :class:`matplotlib.figure.Figure` with constrained layout, outside pyplot; XB005 without matplotlib."""
    _matplotlib()
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kwargs)


def png_bytes(fig, dpi: int = 100) -> bytes:
    """The figure as a PNG file's bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def occupancy_figure(netlist):
    """Heatmap of the fraction of cells holding a weight, tile x crossbar slot (grey: empty slot)."""
    matplotlib = _matplotlib()
    from matplotlib.ticker import MaxNLocator

    doc = netlist.doc
    grid = occupancy_grid(doc)
    fig = new_figure(figsize=(8, max(2.5, min(12.0, 0.15 * grid.shape[0] + 1.5))))
    ax = fig.subplots()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    image = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap=cmap, vmin=0, vmax=1)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("crossbar slot (grey: empty)")
    ax.set_ylabel("tile")
    ax.set_title(f"crossbar occupancy ({plural(doc.summary.crossbars_with_replicas, 'crossbar')}, "
                 f"{plural(doc.summary.tiles, 'tile')})")
    fig.colorbar(image, ax=ax, label="cells holding a weight")
    return fig


def short_labels(names: list[str], width: int = LABEL_CHARS) -> list[str]:
    """``names`` at most ``width`` characters each, still distinct: the leading words all long names share
    become ``…`` (``encoder_layers_11_attn`` -> ``…11_attn``), then the middle is elided if still too long."""
    long = [re.split(r"(?<=[._])", n) for n in names if len(n) > width]
    shared = 0
    while len(long) > 1 and all(len(words) > shared + 1 for words in long) and len({w[shared] for w in long}) == 1:
        shared += 1
    prefix = "".join(long[0][:shared]) if shared else ""
    trimmed = [f"…{n[len(prefix):]}" if prefix and len(n) > width and n.startswith(prefix) else n for n in names]

    def cut(name: str, keep: int) -> str:
        if len(name) <= keep:
            return name
        head = (keep - 1) // 2
        return f"{name[:head]}…{name[len(name) - (keep - 1 - head):]}"

    for keep in range(width, max(map(len, trimmed), default=0) + 1):
        labels = [cut(n, keep) for n in trimmed]
        if len(set(labels)) == len(set(names)):
            return labels
    return trimmed


def _log_axis(ax, top: float, label: str) -> None:
    """Log y axis from 0.5 (a one-crossbar bar shows) to twice the tallest bar, plain-number tick labels."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_yscale("log")
    ax.set_ylim(0.5, 2.0 * max(top, 1))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel(label)
    ax.grid(axis="y", alpha=0.3)


def layers_figure(netlist):
    """Two panels over the layers: crossbars (one copy, replicas stacked on top when there are any) and the
    period in phases per image; the figure widens with the layer count, labels stay 8 pt."""
    doc = netlist.doc
    layers = list(doc.layers)
    n = len(layers)
    width = min(MAX_WIDTH_IN, max(6.0, INCHES_PER_LAYER * n + 2.0))
    fig = new_figure(figsize=(width, 6.5))
    top, bottom = fig.subplots(2, 1, sharex=True)
    x = np.arange(n)
    one = np.array([layer.crossbars for layer in layers])
    total = np.array([layer.crossbars_with_replicas for layer in layers])
    top.bar(x, one, color=ONE_COPY, label="one copy")
    if (total > one).any():
        top.bar(x, total - one, bottom=one, color=REPLICAS, label="replicas")
        top.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, frameon=False, fontsize=8)
    _log_axis(top, float(total.max(initial=1)), "crossbars")
    periods = np.array([layer.schedule.period for layer in layers])
    bottom.bar(x, periods, color=PERIOD)
    _log_axis(bottom, float(periods.max(initial=1)), "period (phases per image)")
    step = max(1, ceil(n / (width / 0.15)))  # at most one label per 0.15 inch
    labels = short_labels([layer.name for layer in layers])
    bottom.set_xticks(x[::step], labels[::step], rotation=90, fontsize=8)
    bottom.set_xlim(-0.6, max(n, 1) - 0.4)
    bottom.set_xlabel("layer" if step == 1 else f"layer (one label per {step} layers)")
    strategies = ", ".join(dict.fromkeys(layer.strategy for layer in layers)) or "no layers"
    fig.suptitle(f"{doc.target.get('name', '?')}: {plural(n, 'layer')}, {strategies}")
    return fig


def netlist_figures(netlist) -> dict[str, object]:
    """``{"occupancy.png": heatmap, "layers.png": per-layer bars}`` of a netlist."""
    return {"occupancy.png": occupancy_figure(netlist), "layers.png": layers_figure(netlist)}
