"""Fuzzed equivalence (issue 14): random valid models on random valid targets, through every named
pipeline, verified by the emulator: ideal mode within 1e-5 relative, integer mode bit-exact against
the integer reference (lossless ADCs).

The CI profile runs ``XB_FUZZ_EXAMPLES`` models (default 200); a long profile by hand:
``XB_FUZZ_EXAMPLES=2000 python -m pytest tests/test_fuzz_equivalence.py``. A failure shrinks to a
minimal model (hypothesis), printed as the drawn architecture (a fixed case goes into a test of its own).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

import xbcompiler as xb

EXAMPLES = int(os.environ.get("XB_FUZZ_EXAMPLES", "200"))
PIPELINES = ("default", "fully-folded", "semi-folded", "fully-unfolded")


ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "none": nn.Identity, "gelu": nn.GELU}


@dataclass(frozen=True)
class Arch:
    """A drawn architecture: an input ``[cin, size, size]``, a list of blocks, a linear head."""

    cin: int
    size: int
    blocks: tuple[tuple, ...]
    head: int
    seed: int


class Net(nn.Module):
    """Blocks: ``("conv", cout, k, stride, padding, dilation, groups, bias, act)``, ``("res", act)`` (a
    3x3 same-shape conv added back), ``("cat", c1)`` (a 1x1 branch concatenated), ``("pool", kind)``."""

    def __init__(self, arch: Arch):
        super().__init__()
        torch.manual_seed(arch.seed)
        self.blocks = nn.ModuleList()
        self.kinds = []
        c = arch.cin
        for block in arch.blocks:
            kind = block[0]
            if kind == "conv":
                _, cout, k, stride, padding, dilation, groups, bias, act = block
                m = nn.Sequential(nn.Conv2d(c, cout, k, stride, padding, dilation, groups, bias=bias),
                                  nn.BatchNorm2d(cout), ACTS[act]())
                with torch.no_grad():  # BatchNorm statistics that are not the identity
                    m[1].running_mean.uniform_(-0.2, 0.2)
                    m[1].running_var.uniform_(0.5, 1.5)
                c = cout
            elif kind == "res":
                m = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), ACTS[block[1]]())
            elif kind == "cat":
                m = nn.Conv2d(c, block[1], 1)
                c += block[1]
            else:
                m = nn.MaxPool2d(2) if block[1] == "max" else nn.AvgPool2d(2)
            self.blocks.append(m)
            self.kinds.append(kind)
        self.head = nn.Linear(c, arch.head)

    def forward(self, x):
        for kind, m in zip(self.kinds, self.blocks):
            if kind == "res":
                x = x + m(x)
            elif kind == "cat":
                x = torch.cat([x, m(x)], dim=1)
            else:
                x = m(x)
        return self.head(x.mean(dim=(2, 3)))


@st.composite
def architectures(draw) -> Arch:
    cin = draw(st.integers(1, 4))
    size = draw(st.integers(4, 10))
    c, h, blocks = cin, size, []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "conv", "res", "cat", "pool"]))
        if kind == "conv":
            k, dilation, stride = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
            padding = draw(st.integers(0, dilation * (k - 1)))
            span = dilation * (k - 1) + 1
            if h + 2 * padding < span:
                continue
            groups = draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0]))
            cout = groups * draw(st.integers(1, 3))
            blocks.append(("conv", cout, k, stride, padding, dilation, groups, draw(st.booleans()),
                           draw(st.sampled_from(sorted(ACTS)))))
            c, h = cout, (h + 2 * padding - span) // stride + 1
        elif kind == "res":
            blocks.append(("res", draw(st.sampled_from(sorted(ACTS)))))
        elif kind == "cat":
            extra = draw(st.integers(1, 3))
            blocks.append(("cat", extra))
            c += extra
        elif h >= 2:
            blocks.append(("pool", draw(st.sampled_from(["max", "avg"]))))
            h //= 2
    return Arch(cin, size, tuple(blocks), draw(st.integers(1, 5)), draw(st.integers(0, 2**16)))


@st.composite
def targets(draw) -> dict:
    """Overrides of ``tiny`` that make a valid target (lossless ADCs so integer mode is exact)."""
    rows = draw(st.sampled_from([8, 16, 32, 64]))
    cell_bits = draw(st.sampled_from([1, 2]))
    return {"crossbar.rows": rows, "crossbar.cols": draw(st.sampled_from([8, 16, 32])),
            "crossbar.cell_bits": cell_bits, "precision.weight_bits": draw(st.integers(4, 8)),
            "precision.input_bits": draw(st.integers(4, 8)), "adc.mode": "lossless",
            "encoding.signed": draw(st.sampled_from(["differential", "offset", "differential-zero-high"])),
            "encoding.flip_columns": False}


def compile_quietly(model, x, overrides, pipeline, calibration=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xb.compile(model, (x,), "tiny", pipeline, overrides=overrides, calibration=calibration)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=True, print_blob=True)
@given(arch=architectures(), overrides=targets(), pipeline=st.sampled_from(PIPELINES),
       integer=st.booleans())
def test_random_models_on_random_targets_verify(arch, overrides, pipeline, integer):
    try:
        xb.load_target("tiny", overrides)
    except xb.CompileError as exc:  # a combination the target refuses (e.g. a weight wider than the crossbar)
        assume(exc.code != "XB404")
        raise
    model = Net(arch).eval()
    gen = torch.Generator().manual_seed(arch.seed)
    x = torch.randn(2, arch.cin, arch.size, arch.size, generator=gen)
    if integer:
        calibration = torch.randn(8, arch.cin, arch.size, arch.size, generator=gen)
        compiled = compile_quietly(model, x[:1], overrides, pipeline, calibration)
        report = xb.verify(compiled.netlist, model, x, mode="integer")
    else:
        compiled = compile_quietly(model, x[:1], overrides, pipeline)
        report = xb.verify(compiled.netlist, model, x, mode="ideal", tolerance=1e-5)
    assert report.ok, (arch, overrides, pipeline, integer, report.first_mismatch, report.max_rel)
