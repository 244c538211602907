"""A custom pass inserted into the default pipeline, once as an object and once by name (issue 15, item 6).

``idle-columns`` is a crossbar pass of about 20 lines: after the mapping it counts, per layer, the
logical columns of its crossbars that no placement record reaches (each still has its share of an ADC
and of the read energy), writes the counts into the program's provenance, which the netlist keeps under
``provenance["idle-columns"]``, and adds a warning for every layer that leaves more than
``warn-above`` of its columns idle.

The script compiles a small CNN for the ``tiny`` target twice:

1. with a pipeline built from pass objects: the passes of ``default`` with an ``IdleColumnsPass``
   inserted before ``place-tiles`` (no registration needed);
2. after ``register_pass(IdleColumnsPass)``, with the textual pipeline ``default`` written out and
   ``idle-columns{warn-above=0.1}`` appended, the form ``xbc compile --pipeline`` takes.

Both netlists are saved and read back; the script prints what each recorded. Runs in a few seconds,
offline: ``python examples/custom_pass.py [--out DIR]`` (without ``--out`` a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import xbcompiler as xb
from xbcompiler.ir.program import XbarProgram
from xbcompiler.pipeline import NAMED_PIPELINES, Pass, PassContext, register_pass, resolve_pipeline


@dataclass(frozen=True)
class IdleColumnsPass(Pass):
    """Count, per layer, the crossbar columns no placement record reaches; warn where too many are idle."""

    warn_above: float = 0.5
    """Warn about a layer whose idle columns exceed this share of its crossbars' columns."""

    name: ClassVar[str] = "idle-columns"
    stage: ClassVar[str] = "xbar"
    needs: ClassVar[frozenset[str]] = frozenset({"mapped"})

    def run(self, program: XbarProgram, ctx: PassContext) -> XbarProgram:
        reach = {x.index: 0 for x in program.crossbars}  # logical columns up to the last one a record covers
        for s in program.slices:
            reach[s.crossbar] = max(reach[s.crossbar], s.xcol + s.col_hi - s.col_lo)
        for b in program.blocks:
            width = (b.out_channels[1] - b.out_channels[0]) * program.plans[b.layer].w_o
            reach[b.crossbar] = max(reach[b.crossbar], b.xcol + width)
        layers: dict[str, dict[str, int]] = {}
        for x in program.crossbars:
            counts = layers.setdefault(x.layer, {"crossbars": 0, "columns": 0, "idle": 0})
            counts["crossbars"] += 1
            counts["columns"] += x.cols
            counts["idle"] += x.cols - reach[x.index]
        for layer, c in layers.items():
            if c["idle"] > self.warn_above * c["columns"]:
                ctx.warnings.append(f"layer {layer} leaves {c['idle']} of {c['columns']} crossbar columns idle")
        ctx.report[self.name] = layers
        return program.replace(provenance={**program.provenance, self.name: layers})


def make_model() -> nn.Module:
    """A small CNN for 8x8 single-channel images (fixed seed)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 6 * 6, 10)).eval()


def compile_and_save(pipeline, out: Path) -> xb.Netlist:
    """Compile the model for ``tiny`` with ``pipeline``, save it to ``out`` and read it back."""
    compiled = xb.compile(make_model(), (torch.randn(1, 1, 8, 8),), "tiny", pipeline)
    compiled.save(out)
    for warning in compiled.warnings:
        print(f"  warning: {warning}")
    return xb.load_netlist(out)


def show(netlist: xb.Netlist) -> None:
    print(f"  pipeline recorded in netlist.json: {netlist.doc.pipeline}")
    print(f"  provenance['idle-columns']: {json.dumps(netlist.doc.provenance['idle-columns'])}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="where the two netlists go (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)

        # 1. As an object: the default pipeline's passes, with ours inserted before place-tiles.
        passes = resolve_pipeline("default")
        at = next(i for i, p in enumerate(passes) if p.name == "place-tiles")
        passes.insert(at, IdleColumnsPass())
        print("1. inserted as an object")
        show(compile_and_save(passes, out / "object"))

        # 2. By name: register it, then write it into a textual pipeline (as --pipeline takes it).
        register_pass(IdleColumnsPass)
        text = ",".join(NAMED_PIPELINES["default"]) + ",idle-columns{warn-above=0.1}"
        print(f"2. by name: {text}")
        show(compile_and_save(text, out / "text"))


if __name__ == "__main__":
    main()
