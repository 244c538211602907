"""Shared test setup: the repository root on ``sys.path`` and cached compiles of the model zoo.

There is no ``tests/__init__.py``; test modules import the zoo as ``from tests.models import MODELS``,
which needs the repository root importable (pytest puts only ``tests/`` itself on the path).
"""

from __future__ import annotations

import io
import os
import sys
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one torch thread per xdist worker: two workers with two threads each on two cores made the
    # loops of small tensor ops (device mode) up to 30x slower through OpenMP spin-waiting
    torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import xbcompiler as xb
from tests.models import MODELS

#: The built-in targets every model is compiled for.
TARGETS = ("isaac-like", "prime-like", "tiny")


def state_bytes(model: torch.nn.Module) -> bytes:
    """The serialised state_dict of ``model`` (parameters and buffers, byte for byte)."""
    buf = io.BytesIO()
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def training_flags(model: torch.nn.Module) -> dict[str, bool]:
    """``training`` of every submodule by name."""
    return {name: m.training for name, m in model.named_modules()}


def compile_quiet(model, inputs, target, **kwargs) -> xb.CompiledModel:
    """``xb.compile`` without the multi-chip XBWarning (models on ``tiny`` need several chips)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        return xb.compile(model, inputs, target, **kwargs)


@dataclass
class ZooCompile:
    """One zoo model compiled for one target, with what the model looked like before compiling."""

    name: str
    target: str
    model: torch.nn.Module
    x: torch.Tensor
    compiled: xb.CompiledModel
    state_before: bytes
    flags_before: dict[str, bool]


@cache
def zoo_compile(name: str, target: str, pipeline: str = "fully-folded") -> ZooCompile:
    """Build the zoo model ``name`` (seed 0), compile it on its seeded example input; cached per session.

    The foundation's zoo tests check the fully-folded mapping, so that is the pipeline unless named.
    """
    case = MODELS[name]
    model, x = case.build(), case.example_input()
    before, flags = state_bytes(model), training_flags(model)
    compiled = compile_quiet(model, (x,), target, pipeline=pipeline)
    return ZooCompile(name, target, model, x, compiled, before, flags)

