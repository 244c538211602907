"""The report's plots are legible: integer tile ticks, bars inside the axes, 8 pt labels, honest legends."""

from __future__ import annotations

import warnings
from collections import OrderedDict

import pytest
import torch
from matplotlib.collections import PathCollection
from matplotlib.patches import Rectangle
from torch import nn

import xbcompiler as xb
from xbcompiler.prune.report import pareto_figure, pareto_front
from xbcompiler.report.plots import layers_figure, netlist_figures, occupancy_figure, png_bytes, short_labels

REPLICATE = "fold-batchnorm,lower-im2col,lower-to-xbar,map-semi-folded,replicate-layers{budget=30},place-tiles"


def _compile(model, x, target="isaac-like", pipeline="semi-folded", overrides=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        return xb.compile(model.eval(), (x,), target, pipeline, overrides=overrides).netlist


@pytest.fixture(scope="module")
def one_tile():
    torch.manual_seed(0)
    return _compile(nn.Sequential(nn.Linear(8, 4)), torch.randn(1, 8))


@pytest.fixture(scope="module")
def replicated():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                          nn.Flatten(), nn.Linear(8 * 6 * 6, 5))
    return _compile(model, torch.randn(1, 3, 12, 12), pipeline=REPLICATE)


@pytest.fixture(scope="module")
def many_layers():
    """48 layers with long names, on 16x16 crossbars with 4 per tile: hundreds of tiles."""
    torch.manual_seed(0)
    blocks = OrderedDict()
    for i in range(48):
        blocks[f"encoder_block_{i}_feed_forward_projection"] = nn.Linear(32, 32)
    return _compile(nn.Sequential(blocks), torch.randn(1, 32), overrides={
        "crossbar.rows": 16, "crossbar.cols": 16, "hierarchy.crossbars_per_tile": 4})


def _visible(ticks, limits) -> list[float]:
    lo, hi = sorted(limits)
    return [t for t in ticks if lo <= t <= hi]


@pytest.mark.parametrize("which", ["one_tile", "replicated", "many_layers"])
def test_occupancy_ticks_are_integers(which, request):
    netlist = request.getfixturevalue(which)
    ax = occupancy_figure(netlist).axes[0]
    for ticks, limits in ((ax.get_xticks(), ax.get_xlim()), (ax.get_yticks(), ax.get_ylim())):
        shown = _visible(ticks, limits)
        assert shown and all(float(t).is_integer() for t in shown), shown
    assert len(_visible(ax.get_yticks(), ax.get_ylim())) <= 12  # hundreds of tiles: a readable few ticks


def test_many_layers_fill_hundreds_of_tiles(many_layers):
    assert many_layers.doc.summary.tiles >= 100
    assert "crossbar occupancy" in occupancy_figure(many_layers).axes[0].get_title()


def _panels(fig):
    top, bottom = fig.axes[:2]
    return top, bottom


def _bars(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


@pytest.mark.parametrize("which", ["one_tile", "replicated", "many_layers"])
def test_layer_bars_stay_inside_the_axes(which, request):
    netlist = request.getfixturevalue(which)
    for ax in _panels(layers_figure(netlist)):
        lo, hi = ax.get_ylim()
        bars = _bars(ax)
        assert bars
        for bar in bars:
            top = bar.get_y() + bar.get_height()
            assert lo < top < hi  # a one-crossbar bar shows, the tallest is not cut by the frame


def test_a_replicas_entry_only_with_replicas(one_tile, replicated):
    assert layers_figure(one_tile).axes[0].get_legend() is None
    legend = layers_figure(replicated).axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["one copy", "replicas"]
    assert any(layer.crossbars_with_replicas > layer.crossbars for layer in replicated.layers)


def test_panels_do_not_share_colours(replicated):
    top, bottom = _panels(layers_figure(replicated))
    colours = [{tuple(b.get_facecolor()) for b in _bars(ax)} for ax in (top, bottom)]
    assert len(colours[0]) == 2 and not colours[0] & colours[1]


def test_layer_labels_are_readable_and_the_figure_widens(one_tile, many_layers):
    narrow, wide = layers_figure(one_tile), layers_figure(many_layers)
    labels = wide.axes[1].get_xticklabels()
    assert len(labels) == 48 and all(label.get_fontsize() >= 8 for label in labels)
    assert all(len(label.get_text()) <= 22 for label in labels)
    assert len({label.get_text() for label in labels}) == 48
    assert wide.get_figwidth() > 2 * narrow.get_figwidth()


def test_short_labels_keep_both_ends_and_stay_distinct():
    names = [f"encoder_block_{i}_feed_forward_projection" for i in range(12)] + ["fc"]
    labels = short_labels(names, width=22)
    assert labels[-1] == "fc" and len(set(labels)) == len(names)
    assert all(len(s) <= 22 and s.startswith(f"…{i}_feed") for i, s in enumerate(labels[:-1]))
    assert short_labels(["a_very_long_layer_name_one", "a_very_long_layer_name_two"], width=8) == \
        ["…one", "…two"]
    assert short_labels(["stem_0", "layers_3_shortcut_0"]) == ["stem_0", "layers_3_shortcut_0"]
    assert short_labels([]) == []


def test_figures_render_to_png(replicated):
    figures = netlist_figures(replicated)
    assert list(figures) == ["occupancy.png", "layers.png"]
    assert all(png_bytes(f)[:8] == b"\x89PNG\r\n\x1a\n" for f in figures.values())


def test_pareto_plot_shows_every_point_and_rings_the_front():
    accepted = [(100 - 4 * i, 95.0 - 0.1 * i) for i in range(6)]
    undone = [(80, 90.0), (90, 93.5)]
    series = {"dense": [(104, 95.2)], "search: accepted step": accepted, "search: undone step": undone,
              "after the joint run": [(76, 95.1)]}
    fig = pareto_figure(series, front="all")
    ax = fig.axes[0]
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert sum(len(c.get_offsets()) for c in dots) == 1 + len(accepted) + len(undone) + 1
    front = pareto_front([p for points in series.values() for p in points])
    ring = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert len(ring) == 1 and list(zip(*ring[0].get_data())) == front
    assert (80, 90.0) not in front and (76, 95.1) in front
    assert "Pareto front (2)" in [t.get_text() for t in ax.get_legend().get_texts()]
    with pytest.raises(ValueError):
        pareto_figure(series, front="best")


def test_the_search_keeps_every_step_and_the_pareto_plot_shows_them():
    from types import SimpleNamespace

    from xbcompiler.prune import SearchCallbacks, network_search
    from xbcompiler.prune.report import run_series

    ratios: dict[str, float] = {}
    callbacks = SearchCallbacks(
        crossbars=lambda layer, r: 10 - round(r * 10), next_ratio=lambda layer, r: round(r + 0.1, 10),
        prune=ratios.__setitem__, evaluate=lambda: 90.0 - 2.0 * sum(ratios.values()) * 10 / 4,
        save=lambda: dict(ratios), restore=lambda s: (ratios.clear(), ratios.update(s)))
    search = network_search(["a", "b"], callbacks, max_drop=1.0, max_ratio=0.9, crossbar_threshold=0,
                            drop_from="layer", progress=False)
    visited = search.visited
    assert [(p.layer, p.accepted) for p in visited] == [("a", True), ("a", True), ("a", False),
                                                        ("b", True), ("b", True), ("b", False)]
    assert [p.freed for p in visited] == [1, 2, 3, 3, 4, 5]  # both layers counted, undone steps too
    outcome = SimpleNamespace(crossbars_dense=25, baseline_accuracy=90.0, search=search, crossbars=21,
                              accuracy=89.5)
    series = run_series(outcome)
    assert series["search: undone step"] == [(22, visited[2].accuracy), (20, visited[5].accuracy)]
    assert series["dense"] == [(25, 90.0)] and series["after the joint run"] == [(21, 89.5)]
    ax = pareto_figure(series, front="all").axes[0]
    assert sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection)) == len(visited) + 2


def test_the_knapsack_runs_pareto_plot_names_sensitivity_points_and_tries():
    from types import SimpleNamespace

    from xbcompiler.prune.knapsack import KnapsackCallbacks, knapsack_search
    from xbcompiler.prune.report import run_series

    joints = []

    def joint(ratios):  # the first try is over the 1-point budget, the backed-off one within it
        joints.append(ratios)
        return 91.0 - (2.0 if len(joints) == 1 else 0.5)

    callbacks = KnapsackCallbacks(crossbars=lambda layer, r: 10 - round(10 * r), ratios=lambda layer: [0.2, 0.5, 0.8],
                                  sensitivity=lambda layer, r: 90.0 - r, reference=lambda: 90.0,
                                  judge_reference=lambda: 91.0, joint=joint, save=lambda: "dense",
                                  restore=lambda state: None)
    result = knapsack_search(["a", "b"], callbacks, baseline=90.0, max_drop=1.0, budget=2.0, progress=False)
    assert len(result.attempts) == 2 and not result.attempts[0].met and result.attempts[1].met
    outcome = SimpleNamespace(crossbars_dense=20, baseline_accuracy=90.0, search=result.as_search(), knapsack=result,
                              crossbars=20 - result.final.allocation.freed, accuracy=result.final.accuracy)
    series = run_series(outcome)
    assert not any(label.startswith("search:") for label in series)  # the greedy search's words
    chosen = series["sensitivity (one layer, expected acc.): allocated"]
    other = series["sensitivity (one layer, expected acc.): not allocated"]
    assert len(chosen) == 2 and len(chosen) + len(other) == 6  # one point per (layer, ratio), one chosen per layer
    assert series["joint run: try not kept"] == [(20 - result.attempts[0].allocation.freed, 89.0)]
    assert series["after the joint run"] == [(outcome.crossbars, 90.5)]
