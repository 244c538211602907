"""Trials of a sweep: the grid (times the random draws) expanded, each with its id, compile and chip settings.

A trial's id is a hash of its varied values only, so it is the same in every run of the spec and a
resumed sweep recognises it. Trials that differ only in ``device.*`` / ``compensation.*`` keys or the
seed share one compile (:attr:`Trial.compile_key`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from dataclasses import dataclass
from typing import Any

from ..diagnostics import CompileError
from .spec import PROGRAM_PREFIXES, SweepSpec, Uniform


@dataclass(frozen=True)
class CompileJob:
    """One distinct compile: target (with its compile-time overrides), pipeline and prune sparsity."""

    key: str
    target: str
    overrides: dict[str, Any]
    pipeline: str
    sparsity: float


@dataclass(frozen=True)
class Trial:
    """One point of the sweep: its varied values, derived values and what it runs."""

    id: str
    values: dict[str, Any]  #: the varied keys' values, in spec order
    derived: dict[str, Any]  #: the derived keys' values
    seed: int  #: the chip's programming seed
    program: dict[str, Any]  #: device.* / compensation.* overrides of xb.program
    compile: CompileJob | None  #: None when the trial's target is invalid (see ``error``)
    error: CompileError | None = None  #: why it cannot compile (recorded without running)

    @property
    def compile_key(self) -> str | None:
        return None if self.compile is None else self.compile.key


def trial_id(values: dict[str, Any]) -> str:
    """16 hex digits of the sha256 of the varied values (sorted JSON)."""
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every combination of the grid, each combined with every random draw, in a fixed order."""
    grid = [dict(zip(spec.grid, combo)) for combo in itertools.product(*spec.grid.values())]
    if spec.random is None:
        return grid
    rng = random.Random(spec.random.seed)
    draws = [{k: _draw(rng, d) for k, d in spec.random_keys.items()} for _ in range(spec.random.trials)]
    return [{**g, **d} for g in grid for d in draws]


def _draw(rng: random.Random, dist: tuple | Uniform) -> Any:
    if not isinstance(dist, Uniform):
        return dist[rng.randrange(len(dist))]
    if isinstance(dist.low, int) and isinstance(dist.high, int) and not dist.log:
        return rng.randint(dist.low, dist.high)
    if dist.log:
        return math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
    return rng.uniform(dist.low, dist.high)


def expand(spec: SweepSpec) -> list[Trial]:
    """The sweep's trials, in order; the base target is loaded once and every compile target validated once."""
    from ..target import load_target

    name = spec.path(spec.compile.target) if spec.compile.target.endswith(".toml") else spec.compile.target
    base = load_target(name, spec.overrides or None)
    fingerprints: dict[str, tuple[str | None, CompileError | None]] = {}
    out = []
    for values in points(spec):
        settings = {**spec.overrides, **{k: v for k, v in values.items() if k not in ("pipeline", "prune.sparsity",
                                                                                    "seed")}}
        derived = {d.key: d.scale * settings.get(d.source, values.get(d.source, base.get(d.source)))
                   for d in spec.derived}
        settings.update(derived)
        program = {k: v for k, v in settings.items() if k.startswith(PROGRAM_PREFIXES)}
        compile_overrides = {k: v for k, v in settings.items() if not k.startswith(PROGRAM_PREFIXES)}
        pipeline = values.get("pipeline", spec.compile.pipeline)
        sparsity = float(values.get("prune.sparsity", spec.prune.sparsity))
        text = json.dumps(compile_overrides, sort_keys=True, default=str)
        if text not in fingerprints:
            try:
                fingerprints[text] = (base.with_overrides(compile_overrides).fingerprint(), None)
            except CompileError as exc:
                fingerprints[text] = (None, exc)
        fingerprint, error = fingerprints[text]
        job = None
        if fingerprint is not None:
            key = hashlib.sha256(json.dumps([fingerprint, pipeline, sparsity]).encode()).hexdigest()[:16]
            job = CompileJob(key, name, compile_overrides, pipeline, sparsity)
        out.append(Trial(trial_id(values), values, derived, int(values.get("seed", spec.compile.seed)), program,
                         job, error))
    return out

