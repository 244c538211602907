"""Network-level search (background §1.7) with toy callbacks: each stop condition, undo, fine-tune."""

from __future__ import annotations

import pytest
import torch

from xbcompiler.prune import SearchCallbacks, column_groups, crossbar_curve, network_search


class Toy:
    """Layers with a fixed crossbar staircase and an accuracy that falls with the total ratio."""

    def __init__(self, dense=10, step=0.1, cost=1.0):
        self.dense, self.step, self.cost = dense, step, cost
        self.ratios: dict[str, float] = {}
        self.pruned: list[tuple[str, float]] = []
        self.finetuned = False

    def crossbars(self, layer, ratio):
        return self.dense - round(ratio / self.step)

    def next_ratio(self, layer, ratio):
        nxt = round(ratio + self.step, 10)
        return nxt if nxt <= 1.0 else None

    def prune(self, layer, ratio):
        self.ratios[layer] = ratio
        self.pruned.append((layer, ratio))

    def evaluate(self):
        return 90.0 - self.cost * sum(r / self.step for r in self.ratios.values())

    def finetune(self):
        self.finetuned = True

    def callbacks(self):
        return SearchCallbacks(self.crossbars, self.next_ratio, self.prune, self.evaluate,
                               save=lambda: dict(self.ratios), restore=self._restore, finetune=self.finetune)

    def _restore(self, state):
        self.ratios = state


def test_stops_on_accuracy_drop_and_undoes_the_step():
    toy = Toy(cost=0.2)  # every step costs 0.2 points
    result = network_search(["a", "b"], toy.callbacks(), max_drop=0.5, max_ratio=0.95, crossbar_threshold=0,
                            progress=False)
    first, second = result.layers
    assert first.stop == "accuracy" and first.ratio == pytest.approx(0.2) and first.steps == 2
    # the third step of each layer was undone
    assert toy.ratios["a"] == pytest.approx(0.2) and toy.ratios["b"] == pytest.approx(0.2)
    assert first.crossbars == 8 and first.crossbars_dense == 10
    assert second.accuracy == pytest.approx(90.0 - 0.2 * 4)
    assert toy.finetuned and result.accuracy == pytest.approx(second.accuracy)
    assert result.baseline_accuracy == 90.0


def test_drop_from_network_limits_the_total_drop():
    toy = Toy(cost=0.2)
    result = network_search(["a", "b"], toy.callbacks(), max_drop=0.5, crossbar_threshold=0,
                            drop_from="network", progress=False)
    assert [r.ratio for r in result.layers] == pytest.approx([0.2, 0.0])


def test_stops_at_the_ratio_limit():
    toy = Toy(cost=0.0)
    result = network_search(["a"], toy.callbacks(), max_ratio=0.45, crossbar_threshold=0, progress=False)
    (row,) = result.layers
    assert row.stop == "ratio-limit" and row.ratio == pytest.approx(0.4)
    assert max(r for _, r in toy.pruned) == pytest.approx(0.4)  # 0.5 is never trained


def test_stops_at_the_crossbar_threshold():
    toy = Toy(cost=0.0)
    result = network_search(["a"], toy.callbacks(), max_ratio=1.0, crossbar_threshold=3, progress=False)
    (row,) = result.layers
    assert row.stop == "crossbars" and row.crossbars == 4 and row.ratio == pytest.approx(0.6)


def test_exhausted_when_no_step_frees_a_crossbar():
    toy = Toy(cost=0.0)
    result = network_search(["a"], toy.callbacks(), max_ratio=1.0, crossbar_threshold=-1, progress=False)
    assert result.layers[0].stop == "exhausted" and result.layers[0].crossbars == 0


def test_steps_follow_a_crossbar_curve():
    gs = column_groups("w", (8, 6, 3, 3), kin=3, kout=4, n_w=1)
    curve = crossbar_curve(gs, gs.norms(torch.randn(8, 6, 3, 3, generator=torch.Generator().manual_seed(0))))
    seen = []
    cb = SearchCallbacks(crossbars=lambda layer, r: curve.crossbars(r),
                         next_ratio=lambda layer, r: curve.next_ratio(r),
                         prune=lambda layer, r: seen.append(r), evaluate=lambda: 1.0)
    result = network_search(["w"], cb, max_ratio=1.0, crossbar_threshold=0, progress=False)
    counts = [curve.crossbars(r) for r in seen]
    assert counts == sorted(counts, reverse=True) and len(set(counts)) == len(counts)
    assert result.layers[0].crossbars == 1 and result.layers[0].stop == "crossbars"
    assert result.accuracy == 1.0


def test_table_lists_every_layer():
    toy = Toy(cost=0.2)
    result = network_search(["conv2", "conv3"], toy.callbacks(), crossbar_threshold=0, progress=False)
    text = result.table()
    assert "conv2" in text and "conv3" in text and "accuracy" in text


def test_rejects_unknown_drop_reference():
    with pytest.raises(ValueError, match="drop_from"):
        network_search([], Toy().callbacks(), drop_from="epoch")
