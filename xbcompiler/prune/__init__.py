"""Crossbar-aware pruning: group definitions, LGD/RPP and zerorize-recover training, input-channel
reorder, the ADMM trainer, block (group-L1) and grow-and-prune schedules, and the
network-level search (background §1.3-1.8, 3.3-3.4; see docs/pruning.md).

The OR-Tools solver path of the reorder is :func:`xbcompiler.prune.reorder_solve.solve` (imported
on demand, so this package does not load OR-Tools).
"""

from .admm import AdmmSchedule, Constraint, GroupConstraint, prune_admm, train_admm
from .gap import GapSchedule, prune_gap
from .group_l1 import GroupL1Schedule, prune_group_l1
from .groups import (
    CrossbarCurve,
    GroupSet,
    PackCount,
    column_groups,
    conv_group_groups,
    crossbar_curve,
    crossbar_groups,
    kernel_groups,
    tile_groups,
    to_free_next,
    top_s,
)
from .lgd import LGDPruner, prune_lgd, relaxed_keep
from .reorder import (
    ReorderProblem,
    ReorderResult,
    build_problem,
    kernel_energy,
    objective,
    permute_inputs,
    permute_outputs,
    upper_bound,
)
from .search import LayerOutcome, SearchCallbacks, SearchResult, network_search
from .train import PruneResult
from .zerorize import ZerorizeRecover, prune_zerorize

__all__ = [
    "AdmmSchedule", "Constraint", "CrossbarCurve", "GapSchedule", "GroupConstraint", "GroupL1Schedule", "GroupSet",
    "LGDPruner", "LayerOutcome", "PackCount", "PruneResult", "ReorderProblem", "ReorderResult", "SearchCallbacks",
    "SearchResult", "ZerorizeRecover", "build_problem", "column_groups", "conv_group_groups",
    "crossbar_curve", "crossbar_groups",
    "kernel_energy", "kernel_groups", "network_search", "objective", "permute_inputs", "permute_outputs",
    "prune_admm", "prune_gap", "prune_group_l1", "prune_lgd", "prune_zerorize", "relaxed_keep", "tile_groups",
    "to_free_next", "top_s", "train_admm", "upper_bound",
]
