"""FORMS fragments of a weight tensor and the exact projection onto "one sign per fragment" (background §4.1).

A crossbar layer's matrix has one row per input ``(c, dy, dx)`` and one column per output channel; a
weight tensor ``[C_out, C_in/groups, *kernel]`` (or ``[N, F]``) flattened to ``[C_out, K]`` holds column
``o`` of that matrix in row ``o``, its entries in matrix-row order. A *fragment* is ``fragment_rows``
consecutive matrix rows of one column, ``[j F, (j + 1) F)`` (the last one may be shorter): the rows
one ADC read of a polarized crossbar sums (docs/polarize.md). A fragment is *polarized* when its
nonzero entries share one sign.

The projection keeps, in every fragment ``v``, the sign with the larger energy (``E+ = sum max(v, 0)^2``
against ``E- = sum min(v, 0)^2``, ties to the positive sign) and zeroes the entries of the other: the
nearest polarized tensor in the Euclidean norm, since zeroing one sign costs exactly that sign's energy.
"""

from __future__ import annotations

import torch


def fragments(weight: torch.Tensor, fragment_rows: int) -> torch.Tensor:
    """``[C_out, n_fragments, fragment_rows]``: the tensor's columns cut into fragments (zero-padded)."""
    if fragment_rows < 1:
        raise ValueError(f"fragment_rows must be >= 1, got {fragment_rows}")
    flat = weight.reshape(weight.shape[0], -1) if weight.dim() > 1 else weight.reshape(1, -1)
    pad = (-flat.shape[1]) % fragment_rows
    if pad:
        flat = torch.cat([flat, flat.new_zeros((flat.shape[0], pad))], dim=1)
    return flat.reshape(flat.shape[0], -1, fragment_rows)


def _unfragment(frags: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    k = like[0].numel() if like.dim() > 1 else like.numel()
    return frags.reshape(frags.shape[0], -1)[:, :k].reshape(like.shape)


def fragment_signs(weight: torch.Tensor, fragment_rows: int) -> torch.Tensor:
    """``[C_out, n_fragments]`` int8: the sign the projection keeps in each fragment (+1 on ties, all-zero ones)."""
    v = fragments(weight.detach(), fragment_rows).double()
    positive = v.clamp(min=0).pow(2).sum(-1)
    negative = v.clamp(max=0).pow(2).sum(-1)
    return torch.where(negative > positive, -1, 1).to(torch.int8)


def sign_clamp(weight: torch.Tensor, signs: torch.Tensor, fragment_rows: int) -> torch.Tensor:
    """``weight`` with every entry of the wrong sign for its fragment set to 0 (a new tensor)."""
    v = fragments(weight, fragment_rows)
    s = signs.to(v.dtype)[..., None]
    return _unfragment(torch.where(v * s < 0, torch.zeros_like(v), v), weight)


def project(weight: torch.Tensor, fragment_rows: int) -> torch.Tensor:
    """The nearest tensor (Euclidean) whose every fragment is polarized (a new tensor)."""
    return sign_clamp(weight, fragment_signs(weight, fragment_rows), fragment_rows)


def violations(weight: torch.Tensor, fragment_rows: int) -> int:
    """Fragments holding both a positive and a negative entry."""
    v = fragments(weight.detach(), fragment_rows)
    return int(((v > 0).any(-1) & (v < 0).any(-1)).sum())


def fragment_count(weight: torch.Tensor, fragment_rows: int) -> int:
    """Fragments of the tensor (columns times fragments per column)."""
    rows = weight[0].numel() if weight.dim() > 1 else weight.numel()
    return (weight.shape[0] if weight.dim() > 1 else 1) * -(-rows // fragment_rows)
