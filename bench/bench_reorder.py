"""Input-channel reorder (background §1.6) on structured 512-channel instances: solver path vs greedy + local search.

Instances: ``C_out = 128`` outputs, ``C_in = 512`` channels, ``kin = 16`` (32 input groups); the
budget keeps 40% of the 4096 slabs. ``aligned``: 32 hidden clusters of exactly ``kin`` channels, each
output drawn to 2-7 clusters, log-normal noise on every kernel energy (the planted partition is
known); ``ragged``: the same with 40 clusters of random sizes; ``lowrank``: no clusters, importance
``(U V)^2`` with rank-4 factors (continuous channel profiles). Goal (issue 6): the solver path reaches
at least the greedy + local search value within 10 s; the gap is to the relaxation bound of
:func:`xbcompiler.prune.upper_bound`.
Run: ``python bench/bench_reorder.py [--time-limit 10]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import report  # sets sys.path

from xbcompiler.prune import build_problem, objective, upper_bound
from xbcompiler.prune.reorder import assignment_value, balanced_kmeans, heuristic
from xbcompiler.prune.reorder_solve import solve

C_OUT, C_IN, KIN, KEEP = 128, 512, 16, 0.4


def instance(kind: str, seed: int = 0):
    """(problem, planted group assignment or None)."""
    rng = np.random.default_rng(seed)
    budget = int(KEEP * C_OUT * (C_IN // KIN))
    if kind == "lowrank":
        importance = (rng.standard_normal((C_OUT, 4)) @ rng.standard_normal((4, C_IN))) ** 2
        return build_problem(importance, kin=KIN, budget=budget), None
    if kind == "aligned":
        n_clusters = C_IN // KIN
        cluster = rng.permutation(np.arange(C_IN) // KIN)
    else:
        n_clusters = 40
        cluster = rng.integers(0, n_clusters, C_IN)
    affinity = np.zeros((C_OUT, n_clusters))
    for o in range(C_OUT):
        affinity[o, rng.choice(n_clusters, rng.integers(2, 8), replace=False)] = rng.uniform(0.5, 1.5)
    importance = (affinity[:, cluster] + 0.05) * rng.lognormal(0.0, 0.5, (C_OUT, C_IN))
    return build_problem(importance, kin=KIN, budget=budget), cluster if kind == "aligned" else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--time-limit", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for kind in ("aligned", "ragged", "lowrank"):
        problem, cluster = instance(kind, args.seed)
        identity = objective(problem, np.arange(C_IN))
        start = time.perf_counter()
        greedy = assignment_value(problem, balanced_kmeans(problem, normalise=True, seed=args.seed))
        greedy_s = time.perf_counter() - start
        start = time.perf_counter()
        fast = assignment_value(problem, heuristic(problem, seed=args.seed))
        fast_s = time.perf_counter() - start
        result = solve(problem, time_limit_s=args.time_limit, seed=args.seed)
        bound = upper_bound(problem)
        extra = {} if cluster is None else {"solver_over_planted": result.objective
                                             / assignment_value(problem, cluster)}
        report(f"reorder_{kind}_c512_kin16", solver_over_greedy_ls=result.objective / fast,
               solver_over_bound=result.objective / bound, greedy_ls_over_bound=fast / bound,
               greedy_over_bound=greedy / bound, identity_over_bound=identity / bound, gap=result.gap,
               solver_s=result.seconds, greedy_ls_s=fast_s, greedy_s=greedy_s, status=result.status,
               method=result.method, goal="solver >= greedy+ls within 10 s", **extra)


if __name__ == "__main__":
    main()
