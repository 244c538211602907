"""Shared cases of the block-Toeplitz mapping tests: single layers and an independent schedule replay."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _seeded(module: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for p in module.parameters():
        nn.init.uniform_(p, -1.0, 1.0)
    return module.eval()


#: name -> (module factory, input shape with batch): stride 2 on odd sizes, dilation, grouped and
#: depthwise kernels, non-square kernels (kernel-row splits on 16-row crossbars), channel tails,
#: Conv1d and a Linear over token vectors.
SINGLE_LAYERS = {
    "stride2_odd": (lambda: nn.Conv2d(5, 7, 3, stride=2, padding=1), (2, 5, 11, 13)),
    "dilation2": (lambda: nn.Conv2d(4, 6, 3, padding=2, dilation=2), (2, 4, 9, 10)),
    "depthwise": (lambda: nn.Conv2d(6, 6, 3, padding=1, groups=6), (2, 6, 8, 9)),
    "grouped_stride_1x2": (lambda: nn.Conv2d(8, 12, 3, stride=(1, 2), padding=(0, 1), groups=4), (2, 8, 7, 11)),
    "kernel7x3": (lambda: nn.Conv2d(3, 5, (7, 3), padding=(3, 1)), (2, 3, 10, 7)),
    "pointwise_tails": (lambda: nn.Conv2d(40, 30, 1), (2, 40, 6, 5)),
    "conv1d": (lambda: nn.Conv1d(4, 6, 5, stride=2, padding=2), (2, 4, 17)),
    "linear_tokens": (lambda: nn.Linear(20, 9), (2, 5, 20)),
}


def single_layer(name: str) -> tuple[nn.Module, torch.Tensor]:
    factory, shape = SINGLE_LAYERS[name]
    return _seeded(nn.Sequential(factory())), torch.randn(*shape, generator=torch.Generator().manual_seed(1))


def replay_schedule(netlist, name: str, x: torch.Tensor) -> np.ndarray:
    """Run one layer phase by phase from its netlist records only, written from the background §2.2 rule.

    Phase ``y`` (or a row copy's ``out_row``) drives the row ``((c - c_lo) * n_dy + dy - dy_lo) * w_i
    + x_in`` of a block with ``X[c, y * s_h - p_h + dy * d_h, in_cols[0] + x_in]`` (zero outside the
    map); column ``(o - o_lo) * w_o + x_out`` adds into output pixel ``(o, y, pixels[0] + x_out)``, with
    ``in_cols[0] = slice * w_o * s_w - p_w`` and ``pixels = [slice * w_o, min(W_out, slice * w_o + w_o))``
    (``w_o``, ``w_i`` are the layer's). Each crossbar's cells are derived from its own placement records
    (``netlist.crossbar_cells``). Conv layers only; ``x`` is ``[C, H, W]`` (``[C, W]`` for Conv1d).
    """
    layer = netlist.layer(name)
    geo, sched = layer.geometry, layer.schedule
    x = x.numpy() if geo.kind == "conv2d" else x.numpy()[:, None]
    c_g = geo.in_channels // layer.groups
    o_g = geo.out_channels // layer.groups
    h_out, w_out = (layer.output_shape[1:] if geo.kind == "conv2d" else (1, layer.output_shape[1]))
    y_out = np.zeros((geo.out_channels, h_out, w_out))
    rows_rule = sched.rows
    w_o, w_i = layer.w_o, layer.w_i
    s_w, p_w = geo.stride[1], geo.padding[1]
    for xbar in netlist.layer_crossbars(layer):
        plane = netlist.crossbar_cells(xbar.id).astype(np.float64)
        out_rows = range(h_out) if sched.order == "row" else [xbar.blocks[0].out_row]
        for y in out_rows:
            v = np.zeros(plane.shape[0])
            for b in xbar.blocks:
                n_dy = b.kernel_rows[1] - b.kernel_rows[0]
                in_col0 = b.slice * w_o * s_w - p_w
                for c in range(*b.channels):
                    for dy in range(*b.kernel_rows):
                        row = y * rows_rule.stride - rows_rule.padding + dy * rows_rule.dilation
                        for x_in in range(w_i):
                            col = in_col0 + x_in
                            inside = 0 <= row < x.shape[1] and 0 <= col < x.shape[2]
                            r = b.at[0] + ((c - b.channels[0]) * n_dy + dy - b.kernel_rows[0]) * w_i + x_in
                            v[r] = x[b.group * c_g + c, row, col] if inside else 0.0
            out = v @ plane
            for b in xbar.blocks:
                px0 = b.slice * w_o
                for o in range(*b.out_channels):
                    for px in range(px0, min(w_out, px0 + w_o)):
                        x_out = px - px0
                        y_out[b.group * o_g + o, y, px] += out[b.at[1] + (o - b.out_channels[0]) * w_o + x_out]
    return y_out if geo.kind == "conv2d" else y_out[:, 0]
