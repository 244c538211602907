"""The fast path of integer mode: lossy row blocks as grouped convolutions over stacked DAC cycles.

It computes exactly what the per-read path computes (every (cycle, plane) read of every column goes
through its ADC), with these shortcuts, each proven equal to the per-read path by the tests:

- row blocks with the same channel span and column count run as one grouped convolution;
- all DAC cycles of a block run in one convolution (digits stacked along the batch) and all its
  (plane, column) reads as output channels, channels-last;
- several reads share one float32 lane: when every read of a group is below ``2**f``, ``24 // f``
  reads are packed as ``I_0 + 2**f I_1 + 2**2f I_2 + ...`` (weights ``level_0 + 2**f level_1 + ...``),
  a sum of non-negative integers below ``2**24`` and so exact; unpacking is exact integer arithmetic;
- a cycle whose digits are all zero on a group's input channels gives reads of 0, ADC codes 0 and
  adds nothing: it is skipped;
- the batch is cut into chunks so that the read tensors stay cache-sized.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .integer_exact import EXACT32, exact_dtype

#: Reads (cycles x batch x planes x columns x pixels) computed at once, at most.
CHUNK_READS = 1 << 21
#: Bits of a float32 lane that hold exact integers.
LANE_BITS = 24


@dataclass
class Block:
    """One row block's lossy columns prepared for execution."""

    group: int
    c_lo: int
    c_hi: int
    cols: np.ndarray  # lossy columns (local to the conv group)
    stored: torch.Tensor  # [P, n, C, kh, kw] stored cell levels (flipped where flagged)
    mask: torch.Tensor  # [1, C, kh, kw] 1 on the block's rows
    step: torch.Tensor  # [n] ADC step bits
    top: torch.Tensor  # [n] ADC top code 2**bits - 1
    coef: torch.Tensor  # [P, n] float64: sign * 2**shift * (-1 if flipped)
    sum_coef: torch.Tensor  # [n] float64: coefficient of the block's input sum (flip recovery, weight offset)
    max_read: int  # the largest read any column can produce


@dataclass
class BlockGroup:
    """Lossy row blocks of equal channel span and column count, run as one grouped convolution.

    Member ``g`` reads input channels ``channels[g*C:(g+1)*C]``; its ``R = P * n`` reads per pixel
    (plane-major) are packed ``fields`` to a lane in ``lanes`` lanes, read ``r`` in field ``r // lanes``
    of lane ``r % lanes``; column ``j`` of its result adds into layer output column ``out_cols[g*n + j]``.
    """

    members: int
    columns: int
    fields: int
    field_bits: int
    lanes: int
    channels: torch.Tensor  # [G*C] input channels
    spans: list[tuple[int, int]] | None  # each member's channel range when there are several members
    out_cols: torch.Tensor  # [G*n] layer output columns
    weight: torch.Tensor  # [G*lanes, C, kh, kw] packed stored levels (channels-last)
    mask: torch.Tensor | None  # [G, C, kh, kw] the block's rows; None when no input sum is needed
    sum_coef: torch.Tensor  # [G, n]
    step: float | None  # the ADC step (log2) when every read shares it, else None
    inv_step: torch.Tensor  # [fields, 1, G, lanes] 2**-step per read
    top: torch.Tensor | None  # [fields, 1, G, lanes] top code; None when no read can saturate
    combine: torch.Tensor  # [G, fields, lanes, n]: sign * 2**shift * 2**step * (-1 if flipped) of each read
    read_dtype: torch.dtype  # float32 while every lane stays below 2**24
    sum_dtype: torch.dtype  # float32 while the sums over cycles and planes stay below 2**24


def _group(layer, members: list[Block]) -> BlockGroup:
    enc, dev = layer.enc, layer.device
    G, P, n = len(members), enc.planes, len(members[0].cols)
    R = P * n
    max_read = max(b.max_read for b in members)
    field_bits = max(1, int(max_read).bit_length())
    fields = max(1, LANE_BITS // field_bits) if max_read < EXACT32 else 1
    fields = min(fields, R)
    lanes = -(-R // fields)
    stored = torch.stack([b.stored for b in members]).flatten(1, 2)  # [G, R, C, kh, kw]
    padded = stored.new_zeros((G, fields * lanes, *stored.shape[2:]))
    padded[:, :R] = stored
    scale = torch.tensor([2.0 ** (field_bits * f) for f in range(fields)], dtype=torch.float64)
    packed = (padded.view(G, fields, lanes, *stored.shape[2:]).double() * scale.view(1, -1, 1, 1, 1, 1)).sum(1)
    step = torch.stack([b.step for b in members])  # [G, n]
    top = torch.stack([b.top for b in members])
    largest = torch.floor(max_read * torch.exp2(-step) + 0.5)  # the largest code a read can round to

    def per_read(v: torch.Tensor, fill: float) -> torch.Tensor:  # [G, n] -> [fields, 1, G, lanes] (plane-major)
        out = v.new_full((G, fields * lanes), fill)
        out[:, :R] = v[:, None, :].expand(G, P, n).reshape(G, R)
        return out.view(G, fields, lanes).permute(1, 0, 2).unsqueeze(1).contiguous()

    coef = torch.stack([b.coef for b in members]) * torch.exp2(step)[:, None, :]  # [G, P, n]
    combine = torch.zeros((G, fields * lanes, n), dtype=torch.float64)
    combine[:, :R] = (coef[..., None] * torch.eye(n, dtype=torch.float64)).reshape(G, R, n)
    sum_coef = torch.stack([b.sum_coef for b in members])
    codes_sum = sum(abs(w) for w, _, _ in enc.cycles) * float(torch.minimum(largest, top).max())
    bound = codes_sum * float(coef.abs().sum(1).max()) + float(sum_coef.abs().max()) * layer.driven_max * \
        float(members[0].mask.sum())
    read_dtype = exact_dtype(max_read if fields == 1 else 2.0 ** (field_bits * fields) - 1)
    sum_dtype = exact_dtype(bound)
    uniform = bool((step == step.flatten()[0]).all())
    return BlockGroup(
        G, n, fields, field_bits, lanes, torch.cat([torch.arange(b.c_lo, b.c_hi) for b in members]).to(dev),
        [(b.c_lo, b.c_hi) for b in members] if G > 1 else None,
        torch.cat([torch.from_numpy(b.group * layer.n_g + b.cols) for b in members]).to(dev),
        packed.flatten(0, 1).to(dev, read_dtype).contiguous(memory_format=torch.channels_last),
        torch.cat([b.mask for b in members]).to(sum_dtype) if bool(sum_coef.any()) else None,
        sum_coef.to(dev, sum_dtype), float(step.flatten()[0]) if uniform else None,
        per_read(torch.exp2(-step), 1.0).to(dev, read_dtype),
        None if bool((largest <= top).all()) else per_read(top, 0.0).to(dev, read_dtype),
        combine.view(G, fields, lanes, n).to(dev, sum_dtype), read_dtype, sum_dtype)


def _channels(x: torch.Tensor, dim: int, channels: torch.Tensor) -> torch.Tensor:
    """``x.index_select(dim, channels)``, a view when the channels are one contiguous range."""
    lo = int(channels[0])
    if bool((channels == torch.arange(lo, lo + len(channels), device=channels.device)).all()):
        return x.narrow(dim, lo, len(channels))
    return x.index_select(dim, channels)


class FastLossy:
    """The lossy row blocks of one layer, grouped; call it on the padded driven input."""

    def __init__(self, layer, blocks: list[Block]):
        self.layer = layer
        by_shape: dict[tuple[int, int], list[Block]] = {}
        for blk in blocks:
            by_shape.setdefault((blk.c_hi - blk.c_lo, len(blk.cols)), []).append(blk)
        self.groups = [_group(layer, members) for _, members in sorted(by_shape.items())]
        self.rounding = layer.q.adc.rounding
        self.cycle_weights = torch.tensor([w for w, _, _ in layer.enc.cycles], dtype=torch.float64)

    def __call__(self, driven: torch.Tensor, acc_dtype: torch.dtype) -> torch.Tensor:
        """The lossy blocks' partial sums, ``[B, N, H', W']`` (channels-last) in ``acc_dtype``."""
        layer = self.layer
        hw = layer.out_hw(driven, padded=True)
        out = driven.new_zeros((driven.shape[0], hw[0] * hw[1], layer.n_out), dtype=acc_dtype)
        digits = layer.digits(driven)  # [T, B, C, H, W]
        for grp in self.groups:
            part = self._reads(grp, digits, hw)  # [B, H'W', G, n]
            if grp.mask is not None:
                sums = layer.conv(_channels(driven, 1, grp.channels).to(grp.sum_dtype), grp.mask, grp.members,
                                  padded=True)
                part += grp.sum_coef * sums.flatten(2).transpose(1, 2)[..., None]
            out.index_add_(2, grp.out_cols, part.flatten(2).to(acc_dtype))
        return out.view(out.shape[0], *hw, -1).permute(0, 3, 1, 2)

    def _reads(self, grp: BlockGroup, digits: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Shift-and-add of every ADC-converted read of a group: ``[B, H'W', G, n]`` in ``grp.sum_dtype``."""
        layer = self.layer
        T, B = digits.shape[:2]
        G, n, reads_per = grp.members, grp.columns, grp.fields * grp.lanes
        pixels = hw[0] * hw[1]
        chunk = max(1, CHUNK_READS // max(1, T * G * reads_per * pixels))
        out = torch.zeros((B, pixels, G, n), dtype=grp.sum_dtype, device=digits.device)
        w_t = self.cycle_weights.to(grp.sum_dtype)
        for b0 in range(0, B, chunk):
            d = digits[:, b0:b0 + chunk]
            b = d.shape[1]
            live = d.flatten(1).amax(1).nonzero().flatten()  # cycles with a nonzero digit
            if len(live) == 0:
                continue
            x = torch.empty((len(live) * b, len(grp.channels), *d.shape[3:]), dtype=grp.read_dtype, device=d.device,
                            memory_format=torch.channels_last)
            src = d if len(live) == T else d[live]
            if grp.spans is None:
                x.copy_(_channels(src, 2, grp.channels).flatten(0, 1))
            else:  # one channel range per member: copy each into its slot (no gather)
                slots = x.view(len(live), b, G, -1, *x.shape[2:])
                for g, (lo, hi) in enumerate(grp.spans):
                    slots[:, :, g].copy_(src[:, :, lo:hi])
            lanes = layer.conv(x, grp.weight, G, padded=True).permute(0, 2, 3, 1)  # contiguous channels-last
            codes = self._codes(grp, lanes.reshape(len(live), b * pixels * G * grp.lanes))  # [T', F, b*HW*G*L]
            summed = (w_t[live] @ codes.to(grp.sum_dtype).view(len(live), -1)).view(grp.fields, b * pixels, G,
                                                                                     grp.lanes)
            out[b0:b0 + b] = torch.einsum("fxgl,gfln->xgn", summed, grp.combine).view(b, pixels, G, n)
        return out

    def _codes(self, grp: BlockGroup, lanes: torch.Tensor) -> torch.Tensor:
        """ADC codes ``[T', fields, rest]`` of packed lanes ``[T', rest]``, field by field, in place where possible."""
        t, rest = lanes.shape
        if grp.fields == 1:
            codes = lanes.view(t, 1, rest)
        else:  # lane = I_0 + 2**f I_1 + ...; peel the fields off from the top, each exactly
            codes = torch.empty((t, grp.fields, rest), dtype=lanes.dtype, device=lanes.device)
            remaining = lanes
            for f in range(grp.fields - 1, 0, -1):
                unit, field = 2.0 ** (grp.field_bits * f), codes[:, f]
                torch.mul(remaining, 1.0 / unit, out=field).floor_()
                remaining = torch.add(remaining, field, alpha=-unit, out=codes[:, 0])
        if grp.step is None:
            codes = codes.view(t, grp.fields, -1, grp.members, grp.lanes).mul_(grp.inv_step).view(t, grp.fields, rest)
        elif grp.step:
            codes = codes.mul_(2.0 ** -grp.step)
        codes = codes.round_() if self.rounding == "nearest-even" else codes.floor_()
        if grp.top is not None:
            view = codes.view(t, grp.fields, -1, grp.members, grp.lanes)
            torch.minimum(view, grp.top, out=view)
        return codes


def group_blocks(layer, blocks: list[Block]) -> FastLossy:
    return FastLossy(layer, blocks)
