"""PNG plots of a netlist: crossbar occupancy per tile slot, and crossbars/phases per layer (matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..diagnostics import CompileError


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


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend; XB005 when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        raise CompileError("XB005", "plots need matplotlib", hint="pip install 'xbcompiler[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(netlist, directory: str | Path) -> list[Path]:
    """``occupancy.png`` (heatmap: tile x slot) and ``layers.png`` (crossbars and phases per layer)."""
    plt = pyplot()

    out = Path(directory)
    doc = netlist.doc
    grid = occupancy_grid(doc)
    fig, ax = plt.subplots(figsize=(8, max(2.5, min(12.0, 0.15 * grid.shape[0] + 1.5))))
    image = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1)
    ax.set_xlabel("crossbar slot")
    ax.set_ylabel("tile")
    ax.set_title(f"crossbar occupancy ({doc.summary.crossbars_with_replicas} crossbars, "
                 f"{doc.summary.tiles} tiles)")
    fig.colorbar(image, ax=ax, label="cells holding a weight")
    fig.tight_layout()
    heatmap = out / "occupancy.png"
    fig.savefig(heatmap, dpi=100)
    plt.close(fig)

    layers = doc.layers
    names = [layer.name for layer in layers]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(max(6.0, 0.3 * len(names) + 2), 6))
    x = np.arange(len(names))
    top.bar(x, [layer.crossbars for layer in layers], label="one copy")
    top.bar(x, [layer.crossbars_with_replicas - layer.crossbars for layer in layers],
            bottom=[layer.crossbars for layer in layers], label="replicas")
    top.set_ylabel("crossbars")
    top.set_yscale("log")
    top.legend()
    bottom.bar(x, [layer.schedule.period for layer in layers], color="tab:orange")
    bottom.set_ylabel("phases between images")
    bottom.set_yscale("log")
    bottom.set_xticks(x, names, rotation=90, fontsize=6)
    fig.suptitle(f"per layer ({doc.layers[0].strategy if layers else 'empty'})")
    fig.tight_layout()
    bars = out / "layers.png"
    fig.savefig(bars, dpi=100)
    plt.close(fig)
    return [heatmap, bars]
