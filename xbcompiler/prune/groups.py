"""Pruning groups: disjoint sets of entries of one weight tensor, and what the kept ones cost in crossbars.

A :class:`GroupSet` says nothing about how its groups were derived; the constructors below build the
shapes the mappings produce (background §1.3, 3.3) from explicit numbers (``kin``, ``kout``, ``n_w``, tile
sizes), which the caller takes from the layer's mapping plan. Weight layouts: ``[C_out, C_in/groups,
*kernel]`` (conv) or ``[C_out, C_in]`` (linear, kernel 1x1).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, prod

import numpy as np
import torch


@dataclass(frozen=True, eq=False)
class PackCount:
    """Crossbars of a keep vector: ``mult * sum_bin ceil(weight * alive(bin) / capacity)``.

    One formula covers every grain (background §1.8, 3.3): crossbar-grain and whole tiles are one bin per
    group (``weight = capacity = 1``, ``mult = n_w``); column-grain with output recombination bins the
    slabs ``(o, a)`` by input group (``capacity = Kout``, ``mult = n_w``); kernel groups with row
    compaction bin by column tile (``weight = kh*kw`` rows, ``capacity = R``).
    """

    bins: np.ndarray
    """Bin (crossbar pool) of each group, ``int64 [G]``."""
    weight: int = 1
    """Resource units one kept group takes in its bin (columns or rows)."""
    capacity: int = 1
    """Units one crossbar of a bin holds."""
    mult: int = 1
    """Crossbars per bin crossbar (``n_w`` slices of the semi-folded mapping)."""

    @property
    def n_bins(self) -> int:
        return int(self.bins.max()) + 1 if self.bins.size else 0

    def alive(self, keep: np.ndarray) -> np.ndarray:
        """Kept groups per bin."""
        return np.bincount(self.bins[np.asarray(keep, bool)], minlength=self.n_bins)

    def per_bin(self, alive: np.ndarray) -> np.ndarray:
        return -(-self.weight * np.asarray(alive) // self.capacity) * self.mult

    def __call__(self, keep: np.ndarray) -> int:
        return int(self.per_bin(self.alive(keep)).sum())


@dataclass(frozen=True, eq=False)
class Follow:
    """A group set whose keep vector is derived from another's: a group is kept while any group of the
    leader on the same channel is (e.g. a depthwise layer after the layer that makes its input channels)."""

    leader: str
    """The leader's parameter name."""
    leader_channels: np.ndarray
    """``int64 [G_leader]``: the channel of each leader group."""
    channels: np.ndarray
    """``int64 [G]``: the channel of each group of the follower."""

    def keep(self, leader_keep) -> torch.Tensor:
        """The follower's keep vector for the leader's ``leader_keep``."""
        leader_keep = np.asarray(torch.as_tensor(leader_keep, dtype=torch.bool))
        size = int(max(self.leader_channels.max(initial=-1), self.channels.max(initial=-1))) + 1
        alive = np.zeros(size, dtype=bool)
        alive[self.leader_channels[leader_keep]] = True
        return torch.from_numpy(alive[self.channels])


@dataclass(frozen=True, eq=False)
class GroupSet:
    """Disjoint groups of the entries of parameter ``param``; entries labelled -1 are never pruned."""

    param: str
    """Name in ``model.named_parameters()``, e.g. ``"features.3.weight"``."""
    labels: torch.Tensor
    """``int64``, the parameter's shape: the group of each entry, or -1."""
    keys: np.ndarray
    """``int64 [G, len(key_names)]``: coordinates of each group (e.g. ``(o, a)``)."""
    key_names: tuple[str, ...]
    cost: PackCount
    """Crossbar count of a keep vector (see :class:`PackCount`)."""
    aligned: bool = False
    """Project onto whole crossbars: the projection keeps a bin's groups one crossbar's worth
    (``cost.capacity``) at a time, best crossbar first (see :meth:`ranking`)."""
    follows: Follow | None = None
    """Set: the keep vector is the leader's channels (:func:`tie_keep`), not a projection of its own."""

    @property
    def n_groups(self) -> int:
        return len(self.keys)

    def sizes(self) -> torch.Tensor:
        """Entries per group, ``[G]``."""
        flat = self.labels.reshape(-1)
        return torch.bincount(flat[flat >= 0], minlength=self.n_groups)

    def norms(self, weight: torch.Tensor) -> torch.Tensor:
        """``||W_g||_2 / sqrt(|W_g|)`` per group (background §1.4: fair to unequal group sizes), ``float [G]``."""
        flat, w = self.labels.reshape(-1), weight.detach().reshape(-1).double().cpu()
        inside = flat >= 0
        energy = torch.zeros(self.n_groups, dtype=torch.float64).index_add_(0, flat[inside], w[inside] ** 2)
        return (energy / self.sizes().clamp(min=1)).sqrt()

    def mask(self, keep: torch.Tensor) -> torch.Tensor:
        """Boolean mask shaped like the parameter: entries of kept groups and of no group are True."""
        return self.per_entry(torch.as_tensor(keep, dtype=torch.bool), True)

    def per_entry(self, values: torch.Tensor, outside) -> torch.Tensor:
        """``values`` (one per group) spread over the parameter's shape; ``outside`` for entries in no group."""
        padded = torch.cat([values, torch.full((1,), outside, dtype=values.dtype)])
        return padded[torch.where(self.labels >= 0, self.labels, self.n_groups)]

    def apply(self, weight: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``weight`` with the groups not in ``keep`` zeroed (a new tensor)."""
        return weight * self.mask(keep).to(weight)

    def n_keep(self, sparsity: float) -> int:
        """``s = ceil((1 - rho) * |G|)`` kept groups for group sparsity ``rho`` (background §1.4)."""
        if not 0.0 <= sparsity <= 1.0:
            raise ValueError(f"sparsity must lie in [0, 1], got {sparsity}")
        return min(self.n_groups, max(0, ceil((1.0 - sparsity) * self.n_groups - 1e-9)))

    def crossbars(self, keep) -> int:
        return self.cost(np.asarray(torch.as_tensor(keep, dtype=torch.bool)))

    def ranking(self, scores: torch.Tensor) -> np.ndarray:
        """Group indices in the order the projection keeps them (:meth:`project` keeps a prefix).

        Plain sets: by score, ties to the lower index (:func:`top_s`). Aligned sets: each bin's
        groups sorted by score are cut into crossbars of ``cost.capacity`` groups, valued by their
        energy ``sum n_j^2 |W_j|``; crossbars go best first (a bin's crossbars in order), so keeping
        ``s`` groups touches at most one partly filled crossbar. This is the exact projection onto
        "at most ``k`` crossbars" when ``s`` fills them (background §1.8's "next free crossbar" per group).
        """
        scores = torch.as_tensor(scores).double()
        order = torch.argsort(scores, descending=True, stable=True).numpy()
        if not self.aligned:
            return order
        energy = (scores ** 2 * self.sizes().double()).numpy()
        bins = self.cost.bins[order]
        by_bin = order[np.argsort(bins, kind="stable")]  # grouped by bin, by score inside a bin
        sorted_bins = self.cost.bins[by_bin]
        first = np.searchsorted(sorted_bins, sorted_bins)
        chunk = (np.arange(len(by_bin)) - first) // max(1, self.cost.capacity // self.cost.weight)
        keys = sorted_bins * (len(by_bin) + 1) + chunk  # one key per (bin, crossbar)
        uniq, inverse = np.unique(keys, return_inverse=True)
        value = np.bincount(inverse, weights=energy[by_bin], minlength=len(uniq))
        rank = np.empty(len(uniq), np.int64)
        rank[np.argsort(-value, kind="stable")] = np.arange(len(uniq))
        return by_bin[np.argsort(rank[inverse], kind="stable")]

    def project(self, scores: torch.Tensor, s: int) -> torch.Tensor:
        """Boolean keep vector of the first ``s`` groups of :meth:`ranking` (exactly ``s`` kept)."""
        keep = torch.zeros(self.n_groups, dtype=torch.bool)
        keep[torch.from_numpy(self.ranking(scores)[:s])] = True
        return keep


def tie_keep(group_sets: list[GroupSet], keep: list[torch.Tensor]) -> list[torch.Tensor]:
    """``keep`` with the keep vector of every follower whose leader is in ``group_sets`` derived from the
    leader's (:class:`Follow`); other vectors unchanged."""
    index = {gs.param: i for i, gs in enumerate(group_sets)}
    out = list(keep)
    for i, gs in enumerate(group_sets):
        if gs.follows is not None and gs.follows.leader in index:
            out[i] = gs.follows.keep(keep[index[gs.follows.leader]])
    return out


def top_s(scores: torch.Tensor, s: int) -> torch.Tensor:
    """Boolean keep vector of the ``s`` largest scores; ties go to the lower index."""
    keep = torch.zeros(len(scores), dtype=torch.bool)
    keep[torch.argsort(torch.as_tensor(scores), descending=True, stable=True)[:s]] = True
    return keep


# --- constructors ------------------------------------------------------------------------------------

def _split(shape) -> tuple[int, int, int]:
    """(C_out, C_in per conv group, kernel volume) of a weight shape."""
    if len(shape) < 2:
        raise ValueError(f"weight shape {tuple(shape)} needs at least [C_out, C_in]")
    return int(shape[0]), int(shape[1]), prod(int(k) for k in shape[2:])


def _expand(label2d: torch.Tensor, shape) -> torch.Tensor:
    return label2d.reshape(*label2d.shape, *([1] * (len(shape) - 2))).expand(*shape).contiguous()


def crossbar_groups(param: str, shape, *, kin: int, kout: int, n_w: int = 1, groups: int = 1) -> GroupSet:
    """Crossbar-grain blocks ``(a, b) = W[O_b, I_a]`` of the semi-folded mapping (background §1.3).

    Input groups ``I_a`` are ``kin`` consecutive channels of a conv group (``a`` is local to it),
    output groups ``O_b`` are ``kout`` consecutive output channels of a conv group (``b`` is global);
    tails are smaller. Each kept block costs ``n_w`` crossbars.
    """
    c_out, c_in, _ = _split(shape)
    cog = c_out // groups
    g_in, g_out = ceil(c_in / kin), ceil(cog / kout)
    o = torch.arange(c_out)
    b = (o // cog) * g_out + (o % cog) // kout
    a = torch.arange(c_in) // kin
    labels = _expand(b[:, None] * g_in + a[None, :], shape)
    n = g_in * g_out * groups
    keys = np.stack([np.arange(n) % g_in, np.arange(n) // g_in], axis=1)
    return GroupSet(param, labels, keys, ("a", "b"), PackCount(np.arange(n), 1, 1, n_w))


def column_groups(param: str, shape, *, kin: int, kout: int, n_w: int = 1, groups: int = 1,
                  aligned: bool = False) -> GroupSet:
    """Column-grain slabs ``(o, a) = W[o, I_a]`` with output recombination (background §1.3).

    ``a`` is the input group local to the conv group of ``o``. Cost: survivors of each (conv group,
    input group) are re-packed ``kout`` per crossbar, ``n_w`` times: ``n_w * ceil(|alive(a)| / kout)``.
    ``aligned`` projects onto whole crossbars (:meth:`GroupSet.ranking`).
    """
    c_out, c_in, _ = _split(shape)
    cog, g_in = c_out // groups, ceil(c_in / kin)
    o, a = torch.arange(c_out), torch.arange(c_in) // kin
    labels = _expand(o[:, None] * g_in + a[None, :], shape)
    keys = np.stack(np.meshgrid(np.arange(c_out), np.arange(g_in), indexing="ij"), axis=-1).reshape(-1, 2)
    bins = (keys[:, 0] // cog) * g_in + keys[:, 1]
    return GroupSet(param, labels, keys, ("o", "a"), PackCount(bins, 1, kout, n_w), aligned)


def conv_group_groups(param: str, shape, *, groups: int, per_crossbar: int, n_w: int = 1,
                      aligned: bool = False) -> GroupSet:
    """Whole conv groups ``g = W[O_g]`` of a layer whose groups are packed block-diagonally,
    ``per_crossbar`` to a crossbar (e.g. depthwise convolutions, background §2.2).

    One conv group alone frees no crossbar; its survivors are re-packed ``per_crossbar`` to a crossbar
    (recombine-pruned-columns), ``n_w`` times: ``n_w * ceil(|alive| / per_crossbar)``. ``aligned``
    projects onto whole crossbars (:meth:`GroupSet.ranking`).
    """
    c_out = _split(shape)[0]
    labels = _expand((torch.arange(c_out) // (c_out // groups))[:, None].expand(c_out, int(shape[1])), shape)
    keys = np.arange(groups)[:, None]
    return GroupSet(param, labels, keys, ("g",), PackCount(np.zeros(groups, np.int64), 1, per_crossbar, n_w),
                    aligned)


def kernel_groups(param: str, shape, *, cols_per_tile: int, rows: int) -> GroupSet:
    """CRIMP kernel groups ``(i, c)``: input channel ``i`` restricted to the output channels of column tile
    ``c`` of a fully-folded mapping (``cols_per_tile`` output channels per tile, background §3.3).

    Cost with row compaction: column tile ``c`` takes ``ceil(kh*kw * |alive(c)| / rows)`` crossbars.
    Grouped layers are not supported here (their tiles are packed block-diagonally).
    """
    c_out, c_in, kvol = _split(shape)
    c = torch.arange(c_out) // cols_per_tile
    labels = _expand(c[:, None] * c_in + torch.arange(c_in)[None, :], shape)
    n_tiles = ceil(c_out / cols_per_tile)
    keys = np.stack(np.meshgrid(np.arange(c_in), np.arange(n_tiles), indexing="xy"), axis=-1).reshape(-1, 2)
    return GroupSet(param, labels, keys, ("i", "c"), PackCount(keys[:, 1], kvol, rows, 1))


def tile_groups(param: str, shape, *, rows: int, cols_per_tile: int) -> GroupSet:
    """Whole ``rows x cols_per_tile`` tiles ``(r, c)`` of the im2col matrix (CRIMP crossbar pruning,
    background §3.3).

    Matrix row of ``W[o, i, dy, dx]`` is ``(i*kh + dy)*kw + dx`` (rows ``(c, dy, dx)``), column ``o``.
    Each kept tile is one crossbar.
    """
    c_out, c_in, kvol = _split(shape)
    r = torch.arange(c_in * kvol) // rows
    c = torch.arange(c_out) // cols_per_tile
    n_r, n_c = ceil(c_in * kvol / rows), ceil(c_out / cols_per_tile)
    labels = (r[None, :] * n_c + c[:, None]).reshape(shape).contiguous()
    keys = np.stack([np.arange(n_r * n_c) // n_c, np.arange(n_r * n_c) % n_c], axis=1)
    return GroupSet(param, labels, keys, ("r", "c"), PackCount(np.arange(n_r * n_c), 1, 1, 1))


# --- next free crossbar (background §1.8) -------------------------------------------------------------------

def to_free_next(gs: GroupSet, keep) -> np.ndarray:
    """Per bin: how many more of its groups must be pruned to free one more crossbar (0 if none is left).

    Column-grain: within input group ``a`` with ``n`` alive slabs this is ``n - Kout*(ceil(n/Kout) - 1)``.
    """
    cost = gs.cost
    alive = cost.alive(np.asarray(torch.as_tensor(keep, dtype=torch.bool)))
    units = -(-cost.weight * alive // cost.capacity)
    target = np.maximum(units - 1, 0) * cost.capacity // cost.weight
    return np.where(units > 0, alive - target, 0)


@dataclass(frozen=True, eq=False)
class CrossbarCurve:
    """Crossbars of a layer when it keeps its ``s`` best groups by a fixed ranking, for every ``s``."""

    group_set: GroupSet
    counts: np.ndarray
    """``int64 [G + 1]``: crossbars keeping the top ``s`` groups; non-decreasing in ``s``."""

    def crossbars(self, sparsity: float) -> int:
        return int(self.counts[self.group_set.n_keep(sparsity)])

    def next_ratio(self, sparsity: float) -> float | None:
        """Smallest sparsity above ``sparsity`` that frees at least one more crossbar (None if none can)."""
        s = self.group_set.n_keep(sparsity)
        fewer = np.flatnonzero(self.counts[:s] < self.counts[s])
        if not fewer.size:
            return None
        return 1.0 - int(fewer[-1]) / self.group_set.n_groups


def crossbar_curve(gs: GroupSet, scores: torch.Tensor) -> CrossbarCurve:
    """The :class:`CrossbarCurve` of keeping groups in :meth:`GroupSet.ranking` order of ``scores`` (e.g.
    ``gs.norms(weight)``), in O(G log G)."""
    order = gs.ranking(scores)
    cost = gs.cost
    bins = cost.bins[order]
    # n-th occurrence (1-based) of each bin along the ranking
    by_bin = np.argsort(bins, kind="stable")
    first = np.searchsorted(bins[by_bin], bins[by_bin])
    nth = np.empty(len(bins), np.int64)
    nth[by_bin] = np.arange(len(bins)) - first + 1
    delta = cost.per_bin(nth) - cost.per_bin(nth - 1)
    return CrossbarCurve(gs, np.concatenate([[0], np.cumsum(delta)]).astype(np.int64))
