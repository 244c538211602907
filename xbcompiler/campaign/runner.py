"""Running a sweep on Ray: one task per trial, one compile per distinct target and pipeline.

The driver expands the trials, skips those ``results.csv`` already holds, puts the evaluation data in
the object store once, prepares the model's weights in one task, submits one compile task per distinct
compile (its netlist stays in the object store) and one trial task per trial, which programs and
emulates that netlist. At most ``workers`` trials are in flight. Each result is written to
``results.csv`` by the driver as it arrives. A trial that raises is a row with its error code; a task
Ray loses (a worker or node gone) is reported and left for the next run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..diagnostics import CompileError
from .results import ResultStore, SweepMeta
from .spec import SweepSpec, load_spec
from .trials import Trial, expand
from .work import TrialResult, compile_job, error_text, load_data, prepare, run_trial


@dataclass(frozen=True)
class Progress:
    """Where a running sweep stands (the trials of this run; ``skipped`` were finished before)."""

    total: int
    done: int
    failed: int
    running: int
    skipped: int
    elapsed_s: float

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far (None before the first trial finished)."""
        if not self.done:
            return None
        return self.elapsed_s / self.done * (self.total - self.done)


@dataclass(frozen=True)
class SweepOutcome:
    """What one run of a sweep did."""

    out_dir: Path
    trials: int  #: trials of the spec
    ran: int  #: trials finished in this run (ok or failed)
    failed: int  #: of those, with an error code
    skipped: int  #: finished by an earlier run
    lost: int  #: lost by Ray (a worker or node gone): run again to finish them
    compiles: int  #: compile tasks submitted in this run (one per distinct target, pipeline and sparsity)
    wall_s: float  #: the whole run, Ray's start included
    trials_s: float  #: from the first task submitted to the last result
    workers: int


def sweep(spec: SweepSpec | str | Path, out_dir: str | Path, *, workers: int | None = None,
          address: str | None = None, force: bool = False,
          progress: Callable[[Progress], None] | None = None) -> SweepOutcome:
    """Run ``spec`` (a :class:`SweepSpec` or a TOML path) into ``out_dir`` on Ray (docs/sweeps.md).

    ``address`` joins an existing cluster (default: a local instance with ``workers`` CPUs); ``workers`` caps
    the trials in flight (default: the cluster's CPUs). ``progress`` is called as trials finish.
    """
    start = time.perf_counter()
    spec = spec if isinstance(spec, SweepSpec) else load_spec(spec)
    ray = import_ray()
    trials = expand(spec)
    meta = SweepMeta(spec.name, spec.lock(), spec.varied, tuple(d.key for d in spec.derived), spec.raw)
    store = ResultStore.open(out_dir, meta, force=force)
    try:
        finished = store.done
        todo = [t for t in trials if t.id not in finished]
        skipped = len(trials) - len(todo)
        counts = _Counts(len(todo), skipped)
        for t in [t for t in todo if t.error is not None]:  # an impossible target: recorded without running
            counts.record(store, t, TrialResult(t.id, t.error.code, message=error_text(t.error)))
        runnable = [t for t in todo if t.error is None]
        compiles, lost, trials_s, used = 0, 0, 0.0, workers or 0
        if runnable:
            started = _init(ray, workers, address)
            try:
                used = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
                t0 = time.perf_counter()
                compiles, lost = _run(ray, spec, runnable, store, counts, used, progress, t0)
                trials_s = time.perf_counter() - t0
            finally:
                if started:
                    ray.shutdown()
        store.write_parquet()
    finally:
        store.close()
    return SweepOutcome(Path(out_dir), len(trials), counts.done, counts.failed, skipped, lost, compiles,
                        time.perf_counter() - start, trials_s, used)


class _Counts:
    def __init__(self, total: int, skipped: int):
        self.total, self.skipped, self.done, self.failed = total, skipped, 0, 0

    def record(self, store: ResultStore, trial: Trial, result: TrialResult) -> None:
        store.append({**trial.values, **trial.derived}, result)
        self.done += 1
        self.failed += result.status != "ok"

    def progress(self, running: int, elapsed: float) -> Progress:
        return Progress(self.total, self.done, self.failed, running, self.skipped, elapsed)


def import_ray():
    """``ray``, or XB005 with the install hint."""
    try:
        import ray
    except ImportError:
        raise CompileError("XB005", "sweeps run on Ray, which is not installed",
                           hint="pip install 'xbcompiler[sweep]'") from None
    return ray


def _init(ray, workers: int | None, address: str | None) -> bool:
    """Connect to Ray unless connected already; True when this call did (the sweep disconnects at its end)."""
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR",
                               "configure_logging": True}
    if address:
        ray.init(address=address, **options)
    else:
        ray.init(num_cpus=workers, **options)
    return True


def _run(ray, spec: SweepSpec, trials: list[Trial], store: ResultStore, counts: _Counts, cap: int,
         progress: Callable[[Progress], None] | None, t0: float) -> tuple[int, int]:
    """Submit the compiles, then the trials (at most ``cap`` in flight); record results as they come."""
    remote = {"num_cpus": 1, "max_retries": 2}
    prepare_task = ray.remote(**remote)(prepare)
    compile_task = ray.remote(**remote)(compile_job)
    trial_task = ray.remote(**remote)(run_trial)
    data = ray.put(load_data(spec))
    spec_ref = ray.put(spec)
    state = prepare_task.remote(spec_ref, data)
    compiled: dict[str, Any] = {}
    for t in trials:  # compile jobs in trial order, so the first trials can start first
        if t.compile_key not in compiled:
            compiled[t.compile_key] = compile_task.remote(spec_ref, t.compile, state, data)
    queue = list(reversed(trials))
    running: dict[Any, Trial] = {}
    lost = 0
    while queue or running:
        while queue and len(running) < cap:
            t = queue.pop()
            running[trial_task.remote(spec_ref, t, compiled[t.compile_key], data)] = t
        ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
        for ref in ready:
            t = running.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as exc:
                if _lost(ray, exc):
                    lost += 1
                    continue
                result = TrialResult(t.id, "XB710", message=f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
            counts.record(store, t, result)
        if progress is not None:
            progress(counts.progress(len(running), time.perf_counter() - t0))
    return len(compiled), lost


def _lost(ray, exc: Exception) -> bool:
    """A task that Ray could not finish (worker, node or object gone), as opposed to one that raised."""
    names = ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "ObjectLostError", "OwnerDiedError",
             "ObjectReconstructionFailedError", "TaskUnschedulableError", "OutOfMemoryError", "TaskCancelledError")
    gone = tuple(getattr(ray.exceptions, n) for n in names if hasattr(ray.exceptions, n))
    return isinstance(exc, gone)
