"""Transposed convolution on crossbars: the sub-pixel decomposition against zero insertion.

The front end lowers ``nn.ConvTranspose2d`` by the sub-pixel decomposition
(:mod:`xbcompiler.frontend.rewrite_conv`). The alternative, zero insertion, spreads the input with
``s - 1`` zeros between pixels and runs a stride-1 convolution with the flipped kernel over it. Both
are compiled here with the semi-folded pipeline on isaac-like (and fully-folded), checked equal to the
torch layer, and compared with the cost report (docs/mapping.md, "Transposed and 3-D convolutions").
Run: ``python bench/bench_conv_transpose.py``.
"""

from __future__ import annotations

import argparse
import warnings

import torch
import torch.nn.functional as F
from common import report
from torch import nn

import xbcompiler as xb
from xbcompiler.report.costs import cost_report

#: Typical decoder layers: name -> (layer, input shape).
LAYERS = {
    "unet_2x2_s2": (lambda: nn.ConvTranspose2d(64, 32, 2, stride=2), (1, 64, 16, 16)),
    "dcgan_4x4_s2_p1": (lambda: nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), (1, 64, 16, 16)),
    "3x3_s2_p1_op1": (lambda: nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1), (1, 64, 16, 16)),
}


class ZeroInsertion(nn.Module):
    """``nn.ConvTranspose2d`` as zero insertion: the input spread by ``s``, padded, convolved with the flipped kernel."""

    def __init__(self, m: nn.ConvTranspose2d):
        super().__init__()
        (kh, kw), self.stride, (ph, pw), (dh, dw), (oh, ow) = m.kernel_size, m.stride, m.padding, m.dilation, \
            m.output_padding
        sh, sw = self.stride
        # after spreading, s - 1 zeros trail the last pixel: the right padding takes them off again
        self.pad = (dw * (kw - 1) - pw, dw * (kw - 1) - pw + ow - (sw - 1),
                    dh * (kh - 1) - ph, dh * (kh - 1) - ph + oh - (sh - 1))
        groups, c_in, c_out = m.groups, m.in_channels, m.out_channels
        self.conv = nn.Conv2d(c_in, c_out, (kh, kw), dilation=(dh, dw), groups=groups, bias=m.bias is not None)
        with torch.no_grad():
            w = m.weight.reshape(groups, c_in // groups, c_out // groups, kh, kw).transpose(1, 2)
            self.conv.weight.copy_(w.reshape(c_out, c_in // groups, kh, kw).flip(-1, -2))
            if m.bias is not None:
                self.conv.bias.copy_(m.bias)

    def forward(self, x):
        b, c, h, w = x.shape
        sh, sw = self.stride
        spread = F.pad(x.reshape(b, c, h, 1, w, 1), (0, sw - 1, 0, 0, 0, sh - 1)).reshape(b, c, h * sh, w * sw)
        return self.conv(F.pad(spread, self.pad))


def costs(model: nn.Module, x: torch.Tensor, pipeline: str) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        compiled = xb.compile(model, (x,), "isaac-like", pipeline, frontend="export")
    assert xb.verify(compiled, model, (x,)).ok
    total = cost_report(compiled.netlist).totals
    return {k: total[k] for k in ("crossbars", "phases", "adc_conversions", "energy_pj", "latency_ns")}


def compare(name: str, pipeline: str) -> dict:
    """Cost totals of both lowerings of layer ``name`` under ``pipeline``, after an equality check."""
    build, shape = LAYERS[name]
    torch.manual_seed(0)
    layer = build().eval()
    x = torch.randn(*shape)
    zero = ZeroInsertion(layer).eval()
    with torch.no_grad():
        assert torch.allclose(zero(x), layer(x), atol=1e-5)
    return {"sub_pixel": costs(layer, x, pipeline), "zero_insertion": costs(zero, x, pipeline)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", choices=sorted(LAYERS), action="append")
    parser.add_argument("--pipeline", choices=("semi-folded", "fully-folded", "default"), action="append")
    args = parser.parse_args()
    for name in args.layer or list(LAYERS):
        for pipeline in args.pipeline or ["semi-folded", "fully-folded"]:
            got = compare(name, pipeline)
            flat = {f"{way}_{k}": v for way, values in got.items() for k, v in values.items()}
            report(f"conv_transpose_{name}_{pipeline.replace('-', '_')}", **flat)


if __name__ == "__main__":
    main()
