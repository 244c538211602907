"""Exact rewrites of ``nn.Conv3d`` and ``nn.ConvTranspose1d/2d/3d`` into crossbar layers and host ops.

Both front ends see only ``nn.Conv1d``/``nn.Conv2d`` and allow-listed host operators after these
rewrites (docs/mapping.md, "Transposed and 3-D convolutions"):

* ``nn.Conv3d`` -> :class:`DepthPlanes`: the host pads the depth axis, stacks the ``k_d`` depth
  slices each output plane reads into the channels (``C_in k_d`` channels) and folds the output
  depth into the batch; one ``nn.Conv2d`` (``<path>.planes``, weight ``W.reshape(C_out, C_in k_d /
  G, k_h, k_w)``) computes every output plane, and the host unfolds the batch again. Its im2col
  matrix is the 3-D convolution's own (``C_in k_d k_h k_w / G`` rows, ``C_out`` columns).
* ``nn.ConvTranspose{1,2,3}d`` with stride ``s`` -> :class:`SubPixel`: the sub-pixel decomposition.
  Output position ``Y = q s + r - p`` of phase ``r`` only receives kernel taps ``t`` with
  ``t d = r (mod s)``, from input ``q - (t d - r) / s``: a stride-1 convolution per phase. All
  ``prod(s)`` phases are one stride-1 convolution (``<path>.phases``) with ``C_out prod(s)`` output
  channels whose kernels are the phases' taps of the flipped, transposed weight; the host
  interleaves the phases (a reshape, a permute and flattens: a pixel shuffle) and crops the
  padding. The 3-D phase convolution is itself rewritten by :func:`conv3d` (``<path>.phases.planes``).

Each rewritten module computes exactly what the original computes (every weight copied, no
arithmetic on weights), so ideal mode matches to float rounding and integer mode quantises the one
crossbar layer's input as it would any other's.
"""

from __future__ import annotations

import math
import os
import traceback
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..diagnostics import CompileError, Location

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _pairs(pad: list[tuple[int, int]]) -> list[int] | None:
    """``F.pad`` order (last dimension first) of per-dimension ``(before, after)``, or None when all 0."""
    flat = [v for before, after in reversed(pad) for v in (before, after)]
    return flat if any(flat) else None


def _like(module: nn.Module) -> dict:
    """The device and dtype of ``module``'s weight, for the layers built from it."""
    return {"device": module.weight.device, "dtype": module.weight.dtype}


class DepthPlanes(nn.Module):
    """A 3-D convolution as one ``nn.Conv2d`` over depth slices stacked into channels (:func:`conv3d`).

    ``pad`` is the host ``F.pad`` of the 5-D input (always the depth padding; all padding when the
    mode is not ``zeros`` or the height/width padding is asymmetric); ``depth`` is the depth kernel,
    stride and dilation ``(k_d, s_d, d_d)``.
    """

    def __init__(self, planes: nn.Conv2d, pad: list[int] | None, mode: str, depth: tuple[int, int, int]):
        super().__init__()
        self.planes = planes
        self.pad, self.mode, self.depth = pad, mode, depth

    def forward(self, x):  # [B, C, D, H, W]
        if self.pad is not None:
            x = F.pad(x, self.pad, mode=self.mode)
        k, s, d = self.depth
        span = d * (k - 1)  # the depth slice read by output plane z starts at z * s + j * d
        slices = [x[:, :, j * d:(j * d - span) or None:s] for j in range(k)]  # k x [B, C, D', H, W]
        y = torch.stack(slices, 3).permute(0, 2, 1, 3, 4, 5)  # [B, D', C, k, H, W]
        y = self.planes(y.flatten(0, 1).flatten(1, 2))  # [B D', C_out, H', W']
        y = y.reshape(x.shape[0], -1, self.planes.out_channels, y.shape[2], y.shape[3])
        return y.permute(0, 2, 1, 3, 4).contiguous()  # [B, C_out, D', H', W'], viewable as nn.Conv3d's is


def conv3d(module: nn.Conv3d) -> DepthPlanes:
    """The :class:`DepthPlanes` form of ``module`` (same parameters, same outputs)."""
    k, groups = module.kernel_size, module.groups
    if isinstance(module.padding, str):  # "same" / "valid": torch's own split, extra on the right
        flat = module._reversed_padding_repeated_twice
        pad = [(flat[4 - 2 * i], flat[5 - 2 * i]) for i in range(3)]
    else:
        pad = [(p, p) for p in module.padding]
    if module.padding_mode == "zeros" and pad[1][0] == pad[1][1] and pad[2][0] == pad[2][1]:
        inner, host, mode = (pad[1][0], pad[2][0]), [pad[0], (0, 0), (0, 0)], "constant"
    else:
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        inner, host = (0, 0), pad
    planes = nn.Conv2d(module.in_channels * k[0], module.out_channels, k[1:], stride=module.stride[1:],
                       padding=inner, dilation=module.dilation[1:], groups=groups, bias=module.bias is not None,
                       **_like(module))
    with torch.no_grad():
        planes.weight.copy_(module.weight.reshape(planes.weight.shape))  # channel c k_d + j: weight [o, c, j]
        if module.bias is not None:
            planes.bias.copy_(module.bias)
    return DepthPlanes(planes, _pairs(host), mode, (k[0], module.stride[0], module.dilation[0]))


class SubPixel(nn.Module):
    """A transposed convolution as one stride-1 convolution of all its phases, a shuffle and a crop.

    ``phases`` maps ``[B, C_in, *X]`` to ``[B, C_out prod(s), *Q]`` (channel ``o prod(s) + r``: output
    channel ``o``, phase ``r`` row-major over the dimensions); ``pad`` is a host ``F.pad`` applied
    first (or None); ``crop`` the ``(start, end)`` kept of every interleaved dimension (``end`` <= 0
    counts from the end).
    """

    def __init__(self, phases: nn.Module, out_channels: int, stride: tuple[int, ...], pad: list[int] | None,
                 crop: tuple[tuple[int, int], ...], original: str):
        super().__init__()
        self.phases = phases
        self.out_channels, self.stride, self.pad, self.crop = out_channels, stride, pad, crop
        self.original = original  # the rewritten module's repr, for diagnostics

    def forward(self, x, output_size=None):
        if output_size is not None:  # the size would depend on traced values: not a fixed crop
            raise CompileError("XB103", f"{self.original} called with output_size={list(output_size)} is not "
                                        "supported on crossbars",
                               hint="construct the layer with the output_padding that gives that size "
                                    "(output size = (H - 1) * stride - 2 * padding + dilation * (kernel - 1) "
                                    "+ output_padding + 1) and call it without output_size",
                               location=Location(source=_caller()))
        if self.pad is not None:
            x = F.pad(x, self.pad)
        y = self.phases(x)
        n = len(self.stride)
        if math.prod(self.stride) > 1:  # [B, C_out, *s, *Q] -> [B, C_out, Q_1, s_1, ...] -> [B, C_out, Q_1 s_1, ...]
            y = y.reshape(-1, self.out_channels, *self.stride, *[y.shape[2 + i] for i in range(n)])
            y = y.permute(0, 1, *[d for i in range(n) for d in (2 + n + i, 2 + i)])
            for i in range(n):
                y = y.flatten(2 + i, 3 + i)
        if any(start or end for start, end in self.crop):
            y = y[(slice(None), slice(None), *[slice(start, end or None) for start, end in self.crop])]
        return y.contiguous()  # viewable as the transposed convolution's output is


def _caller() -> str | None:
    """The innermost frame of the running call outside torch and this package (the user's call)."""
    skip = (os.path.dirname(torch.__file__), os.path.dirname(os.path.dirname(__file__)))
    for frame in reversed(traceback.extract_stack()):
        if not frame.filename.startswith(skip):
            return f'File "{frame.filename}", line {frame.lineno}, in {frame.name}: {(frame.line or "").strip()}'
    return None


def conv_transpose(module: nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d) -> SubPixel:
    """The :class:`SubPixel` form of ``module`` (same parameters, same outputs)."""
    n = module.weight.dim() - 2
    k, s, p, d, op = module.kernel_size, module.stride, module.padding, module.dilation, module.output_padding
    plans = [_phase_plan(k[i], s[i], p[i], d[i], op[i]) for i in range(n)]
    groups, c_in, c_out = module.groups, module.in_channels, module.out_channels
    # weight [C_in, C_out/G, *k] -> [C_out prod(s), C_in/G, *k'] through one 0/1 selection per dimension
    t, r, j = _LETTERS[:n], _LETTERS[n:2 * n], _LETTERS[2 * n:3 * n]
    spec = f"xyz{t}," + ",".join(f"{r[i]}{j[i]}{t[i]}" for i in range(n)) + f"->xz{r}y{j}"
    w = module.weight.detach().reshape(groups, c_in // groups, c_out // groups, *k)
    selections = [plan.selection.to(w.dtype) for plan in plans]
    weight = torch.einsum(spec, w, *selections).reshape(c_out * math.prod(s), c_in // groups,
                                                         *[plan.taps for plan in plans])
    inner = [max(0, min(plan.left, plan.right)) for plan in plans]
    host = [(plan.left - i, plan.right - i) for plan, i in zip(plans, inner)]
    cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[n - 1]
    phases = cls(c_in, c_out * math.prod(s), tuple(plan.taps for plan in plans), padding=tuple(inner),
                 dilation=tuple(plan.dilation for plan in plans), groups=groups, bias=module.bias is not None,
                 **_like(module))
    with torch.no_grad():
        phases.weight.copy_(weight)
        if module.bias is not None:
            phases.bias.copy_(module.bias.repeat_interleave(math.prod(s)))
    if n == 3:
        phases = conv3d(phases)
    return SubPixel(phases, c_out, tuple(s), _pairs(host), tuple((plan.start, -plan.trailing) for plan in plans),
                    repr(module))


@dataclass(frozen=True)
class _PhasePlan:
    """One dimension of the sub-pixel decomposition: the phase convolution and the crop.

    ``selection[r, j, t]`` is 1 where tap ``t`` of the transposed kernel is position ``j`` of phase
    ``r``'s kernel (``taps`` positions, dilation ``dilation``); ``left``/``right`` pad the input,
    ``start``/``trailing`` are cropped off the interleaved output.
    """

    selection: torch.Tensor
    taps: int
    dilation: int
    left: int
    right: int
    start: int
    trailing: int


def _phase_plan(k: int, s: int, p: int, d: int, op: int) -> _PhasePlan:
    """Kernel ``k``, stride ``s``, padding ``p``, dilation ``d``, output padding ``op`` of one dimension.

    Phase ``r`` of the uncropped output ``Y_full = q s + r`` adds tap ``t`` (``t d = r mod s``) of
    input ``q - m``, ``m = (t d - r) / s``. Over all phases the offsets ``m`` lie on ``m_lo + D u``,
    so one stride-1 convolution of ``(m_hi - m_lo) / D + 1`` positions and dilation ``D`` holds every
    phase's taps, flipped (position ``(m_hi - m) / D``). It computes ``q`` from ``floor(p / s)`` to
    the last ``q`` the output reaches: the output is ``(H - 1) s + c`` long, ``c = d (k - 1) + op + 1 - p``.
    """
    offsets = {(t, r): (t * d - r) // s for t in range(k) for r in range(s) if (t * d - r) % s == 0}
    ms = sorted(set(offsets.values()))
    lo, hi = ms[0], ms[-1]
    dilation = math.gcd(*[m - lo for m in ms]) or 1
    taps = (hi - lo) // dilation + 1
    selection = torch.zeros(s, taps, k)
    for (t, r), m in offsets.items():
        selection[r, (hi - m) // dilation, t] = 1.0
    c = d * (k - 1) + op + 1 - p
    return _PhasePlan(selection, taps, dilation, left=hi - p // s, right=-(-c // s) - 1 - lo, start=p % s,
                      trailing=(p - d * (k - 1) - op - 1) % s)


#: Module types rewritten here (merged into :data:`xbcompiler.frontend.rewrites.REWRITES`).
CONV_REWRITES = {nn.Conv3d: conv3d, nn.ConvTranspose1d: conv_transpose, nn.ConvTranspose2d: conv_transpose,
                 nn.ConvTranspose3d: conv_transpose}
