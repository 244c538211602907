"""Device mode: the integer datapath of a programmed chip, every copy of every weight on its own cells.

A quantised layer runs as integer mode's ``per-read`` path does (one ADC conversion per row block,
DAC cycle, weight plane and column), with two differences (docs/faults.md):

- the level a cell contributes is its *effective* level, from its programmed state
  (:mod:`.programming`): with ``g0 = M / (on_off_ratio - 1)`` the off-state conductance in level units
  (0 for an ideal off state) and ``M = 2**cell_bits - 1``,
  ``L_eff = L * exp(theta) + g0 * (exp(theta) - 1)`` for a free cell (the reference column removes the
  nominal ``G_min``), ``0`` for a cell stuck at ``G_min`` and ``M`` for one stuck at ``G_max``. A weight's
  copies (the ``w_o * n_w`` copies of a block-Toeplitz layer, the ``H'`` row copies of fully-unfolded)
  are different cells, so each output pixel is computed with the copy the placement gives it;
- every analog read gets ``N(0, (read_noise * full_scale)^2)``, ``full_scale = rows * max_digit * M``
  of its row block, drawn per read from a generator seeded with (chip seed, layer position); the ADC
  then rounds and clips the read to ``[0, top]``.

The copies ``replicate-layers`` makes (``replica_sites``) are crossbars of their own: image ``b`` of a
batch runs on replica ``b % replicas``, as the pipeline hands images to the copies in turn.

With every non-ideality zero the effective levels are the stored levels and the reads are integers,
so device mode equals integer mode bit for bit (a test). Cells no record places are not modelled
(they hold no weight and their stuck state is ignored).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F

from ..diagnostics import CompileError, Location
from ..netlist.placement import block_cells, footprint, permutations, permuted, spatial
from ..netlist.types import Block, Layer
from .integer import IntegerLayer
from .integer_exact import exact_dtype
from .programming import ProgrammedChip, effective_levels
from .runtime import register_kernel

#: Elements of one chunk of reads (cycles x images x planes x columns x pixels) at most.
CHUNK_ELEMENTS = 1 << 25


class DeviceLayer(IntegerLayer):
    """One quantised layer on a programmed chip (see the module docstring)."""

    def __init__(self, chip: ProgrammedChip, layer: Layer, device: torch.device, index: int):
        super().__init__(chip, layer, device, path="per-read")
        self.chip, self.layer = chip, layer
        self.noise = chip.spec.read_noise
        self.noise_seed = int.from_bytes(hashlib.sha256(f"{chip.seed}/{index}/{layer.name}".encode()).digest()[:8],
                                         "little") >> 1
        crossbars = chip.layer_crossbars(layer)
        out_h, out_w = (1, 1) if self.kind == "linear" else spatial(layer)[1]
        per_pixel = any(b.out_row >= 0 for x in crossbars for b in x.blocks)
        if per_pixel and self.kind == "linear" and spatial(layer)[1][0] > 1:
            raise CompileError("XB531", f"layer '{layer.name}': device mode does not run linear layers whose rows of "
                                        "vectors have their own crossbar copies", location=Location(node=layer.name))
        #: which copy computes output pixel (y, x): one for all, one per output column, one per pixel
        self.copy_mode = "pixel" if per_pixel else "column" if any(x.blocks for x in crossbars) else "one"
        self.copies = {"pixel": out_h * out_w, "column": out_w, "one": 1}[self.copy_mode]
        where = self._cell_positions(crossbars, out_w)
        m_c = crossbars[0].physical_cols // crossbars[0].cols if crossbars else 1
        #: copies of the layer made by ``replicate-layers``: image ``b`` of a batch runs on replica ``b % replicas``
        self.replicas = len(crossbars[0].site_ids) if crossbars else 1
        if any(len(x.site_ids) != self.replicas for x in crossbars):
            raise CompileError("XB531", f"layer '{layer.name}': its crossbars have different numbers of replicas",
                               location=Location(node=layer.name))
        self.weights = []  # [replica][row block]
        for r in range(self.replicas):
            states = self._states([x.site_ids[r] for x in crossbars])
            self.weights.append([self._effective(i, blk, where, states, m_c) for i, blk in enumerate(self.blocks)])

    # --- preparation -----------------------------------------------------------------------------
    def _cell_positions(self, crossbars, out_w: int) -> np.ndarray:
        """``[G, Q, K_g, N_g, 3]`` int32: (crossbar position in the layer, cell row, logical column) of
        each copy of each weight on the chip; -1 where no record places it.

        Blocks of one shape share the placement formula's template (:func:`block_cells` of the block
        moved to the origin); each block adds its offsets to it, all blocks of a shape at once. Rows and
        columns of a crossbar ``remap-faults`` permuted are then moved to their word lines and columns.
        """
        layer = self.layer
        kh, kw = self.kernel
        where = np.full((layer.groups, self.copies, layer.matrix_rows, layer.n_g, 3), -1, dtype=np.int32)
        shapes: dict[tuple, list] = {}
        for k, x in enumerate(crossbars):
            for sl in x.slices:
                f = footprint(layer, sl)
                rows, cols = np.meshgrid(np.arange(*sl.rows), np.arange(*sl.cols), indexing="ij")
                where[sl.group, 0, rows, cols] = np.stack(
                    [np.full(rows.shape, k), rows - sl.rows[0] + f.r0, cols - sl.cols[0] + f.c0], axis=-1)
            for b in x.blocks:
                size = (b.channels[1] - b.channels[0], b.kernel_rows[1] - b.kernel_rows[0],
                        b.out_channels[1] - b.out_channels[0])
                shapes.setdefault(size, []).append(
                    (k, b.group, b.at[0], b.at[1], (b.channels[0] * kh + b.kernel_rows[0]) * kw, b.out_channels[0],
                     b.slice, b.out_row))
        for (n_c, n_dy, n_o), records in shapes.items():
            origin = Block(channels=(0, n_c), kernel_rows=(0, n_dy), out_channels=(0, n_o))
            row, col, m_row, m_col = block_cells(layer, origin)
            xo = (np.arange(row.size) // n_o) % layer.w_o  # block_cells order: [c, dy, dx, x, o]
            k, group, r0, c0, m0, o0, sl, out_row = np.array(records, dtype=np.int64).T[:, :, None]
            pixel = sl * layer.w_o + xo
            q = np.where(out_row < 0, pixel, out_row * out_w + pixel)
            keep = np.broadcast_to(pixel < out_w, q.shape)
            value = np.stack(np.broadcast_arrays(k, r0 + row, c0 + col), axis=-1)
            where[np.broadcast_to(group, q.shape)[keep], q[keep], np.broadcast_to(m0 + m_row, q.shape)[keep],
                  np.broadcast_to(o0 + m_col, q.shape)[keep]] = value[keep]
        if any(permuted(x) for x in crossbars):
            rows, cols = (np.stack(p) for p in zip(*(permutations(x) for x in crossbars)))
            placed = where[..., 0] >= 0
            k = where[..., 0][placed]
            where[..., 1][placed] = rows[k, where[..., 1][placed]]
            where[..., 2][placed] = cols[k, where[..., 2][placed]]
        return where

    def _states(self, sites: list[str]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The cell states of one copy of the layer's crossbars (by site id) stacked ``[crossbars, rows,
        physical_cols]``: ``stuck``, ``theta`` and the programmed levels (None when no compensation
        changed them)."""
        states = [self.chip.cells[site] for site in sites]
        rows = max((s.stuck.shape[0] for s in states), default=0)
        cols = max((s.stuck.shape[1] for s in states), default=0)
        stuck = np.zeros((len(states), rows, cols), dtype=np.uint8)
        theta = np.zeros((len(states), rows, cols), dtype=np.float32) if self.chip.spec.program_sigma else None
        levels = (np.zeros((len(states), rows, cols), dtype=np.uint16)
                  if any(s.levels is not None for s in states) else None)
        for k, s in enumerate(states):
            stuck[k, :s.stuck.shape[0]] = s.stuck
            if theta is not None and s.theta is not None:
                theta[k, :s.theta.shape[0]] = s.theta
            if levels is not None and s.levels is not None:
                levels[k, :s.levels.shape[0]] = s.levels
        return stuck, theta, levels

    def _effective(self, i: int, blk, where: np.ndarray, states, m_c: int) -> torch.Tensor:
        """``[Q, K_span, P * n]``: effective levels of row block ``i`` on every copy, as a matmul weight."""
        enc, spec = self.enc, self.chip.spec
        b = self.row_blocks[i]
        stored = blk.stored.numpy()  # [P, n, C, kh, kw], zero off the block's rows
        n_p, n = stored.shape[:2]
        kh, kw = self.kernel
        span = stored.shape[2] * kh * kw
        local = b.rows - (blk.c_lo - b.group * self.c_g) * kh * kw  # the block's rows inside the span
        levels = stored.reshape(n_p, n, span)[:, :, local].transpose(0, 2, 1).astype(np.float64)  # [P, rows, n]
        pos = where[b.group][:, b.rows][:, :, blk.cols]  # [Q, rows, n, 3]
        placed = pos[..., 0] >= 0
        k, r, c = (np.where(placed, pos[..., j], 0)[:, None] for j in range(3))  # [Q, 1, rows, n]
        phys = c * m_c + np.arange(n_p)[None, :, None, None]  # [Q, P, rows, n]
        stuck_all, theta_all, programmed = states
        stuck = stuck_all[k, r, phys]
        theta = None if theta_all is None else theta_all[k, r, phys]
        levels = (np.broadcast_to(levels, stuck.shape) if programmed is None
                  else programmed[k, r, phys].astype(np.float64))
        effective = effective_levels(levels, stuck, theta, spec, enc.max_level)
        effective = np.where(placed[:, None], effective, 0.0)
        out = np.zeros((self.copies, span, n_p, n), dtype=np.float64)
        out[:, local] = effective.transpose(0, 2, 1, 3)
        return torch.from_numpy(out.reshape(self.copies, span, n_p * n)).to(self.device)

    # --- execution -------------------------------------------------------------------------------
    raw_accumulator = IntegerLayer.accumulator

    def accumulator(self, xq: torch.Tensor) -> torch.Tensor:
        """The chip's accumulator, with the column correction of ``compensation.column_gain`` when measured."""
        acc = self.raw_accumulator(xq)
        correction = self.chip.column_corrections.get(self.name)
        return acc if correction is None else correction.apply(acc)

    def _lossy_per_read(self, driven: torch.Tensor) -> torch.Tensor:
        """Every read of every copy through the ADC, reads batched over cycles, planes and columns.

        Reads are held in float32 (analog values; exact integers on an ideal device while they stay
        below 2**24, else float64); the codes are combined in float64, exactly.
        """
        generator = torch.Generator(device=driven.device).manual_seed(self.noise_seed) if self.noise else None
        if self.replicas == 1:
            return self._reads(driven, self.weights[0], generator)
        out = None
        for r, weights in enumerate(self.weights):
            images = driven[r::self.replicas]
            if len(images):
                part = self._reads(images, weights, generator)
                out = driven.new_zeros((driven.shape[0], *part.shape[1:]), dtype=part.dtype) if out is None else out
                out[r::self.replicas] = part
        return out

    def _reads(self, driven: torch.Tensor, weights: list[torch.Tensor], generator) -> torch.Tensor:
        """:meth:`_lossy_per_read` of images on one replica (``weights``: its row blocks' effective levels)."""
        enc = self.enc
        cycles = torch.tensor([w for w, _, _ in enc.cycles], dtype=torch.float64, device=driven.device)
        digits = self.digits(driven)  # [T, B, C, Hp, Wp]
        n_t, batch = digits.shape[:2]
        out_h, out_w = self.out_hw(driven, padded=True)
        runs, copies = {"pixel": (1, out_h * out_w), "column": (out_h, out_w), "one": (out_h * out_w, 1)}[self.copy_mode]
        if copies != self.copies:
            raise CompileError("XB508", f"layer '{self.name}' computes {out_h}x{out_w} pixels, its crossbars hold "
                                        f"copies for {self.copies}", location=Location(node=self.name))
        out = None
        for blk, weight in zip(self.blocks, weights):
            n = len(blk.cols)
            sigma = self.noise * int(blk.mask.sum()) * enc.max_digit * enc.max_level
            dtype = exact_dtype(blk.max_read if not (self.noise or self.chip.spec.program_sigma)
                                else blk.max_read * np.exp(6 * self.chip.spec.program_sigma) + 6 * sigma)
            w = weight.to(dtype)
            scale = torch.exp2(-blk.step).to(dtype).repeat(enc.planes)  # [P * n], plane-major like the weight
            top = blk.top.to(dtype).repeat(enc.planes)
            # codes -> value: per plane sign and shift (flips included) * 2**step, exact in ``plane_dtype``;
            # then the cycles' weights, in float64
            per_plane = blk.coef * torch.exp2(blk.step).view(1, -1)  # [P, n]
            plane_dtype = exact_dtype(float((per_plane.abs() * blk.top.view(1, -1)).sum(0).max()))
            per_plane = per_plane.to(plane_dtype)
            chunk = max(1, CHUNK_ELEMENTS // max(n_t * enc.planes * n * runs * copies, 1))
            parts = []
            for b0 in range(0, batch, chunk):
                d = digits[:, b0:b0 + chunk, blk.c_lo:blk.c_hi].flatten(0, 1).to(dtype)
                patches = F.unfold(d, self.kernel, dilation=self.dilation, stride=self.stride)  # [TB, K, L]
                tb, k = patches.shape[:2]
                patches = patches.view(tb, k, runs, copies).permute(3, 0, 2, 1).reshape(copies, tb * runs, k)
                reads = torch.bmm(patches, w)  # [Q, TB * runs, P * n]: every read of every copy
                if self.noise:
                    reads.add_(torch.randn(reads.shape, generator=generator, dtype=dtype, device=reads.device),
                               alpha=sigma)
                reads.mul_(scale)
                reads = (reads.round_() if self.q.adc.rounding == "nearest-even" else reads.floor_())
                codes = torch.minimum(reads.clamp_(min=0), top, out=reads)
                codes = codes.view(copies, n_t, (tb // n_t) * runs, enc.planes, n).to(plane_dtype)
                per_cycle = codes.mul_(per_plane).sum(3)  # [Q, T, B * runs, n]
                y = torch.tensordot(cycles, per_cycle.double(), dims=([0], [1]))  # [Q, B * runs, n]
                parts.append(y.view(copies, tb // n_t, runs, n).permute(1, 3, 2, 0))
            y = torch.cat(parts).reshape(batch, n, out_h, out_w)
            x = driven[:, blk.c_lo:blk.c_hi].double()
            y = y + blk.sum_coef.view(1, -1, 1, 1) * self.conv(x, blk.mask.double(), padded=True)
            if out is None:
                out = driven.new_zeros((batch, self.n_out, out_h, out_w), dtype=torch.float64)
            out.index_add_(1, torch.from_numpy(blk.group * self.n_g + blk.cols).to(out.device), y)
        return out.to(self.acc_dtype)


@register_kernel("device")
def _device(netlist, layer: Layer, device: torch.device, literal: bool):
    if not isinstance(netlist, ProgrammedChip):
        raise CompileError("XB531", "device mode runs a programmed chip, not a bare netlist",
                           hint="xb.program(netlist, seed=...) or xb.emulate(netlist, x, mode='device', seed=...)")
    if layer.quant is None:
        raise CompileError("XB531", f"layer '{layer.name}' is not quantised: device mode needs a netlist compiled "
                                    "with calibration data", location=Location(node=layer.name))
    return DeviceLayer(netlist, layer, device, [x.name for x in netlist.layers].index(layer.name))
