"""Cost report, strategy comparison and plots of a compiled netlist (docs/mapping.md)."""

from .compare import StrategyComparison, compare, compare_netlist, model_shapes
from .costs import CostReport, LayerCost, cost_report
from .studies import Interval, interval, plot_accuracy

__all__ = ["CostReport", "Interval", "LayerCost", "StrategyComparison", "compare", "compare_netlist", "cost_report",
           "interval", "model_shapes", "plot_accuracy"]
