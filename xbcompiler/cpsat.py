"""The one way this project makes an OR-Tools CP-SAT solver: seeded, time-limited, Ctrl-C left to us.

By default CP-SAT installs its own SIGINT handler during a solve and never restores Python's, so a
Ctrl-C after any solve would kill the process without the CLI's message and clean-up (exit 130).
"""

from __future__ import annotations


def cp_solver(time_limit_s: float, seed: int, workers: int = 1):
    """A ``CpSolver`` with these limits that leaves SIGINT to Python."""
    from ortools.sat.python import cp_model

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.random_seed = seed
    solver.parameters.num_search_workers = workers
    solver.parameters.catch_sigint_signal = False
    return solver
