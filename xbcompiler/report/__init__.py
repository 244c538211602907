"""Cost report, strategy comparison and plots of a compiled netlist (docs/mapping.md)."""

from .compare import StrategyComparison, compare, compare_netlist, model_shapes
from .costs import CostReport, LayerCost, cost_report

__all__ = ["CostReport", "LayerCost", "StrategyComparison", "compare", "compare_netlist", "cost_report",
           "model_shapes"]
