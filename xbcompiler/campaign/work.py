"""What a sweep's workers do, without Ray: build the model, compile one job, run one trial.

Everything here takes and returns plain picklable records, so the runner can ship them through Ray's
object store: the evaluation data and the model's trained weights once, each compiled netlist once
(as its document and arrays), and one :class:`TrialResult` back per trial.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..diagnostics import CompileError
from .spec import SweepSpec
from .trials import CompileJob, Trial


@dataclass(frozen=True)
class EvalData:
    """Tensors of the evaluation (``x_test``, ``y_test``) and of training, pruning and calibration."""

    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any


@dataclass(frozen=True)
class Compiled:
    """A compiled job: the netlist as (document, arrays), its fingerprint and costs, or the error it raised."""

    key: str
    doc: Any = None
    arrays: dict | None = None
    fingerprint: str = ""
    crossbars: int = 0
    chips: int = 0
    energy_uj: float = 0.0
    latency_us: float = 0.0
    seconds: float = 0.0
    error: tuple[str, str] | None = None  #: (code, message)

    def netlist(self):
        from ..netlist import Netlist

        return Netlist(self.doc, dict(self.arrays))


@dataclass(frozen=True)
class TrialResult:
    """One finished trial: ``status`` is ``ok`` or the error code (``message`` says what went wrong)."""

    trial: str
    status: str
    accuracy: float | None = None
    crossbars: int | None = None
    chips: int | None = None
    energy_uj: float | None = None
    latency_us: float | None = None
    seconds: float = 0.0
    fingerprint: str = ""
    message: str = ""


def load_data(spec: SweepSpec) -> EvalData:
    """The spec's data: the digits split, or the arrays of an .npz (XB708 when unusable)."""
    import numpy as np
    import torch

    if spec.data.source == "digits":
        from ..datasets import digits

        d = digits(spec.data.split_seed)
        data = EvalData(d.x_train, d.y_train, d.x_test, d.y_test)
    else:
        path = Path(spec.base_dir, spec.data.source)
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise CompileError("XB708", f"cannot read {path} as an .npz of arrays: {exc}") from None
        if "x_test" not in arrays or "y_test" not in arrays:
            raise CompileError("XB708", f"{path} lacks x_test or y_test", details=[f"arrays: {sorted(arrays)}"])
        x_test, y_test = arrays["x_test"], arrays["y_test"]
        x_train, y_train = arrays.get("x_train", x_test), arrays.get("y_train", y_test)
        for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
            if len(x) != len(y) or not len(x) or y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
                raise CompileError("XB708", f"{path}: x_{split} and y_{split} must be as many samples (at least "
                                            f"one) with one integer label each (got {x.shape}, {y.shape} {y.dtype})")
        as_x = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
        as_y = lambda a: torch.from_numpy(a.astype(np.int64))
        data = EvalData(as_x(x_train), as_y(y_train), as_x(x_test), as_y(y_test))
    if spec.data.limit:
        data = replace(data, x_test=data.x_test[:spec.data.limit], y_test=data.y_test[:spec.data.limit])
    return data


def build_model(spec: SweepSpec, state: dict | None = None):
    """The factory's model, with ``state`` (a state_dict) loaded when given; in eval mode."""
    from ..modelfile import load_model

    model, _ = load_model(spec.factory)
    if state is not None:
        model.load_state_dict(state)
    return model.eval()


@dataclass(frozen=True)
class Prepared:
    """The weights every compile starts from (a state_dict), or the error that building the model raised."""

    state: dict | None = None
    error: tuple[str, str] | None = None  #: (code, message)


def prepare(spec: SweepSpec, data: EvalData) -> Prepared:
    """The model's weights: from the weights file, trained by the recipe, or the factory's own."""
    import torch

    from ..datasets import Split, train_classifier

    torch.set_num_threads(1)
    try:
        model = build_model(spec)
        if spec.model.weights:
            path = Path(spec.base_dir, spec.model.weights)
            try:
                model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            except (OSError, RuntimeError, ValueError, zipfile.BadZipFile) as exc:
                raise CompileError("XB708", f"cannot load the weights {path}: {str(exc).splitlines()[0]}") from None
        elif spec.train is not None:
            t = spec.train
            split = Split(data.x_train, data.y_train, data.x_test, data.y_test)
            train_classifier(model, split, epochs=t.epochs, lr=t.lr, batch_size=t.batch_size, seed=t.seed)
    except CompileError as exc:
        return Prepared(error=(exc.code, error_text(exc)))
    return Prepared({k: v.detach().clone() for k, v in model.state_dict().items()})


def compile_job(spec: SweepSpec, job: CompileJob, prepared: Prepared, data: EvalData) -> Compiled:
    """Prune (when the job's sparsity is above 0) and compile; a coded error is returned, not raised."""
    import torch

    import xbcompiler as xb

    from ..report import cost_report

    torch.set_num_threads(1)
    start = time.perf_counter()
    if prepared.error is not None:
        return Compiled(job.key, error=prepared.error)
    try:
        model = build_model(spec, prepared.state)
        target = xb.load_target(job.target, job.overrides or None)
        if job.sparsity > 0:
            _prune(spec, model, target, job.sparsity, data)
        example = (torch.randn(tuple(spec.model.input_shape), generator=torch.Generator().manual_seed(0)),)
        calibration = None if spec.compile.mode == "ideal" else data.x_train[:spec.data.calibration]
        with _quiet():
            net = xb.compile(model, example, target, job.pipeline, calibration=calibration).netlist
        costs = cost_report(net).totals
    except CompileError as exc:
        return Compiled(job.key, error=(exc.code, error_text(exc)), seconds=time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 -- a compile bug fails its trials, not the sweep
        return Compiled(job.key, error=("XB710", f"{type(exc).__name__}: {exc}"), seconds=time.perf_counter() - start)
    return Compiled(job.key, net.doc, dict(net.arrays), hashlib.sha256(net.json_bytes()).hexdigest()[:16],
                    int(costs["crossbars"]), int(costs["chips"]), costs["energy_pj"] / 1e6, costs["latency_ns"] / 1e3,
                    time.perf_counter() - start)


def _prune(spec: SweepSpec, model, target, sparsity: float, data: EvalData) -> None:
    from ..prune.flow import PruneSettings, holdout, prune_classifier

    p = spec.prune
    train, val = holdout(data.x_train, data.y_train, 0.2, p.seed)
    settings = PruneSettings(pipeline=p.plan, grain=p.grain, sparsity=sparsity, epochs=p.epochs,
                             relax_epochs=p.relax_epochs, lr=p.lr, seed=p.seed, progress=False)
    prune_classifier(model, target, train, val, settings)


def run_trial(spec: SweepSpec, trial: Trial, compiled: Compiled, data: EvalData) -> TrialResult:
    """Program the compiled netlist onto a chip (device mode) and measure the test accuracy."""
    import torch

    import xbcompiler as xb

    from ..datasets import accuracy
    from ..emulator.programming import chip_specs

    torch.set_num_threads(1)
    start = time.perf_counter()
    costs = {"crossbars": compiled.crossbars, "chips": compiled.chips, "energy_uj": compiled.energy_uj,
             "latency_us": compiled.latency_us, "fingerprint": compiled.fingerprint}
    if compiled.error is not None:
        return TrialResult(trial.id, compiled.error[0], message=compiled.error[1])
    try:
        net = compiled.netlist()
        mode = spec.compile.mode
        if mode == "device":
            _, compensation = chip_specs(net, trial.program or None)
            calibration = data.x_train[:spec.data.calibration] if compensation.column_gain else None
            run_on = xb.program(net, seed=trial.seed, overrides=trial.program or None, calibration=calibration)
            predict = lambda x: xb.emulate(run_on, x)
        else:
            predict = lambda x: xb.emulate(net, x, mode=mode)
        acc = accuracy(predict, data.x_test, data.y_test, batch_size=spec.data.batch_size)
    except CompileError as exc:
        return TrialResult(trial.id, exc.code, seconds=time.perf_counter() - start, message=error_text(exc),
                           **costs)
    except Exception as exc:  # noqa: BLE001 -- recorded as the trial's failure; the sweep goes on
        return TrialResult(trial.id, "XB710", seconds=time.perf_counter() - start,
                           message=f"{type(exc).__name__}: {exc}", **costs)
    return TrialResult(trial.id, "ok", acc, seconds=time.perf_counter() - start, **costs)


def error_text(exc: CompileError) -> str:
    """A coded error's message and detail lines on one line (a cell of results.csv)."""
    return "; ".join([exc.message, *exc.details])


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The compiler's coded warnings (a model on several chips, ...) are the trial's columns, not console lines."""
    from ..diagnostics import XBWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XBWarning)
        yield
