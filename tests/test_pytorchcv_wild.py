"""pytorchcv architectures that once failed to compile, each for a reason of its own: they compile through
``torch.export`` and verify bit-exactly in integer mode (random init, nothing downloaded).

- MixNet-S: ``nn.ReLU(inplace=True)`` feeding a residual add (in-place ATen operators);
- ChannelNet: a ``.view`` after its channel-wise ``nn.Conv3d`` (the rewrite's output must be contiguous);
- X-DenseNet: convolution weights multiplied by a fixed mask in ``forward``;
- 1-bit WRN: convolution weights binarised in ``forward`` (``sign(w)`` times a scale);
- DiCENet: ``nn.PReLU`` activations (a host operator with learned slopes);
- ENet (segmentation): max-pool indices, ``nn.MaxUnpool2d`` and channels padded with ``torch.zeros``.
"""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch

import xbcompiler as xb

CASES = {  # name: (pytorchcv module, factory, input side, integer mode's float tolerance)
    "mixnet_s": ("mixnet", "mixnet_s", 32, "auto"),
    "channelnet": ("channelnet", "channelnet", 32, "auto"),
    "xdensenet40": ("xdensenet_cifar", "xdensenet40_2_k24_bc_cifar10", 32, "auto"),
    "wrn1bit": ("wrn1bit_cifar", "wrn20_10_1bit_cifar10", 32, "auto"),
    "dicenet": ("dicenet", "dicenet_wd5", 32, "auto"),
    # ENet unpools at the quantised maxima: a tie broken otherwise moves a value, so twice the margin
    "enet": ("enet", "enet_cityscapes", 32, 0.1),
}


def build(module: str, factory: str, side: int) -> torch.nn.Module:
    torch.manual_seed(0)
    fn = getattr(importlib.import_module(f"pytorchcv.models.{module}"), factory)
    model = fn(pretrained=False, in_size=(side, side), num_classes=10)
    if hasattr(getattr(model, "features", None), "final_pool"):  # ImageNet models pool a fixed 7x7 map
        model.features.final_pool = torch.nn.AdaptiveAvgPool2d(1)
    return model.eval()


def compile_quiet(model, x, **kwargs) -> xb.CompiledModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        return xb.compile(model, (x,), "isaac-like", **kwargs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_compiles_through_export_verifies_and_is_bit_exact_in_integer_mode(name):
    module, factory, side, tolerance = CASES[name]
    model = build(module, factory, side)
    x = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    compiled = compile_quiet(model, x)
    assert compiled.netlist.doc.provenance["frontend"]["used"] == "export"
    weights = [p for p in model.parameters() if p.dim() >= 2 and p.requires_grad]  # X-DenseNet's masks are not
    assert len(compiled.netlist.layers) == len(weights)  # every weight tensor on crossbars, none on the host
    report = xb.verify(compiled, model, (x,))
    assert report.ok and report.max_rel <= 1e-4, report.to_dict()
    # the calibration covers the checked input, so the quantised output also stays near the float one
    calibration = torch.cat([x, torch.rand(4, 3, side, side, generator=torch.Generator().manual_seed(1))])
    report = xb.verify(compile_quiet(model, x, calibration=calibration), model, (x,), float_tolerance=tolerance)
    assert report.mode == "integer" and report.ok, report.to_dict()
    assert sum(c.mismatches for c in report.layers) == 0
