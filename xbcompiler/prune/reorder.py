"""Input-channel reorder (background §1.6): the problem, its objective and bound, the heuristic, and applying it.

Pure NumPy/torch; the OR-Tools solver path lives in :mod:`.reorder_solve`.

A permutation ``perm`` lists, for each new channel position, the old channel placed there
(``x_new = x[:, perm]``). Positions are cut into input groups of ``kin`` consecutive channels per
conv group (the last one may be smaller). The objective is the kept importance: the sum over the
``budget`` best slabs ``(r, a)`` of ``sum_{i in I_a} S[r, i]``, where a row ``r`` is an output channel
(column grain) or an output group of ``kout`` channels (crossbar grain, blocks ``(a, b)``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from math import ceil

import numpy as np
import torch

from ..optimality import relative_gap


@dataclass(frozen=True, eq=False)
class ReorderProblem:
    """Maximise kept importance over permutations that keep every channel inside its conv group."""

    scores: np.ndarray
    """``float64 [R, C]``, >= 0: importance of (old) input channel ``i`` for row ``r``."""
    slots: np.ndarray
    """``int64 [C]``: input group of each new position (non-decreasing)."""
    group_class: np.ndarray
    """``int64 [A]``: conv group of each input group."""
    chan_class: np.ndarray
    """``int64 [C]``: conv group of each old channel."""
    row_class: np.ndarray
    """``int64 [R]``: conv group of each row."""
    budget: int
    """Kept slabs (rows x input groups)."""

    @property
    def n_groups(self) -> int:
        return len(self.group_class)

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.slots, minlength=self.n_groups)

    @property
    def valid(self) -> np.ndarray:
        """``bool [R, A]``: slabs that exist (row and input group in the same conv group)."""
        return self.row_class[:, None] == self.group_class[None, :]


def kernel_energy(weight: torch.Tensor) -> np.ndarray:
    """``S[o, i] = ||W[o, i, ...]||_F^2`` (background §1.3), ``float64 [C_out, C_in/groups]``."""
    w = weight.detach().double().cpu()
    return w.pow(2).reshape(w.shape[0], w.shape[1], -1).sum(-1).numpy()


def build_problem(importance: np.ndarray, *, kin: int, budget: int, groups: int = 1,
                  kout: int | None = None) -> ReorderProblem:
    """The reorder problem of one layer.

    ``importance`` is ``[C_out, C_in/groups]`` (e.g. :func:`kernel_energy`); ``budget`` counts kept
    slabs ``(o, a)``, or kept blocks ``(a, b)`` when ``kout`` is given (crossbar grain: rows are the
    output groups of ``kout`` channels of each conv group).
    """
    imp = np.asarray(importance, dtype=np.float64)
    if imp.ndim != 2 or (imp < 0).any() or kin < 1:
        raise ValueError("importance must be a non-negative [C_out, C_in/groups] matrix and kin >= 1")
    c_out, cig = imp.shape
    if c_out % groups:
        raise ValueError(f"C_out={c_out} is not divisible by groups={groups}")
    cog, g_in = c_out // groups, ceil(cig / kin)
    o_class = np.arange(c_out) // cog
    rows, row_class = imp, o_class
    if kout is not None:
        b = o_class * ceil(cog / kout) + (np.arange(c_out) % cog) // kout
        rows = np.zeros((b[-1] + 1, cig))
        np.add.at(rows, b, imp)
        row_class = np.zeros(b[-1] + 1, np.int64)
        row_class[b] = o_class
    scores = np.zeros((len(rows), cig * groups))
    for j in range(groups):
        scores[row_class == j, j * cig:(j + 1) * cig] = rows[row_class == j]
    slots = (np.arange(cig * groups) // cig) * g_in + (np.arange(cig * groups) % cig) // kin
    problem = ReorderProblem(scores, slots, np.arange(g_in * groups) // g_in,
                             np.arange(cig * groups) // cig, row_class.astype(np.int64), int(budget))
    if not 0 <= budget <= int(problem.valid.sum()):
        raise ValueError(f"budget {budget} outside [0, {int(problem.valid.sum())}] slabs")
    return problem


# --- objective and bound -----------------------------------------------------------------------------

def groups_of(problem: ReorderProblem, perm: np.ndarray) -> np.ndarray:
    """Input group of each old channel under ``perm``."""
    g = np.empty(len(perm), np.int64)
    g[np.asarray(perm)] = problem.slots
    return g


def perm_of(problem: ReorderProblem, g: np.ndarray) -> np.ndarray:
    """A permutation realising the group assignment ``g`` (channels keep their relative order in a group)."""
    return np.argsort(g, kind="stable")


def slab_scores(problem: ReorderProblem, g: np.ndarray) -> np.ndarray:
    """``T[r, a] = sum_{i: g[i] = a} S[r, i]``; invalid slabs are ``-inf``."""
    t = problem.scores @ np.eye(problem.n_groups)[g]
    return np.where(problem.valid, t, -np.inf)


def kept_slabs(problem: ReorderProblem, g: np.ndarray) -> np.ndarray:
    """``bool [R, A]``: the ``budget`` best slabs for assignment ``g`` (ties by index)."""
    t = slab_scores(problem, g).ravel()
    keep = np.zeros(t.size, bool)
    keep[np.argsort(-t, kind="stable")[:problem.budget]] = True
    return keep.reshape(len(problem.scores), problem.n_groups)


def objective(problem: ReorderProblem, perm: np.ndarray) -> float:
    """Kept importance of ``perm``."""
    return assignment_value(problem, groups_of(problem, perm))


def assignment_value(problem: ReorderProblem, g: np.ndarray) -> float:
    """Kept importance of the group assignment ``g`` (input group of each old channel)."""
    t = slab_scores(problem, g).ravel()
    if problem.budget == 0:
        return 0.0
    return float(np.partition(t, t.size - problem.budget)[t.size - problem.budget:].sum())


def upper_bound(problem: ReorderProblem) -> float:
    """A bound >= the optimum: each row ignores the shared partition.

    A row that keeps ``k`` slabs covers at most the ``k`` largest groups of its conv group, so it
    collects at most its top ``m_k`` importances (``m_k`` = their total size). These are prefix sums
    of chunks of the row's sorted importances, chunk sizes decreasing, hence concave in ``k``: the
    best allocation of ``budget`` slabs over rows takes the ``budget`` largest chunk sums.
    """
    increments = []
    sizes = problem.sizes
    for j in np.unique(problem.row_class):
        chunk = np.sort(sizes[problem.group_class == j])[::-1]
        edges = np.concatenate([[0], np.cumsum(chunk)])
        rows = -np.sort(-problem.scores[np.ix_(problem.row_class == j, problem.chan_class == j)], axis=1)
        prefix = np.concatenate([np.zeros((len(rows), 1)), np.cumsum(rows, axis=1)], axis=1)
        increments.append(np.diff(prefix[:, edges], axis=1).ravel())
    flat = np.concatenate(increments)
    return float(np.sort(flat)[::-1][:problem.budget].sum())


# --- heuristic: balanced clustering + pairwise-swap local search ------------------------------------

def balanced_kmeans(problem: ReorderProblem, *, normalise: bool, seed: int = 0,
                    iters: int = 10) -> np.ndarray:
    """Group assignment from balanced k-means of channel importance profiles ``S[:, i]`` (background §1.6 step 1).

    Centres start with k-means++; each assignment step fills groups to their sizes greedily by distance.
    """
    rng = np.random.default_rng(seed)
    g = groups_of(problem, np.arange(len(problem.slots)))
    sizes = problem.sizes
    for j in np.unique(problem.chan_class):
        chans = np.flatnonzero(problem.chan_class == j)
        slots = np.flatnonzero(problem.group_class == j)
        x = problem.scores[problem.row_class == j][:, chans].T
        if normalise:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
        centres = _kmeanspp(x, len(slots), rng)
        for _ in range(iters):
            dist = (x**2).sum(1)[:, None] - 2 * x @ centres.T + (centres**2).sum(1)[None, :]
            local = _fill(dist, sizes[slots])
            centres = np.stack([x[local == a].mean(0) for a in range(len(slots))])
        g[chans] = slots[local]
    return g


def _kmeanspp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [x[rng.integers(len(x))]]
    d = ((x - centres[0]) ** 2).sum(1)
    for _ in range(k - 1):
        total = d.sum()
        centres.append(x[rng.choice(len(x), p=d / total) if total > 0 else rng.integers(len(x))])
        d = np.minimum(d, ((x - centres[-1]) ** 2).sum(1))
    return np.stack(centres)


def _fill(dist: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Greedy capacitated assignment: closest (point, centre) pairs first."""
    left = capacity.copy()
    out = np.full(dist.shape[0], -1)
    todo = dist.shape[0]
    for flat in np.argsort(dist, axis=None, kind="stable"):
        i, a = divmod(int(flat), dist.shape[1])
        if out[i] < 0 and left[a] > 0:
            out[i], left[a], todo = a, left[a] - 1, todo - 1
            if not todo:
                break
    return out


def local_search(problem: ReorderProblem, g: np.ndarray, *, deadline: float = float("inf"),
                 max_rounds: int = 100) -> np.ndarray:
    """Pairwise swaps of channels between groups, then re-select the kept slabs; repeat while it gains.

    With the kept slabs ``y`` fixed the objective is linear, ``sum_i p[i, g(i)]`` with
    ``p = S^T y``, so a swap gains ``p[j, g(i)] + p[i, g(j)] - p[i, g(i)] - p[j, g(j)]`` and swaps of
    disjoint channel pairs add up; re-selecting ``y`` afterwards can only gain more.
    """
    g = g.copy()
    same = problem.chan_class[:, None] == problem.chan_class[None, :]
    value = assignment_value(problem, g)
    for _ in range(max_rounds):
        p = problem.scores.T @ kept_slabs(problem, g).astype(np.float64)
        while time.perf_counter() < deadline and _swap_round(p, g, same):
            pass
        new = assignment_value(problem, g)
        if new <= value * (1 + 1e-12) or time.perf_counter() >= deadline:
            break
        value = new
    return g


def _swap_round(p: np.ndarray, g: np.ndarray, same: np.ndarray) -> bool:
    """Apply the best disjoint improving swaps in place; False when none improves."""
    m = p[:, g]                                     # m[i, j] = p[i, g(j)]
    own = m.diagonal().copy()
    gain = m + m.T - own[:, None] - own[None, :]
    gain[~same | (g[:, None] == g[None, :])] = 0.0
    gain = np.triu(gain, 1)
    cand = np.flatnonzero(gain > 1e-12 * float(p.max(initial=0.0)))
    if not cand.size:
        return False
    cand = cand[np.argsort(-gain.ravel()[cand], kind="stable")][: 4 * len(g)]
    used = np.zeros(len(g), bool)
    for flat in cand:
        i, j = divmod(int(flat), len(g))
        if not (used[i] or used[j]):
            g[i], g[j] = g[j], g[i]
            used[i] = used[j] = True
    return True


def perturb(problem: ReorderProblem, g: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """``g`` with the groups of up to ``n`` random channels of one random conv group shuffled among them."""
    chans = np.flatnonzero(problem.chan_class == rng.choice(problem.chan_class))
    pick = rng.choice(chans, min(n, len(chans)), replace=False)
    out = g.copy()
    out[pick] = g[rng.permutation(pick)]
    return out


def heuristic(problem: ReorderProblem, *, seed: int = 0, deadline: float = float("inf")) -> np.ndarray:
    """Best group assignment of local search started from identity and from balanced k-means (raw and
    normalised profiles); never worse than identity."""
    identity = groups_of(problem, np.arange(len(problem.slots)))
    best, best_value = identity, assignment_value(problem, identity)
    for start in (lambda: identity,
                  lambda: balanced_kmeans(problem, normalise=False, seed=seed),
                  lambda: balanced_kmeans(problem, normalise=True, seed=seed)):
        if time.perf_counter() >= deadline:
            break
        g = local_search(problem, start(), deadline=deadline)
        value = assignment_value(problem, g)
        if value > best_value:
            best, best_value = g, value
    return best


# --- result and application --------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ReorderResult:
    """Outcome of one reorder solve."""

    perm: np.ndarray
    """New position -> old channel (a bijection that keeps channels in their conv group)."""
    objective: float
    upper_bound: float
    status: str
    """``optimal`` (objective meets the bound), ``feasible`` (solver finished, gap > 0) or ``fallback``
    (a solver step failed or timed out; the best permutation found so far, a warning was issued)."""
    method: str
    """Which step produced ``perm``: ``identity``, ``heuristic``, ``alternating`` or ``mip``."""
    identity_objective: float
    heuristic_objective: float
    seconds: float

    @property
    def gap(self) -> float:
        """``(bound - objective) / bound`` (0 when the bound is 0)."""
        return relative_gap(self.objective, self.upper_bound)


def permute_inputs(weight: torch.Tensor, perm, groups: int = 1) -> torch.Tensor:
    """Consumer weight for inputs in the new order: ``conv(x[:, perm], result) == conv(x, weight)``."""
    perm = torch.as_tensor(np.asarray(perm), dtype=torch.long)
    cog, cig = weight.shape[0] // groups, weight.shape[1]
    parts = []
    for j in range(groups):
        local = perm[j * cig:(j + 1) * cig] - j * cig
        if local.min() < 0 or local.max() >= cig:
            raise ValueError(f"permutation moves channels out of conv group {j}")
        parts.append(weight[j * cog:(j + 1) * cog].index_select(1, local))
    return torch.cat(parts)


def permute_outputs(tensor: torch.Tensor, perm) -> torch.Tensor:
    """Producer weight, bias or BN parameter with its output channels (dim 0) in the new order."""
    return tensor.index_select(0, torch.as_tensor(np.asarray(perm), dtype=torch.long))
