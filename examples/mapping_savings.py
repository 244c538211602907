"""Network-level savings of the semi-folded mapping on VGG-16 and ResNet-18 (ImageNet shapes).

Traces each model for its layer shapes only (no weights are copied or placed) and evaluates the
three strategies with the cost model on a 256x256 crossbar with one physical column per weight
(background §2.3's convention) and on prime-like. Run: ``python examples/mapping_savings.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import xbcompiler as xb
from tests.models import IMAGENET_MODELS
from xbcompiler.mapping.plan import ArraySpec
from xbcompiler.report.compare import compare, model_shapes

#: 256x256 with one 8-bit cell per offset-encoded 8-bit weight: m_c = 1.
SPEC_256 = {"crossbar.rows": 256, "crossbar.cols": 256, "crossbar.cell_bits": 8, "precision.weight_bits": 8,
            "encoding.signed": "offset"}


def savings(models=("vgg16_imagenet", "resnet18_imagenet")) -> dict:
    targets = {"256x256 m_c=1": xb.load_target("prime-like", SPEC_256), "prime-like": xb.load_target("prime-like")}
    out = {}
    for name in models:
        shapes = model_shapes(IMAGENET_MODELS[name].factory(), (torch.randn(1, 3, 224, 224),))
        for label, target in targets.items():
            out[(name, label)] = compare(shapes, ArraySpec.of(target))
    return out


def main() -> None:
    for (name, label), c in savings().items():
        t = c.to_dict()["totals"]
        print(f"{name:18s} {label:14s} crossbars ff/semi/unf {t['fully-folded']['crossbars']}/"
              f"{t['semi-folded']['crossbars']}/{t['fully-unfolded']['crossbars']}  phases ff/semi "
              f"{t['fully-folded']['phases']}/{t['semi-folded']['phases']}  -> crossbar saving vs fully-unfolded "
              f"{c.crossbar_saving:.1f}x, phase saving vs fully-folded {c.phase_saving:.1f}x "
              f"(period {c.period_saving:.0f}x)")


if __name__ == "__main__":
    main()
