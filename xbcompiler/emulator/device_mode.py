"""Device mode: the integer datapath of a programmed chip, read by read on the chip's own cells.

A quantised layer runs as integer mode's ``per-read`` path does (one ADC conversion per row block,
DAC cycle, weight plane and column), with two differences (docs/faults.md):

- a read sums *every cell on its driven word lines and its column*, each at its *effective* level
  (:mod:`.programming`): with ``g0 = M / (on_off_ratio - 1)`` the off-state conductance in level units
  (0 for an ideal off state) and ``M = 2**cell_bits - 1``,
  ``L_eff = L * exp(theta) + g0 * (exp(theta) - 1)`` for a free cell (the reference column removes the
  nominal ``G_min``), ``0`` for a cell stuck at ``G_min`` and ``M`` for one stuck at ``G_max``. Cells no
  record gives a weight are programmed to ``G_min`` (level 0, in every encoding): the block-Toeplitz
  structural zeros (word line ``x_in`` of a width slice under copy ``x_out`` of a block whose kernel
  does not reach it), and on a crossbar holding several records of one row block, the cells where one
  record's word lines cross another's columns. They read 0 on an ideal device, ``M`` when stuck on,
  their off-state leakage with variation;
- every analog read gets ``N(0, (read_noise * full_scale)^2)``, ``full_scale = rows * max_digit * M``
  of its row block's matrix rows, drawn per read from a generator seeded with (chip seed, layer
  position); the ADC then rounds and clips the read to ``[0, top]``.

The input of a block-Toeplitz layer is cut into the windows its width slices see (``w_i`` input
columns, slice ``s`` from padded column ``s * w_o * s_w``; columns past the input are not driven), and
one product per window and row block computes every read of the slice's ``w_o`` copies at once: the
crossbar's own product. A weight's copies (the ``w_o * n_w`` copies of a block-Toeplitz layer, the
``H'`` row copies of fully-unfolded) are different cells; each output pixel is computed by the cells
of its own copy. A read of a polarized fragment drives the fragment's word lines: for slices, the
fragment's matrix rows on every column of the row block; for block-Toeplitz layers, the cells that hold
the fragment's weights (the structural zeros are not modelled there).

A crossbar of ``compact-pruned-rows`` or ``group-pattern-columns`` holds a row block as several slices,
one per run of rows (and of columns): its row block is the rows of all of them, each read column is
read once over all of them. The crossbars of one column tile can hold different rows; integer mode
still reads every column of every row block, so a row block's columns that none of its crossbars
holds are *virtual* reads: no cells, the stored levels of their zero weights (which the read's offset
correction removes), no faults, variation or noise, and not counted in :meth:`DeviceLayer.reads_per_image`.

The copies ``replicate-layers`` makes (``replica_sites``) are crossbars of their own: image ``b`` of a
batch runs on replica ``b % replicas``, as the pipeline hands images to the copies in turn.

With every non-ideality zero the effective levels are the stored levels (the cells without a weight
read 0) and the reads are integers, so device mode equals integer mode bit for bit (a test).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..diagnostics import CompileError, Location
from ..netlist.placement import permutations, row_block_key, row_blocks, row_ranges, spatial
from ..netlist.types import Layer, Slice
from .integer import IntegerLayer
from .integer_exact import exact_dtype
from .programming import ProgrammedChip, effective_levels
from .runtime import register_kernel

#: Elements of one chunk of reads (cycles x images x planes x columns x pixels) at most.
CHUNK_ELEMENTS = 1 << 25


@dataclass(frozen=True)
class Window:
    """What one site (a width slice, or a slice of one output row) drives: the input window and its copies.

    The input patch of a site is an unfold of the padded input with ``kernel``, ``dilation`` and
    ``stride``; ``copies`` output columns share it (``w_o`` of a block-Toeplitz layer, else 1);
    ``slices`` windows cover an output row; ``sites`` is how many windows have cells of their own
    (1, ``slices`` or ``out_h * slices``) and ``runs`` how many windows each site computes.
    """

    kernel: tuple[int, int]
    dilation: tuple[int, int]
    stride: tuple[int, int]
    copies: int
    slices: int
    sites: int
    runs: int
    out_hw: tuple[int, int]

    @property
    def width(self) -> int:
        """Padded input columns the windows of one output row span."""
        return (self.slices - 1) * self.stride[1] + (self.kernel[1] - 1) * self.dilation[1] + 1


@dataclass(frozen=True)
class Lines:
    """The records of one row block on one crossbar at one site: its word lines and its read columns.

    Per word line (placement row) the input it carries, ``(c, dy, x_in)`` (channel in the group, kernel
    row, column of the window); per read column (placement logical column, each once however many
    records hold it) the copy ``x_out`` and the matrix column ``j``; ``held [rows, cols]``: the cells some
    record of the row block gives a weight.
    """

    crossbar: int
    site: int
    rows: np.ndarray
    c: np.ndarray
    dy: np.ndarray
    x_in: np.ndarray
    cols: np.ndarray
    x_out: np.ndarray
    j: np.ndarray
    held: np.ndarray


class DeviceLayer(IntegerLayer):
    """One quantised layer on a programmed chip (see the module docstring)."""

    def __init__(self, chip: ProgrammedChip, layer: Layer, device: torch.device, index: int):
        super().__init__(chip, layer, device, path="per-read")
        self.chip, self.layer = chip, layer
        self.noise = chip.spec.read_noise
        self.noise_seed = int.from_bytes(hashlib.sha256(f"{chip.seed}/{index}/{layer.name}".encode()).digest()[:8],
                                         "little") >> 1
        crossbars = chip.layer_crossbars(layer)
        if any(x.slices for x in crossbars) and any(x.blocks for x in crossbars):
            raise CompileError("XB531", f"layer '{layer.name}': device mode does not run layers placed as both "
                                        "slices and blocks", location=Location(node=layer.name))
        per_pixel = any(b.out_row >= 0 for x in crossbars for b in x.blocks)
        if per_pixel and self.kind == "linear" and spatial(layer)[1][0] > 1:
            raise CompileError("XB531", f"layer '{layer.name}': device mode does not run linear layers whose rows of "
                                        "vectors have their own crossbar copies", location=Location(node=layer.name))
        self.window = self._window(any(x.blocks for x in crossbars), per_pixel)
        #: copies of the layer made by ``replicate-layers``: image ``b`` of a batch runs on replica ``b % replicas``
        self.replicas = len(crossbars[0].site_ids) if crossbars else 1
        if any(len(x.site_ids) != self.replicas for x in crossbars):
            raise CompileError("XB531", f"layer '{layer.name}': its crossbars have different numbers of replicas",
                               location=Location(node=layer.name))
        lines, keys = self._lines(crossbars), self._keys(crossbars)
        perms = [permutations(x) for x in crossbars]
        m_c = crossbars[0].physical_cols // crossbars[0].cols if crossbars else 1
        enc = self.enc
        #: per row block, the read noise's standard deviation: ``read_noise`` of the full scale of its rows
        self.sigmas = [self.noise * int(blk.mask.sum()) * enc.max_digit * enc.max_level for blk in self.blocks]
        self.weights = []  # [replica][row block]: [sites, K, copies * P * n], float32 where reads stay exact
        #: per row block, its virtual reads (``[sites, 1, copies * P * n]`` bool, None if none): no noise
        self.virtual: list[torch.Tensor | None] = [None] * len(self.blocks)
        for r in range(self.replicas):
            states = [chip.cells[x.site_ids[r]] for x in crossbars]
            weights = []
            for i, blk in enumerate(self.blocks):
                w, bound, self.virtual[i] = self._effective(i, blk, *keys[i], lines, states, perms, m_c)
                weights.append(torch.from_numpy(w).to(self.device, exact_dtype(bound + 6 * self.sigmas[i])))
            self.weights.append(weights)

    # --- preparation -----------------------------------------------------------------------------
    def _window(self, blocks: bool, per_pixel: bool) -> Window:
        """The input windows: per output pixel (slices), per width slice (blocks), per slice and row (per pixel)."""
        (kh, kw), (s_h, s_w), (d_h, d_w) = self.kernel, self.stride, self.dilation
        out_h, out_w = spatial(self.layer)[1]
        if not blocks:
            return Window((kh, kw), (d_h, d_w), (s_h, s_w), 1, out_w, 1, out_h * out_w, (out_h, out_w))
        w_o = self.layer.w_o
        slices = -(-out_w // w_o)
        sites, runs = (out_h * slices, 1) if per_pixel else (slices, out_h)
        return Window((kh, self.layer.w_i), (d_h, 1), (s_h, w_o * s_w), w_o, slices, sites, runs, (out_h, out_w))

    def _lines(self, crossbars) -> dict[tuple, list[Lines]]:
        """Per row-block key, the word lines and read columns of its records, per crossbar and site."""
        layer, window = self.layer, self.window
        kh, kw = self.kernel
        grouped: dict[tuple, dict[tuple, list]] = {}
        for k, x in enumerate(crossbars):
            for record in (*x.slices, *x.blocks):
                if isinstance(record, Slice):
                    m = np.arange(*record.rows)
                    rows = record.at[0] + m - record.rows[0]
                    c, dy, x_in = m // (kh * kw), (m // kw) % kh, m % kw
                    j = np.arange(*record.cols)
                    cols = record.at[1] + j - record.cols[0]
                    x_out, site = np.zeros_like(j), 0
                    n_rows = len(m)
                else:
                    c, dy, x_in = (a.reshape(-1) for a in np.meshgrid(
                        np.arange(*record.channels), np.arange(*record.kernel_rows), np.arange(layer.w_i), indexing="ij"))
                    rows = record.at[0] + np.arange(c.size)
                    o, x_out = (a.reshape(-1) for a in np.meshgrid(np.arange(*record.out_channels),
                                                                    np.arange(layer.w_o), indexing="ij"))
                    cols = record.at[1] + (o - record.out_channels[0]) * layer.w_o + x_out
                    j, n_rows = o, c.size
                    site = record.slice if record.out_row < 0 else record.out_row * window.slices + record.slice
                parts = grouped.setdefault(row_block_key(x, record), {}).setdefault((k, site), [])
                parts.append((rows, c, dy, x_in, cols, x_out, j, record.at[0], record.at[0] + n_rows))
        out: dict[tuple, list[Lines]] = {}
        for key, sites in grouped.items():
            for (k, site), parts in sites.items():
                rows, c, dy, x_in = (np.concatenate([p[i] for p in parts]) for i in range(4))
                carried = np.stack([c, dy, x_in], axis=1)
                rows, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
                if not np.array_equal(carried[first][inverse], carried):
                    raise CompileError("XB531", f"layer '{layer.name}': a word line of crossbar "
                                                f"{crossbars[k].id} carries two inputs of one row block",
                                       location=Location(node=layer.name))
                # a column several records hold (one per row run: compact-pruned-rows, group-pattern-columns)
                # is one read column, read once over the word lines of all of them
                cols, x_out, j = (np.concatenate([p[i] for p in parts]) for i in range(4, 7))
                cols, first_c, inverse_c = np.unique(cols, return_index=True, return_inverse=True)
                if not (np.array_equal(x_out[first_c][inverse_c], x_out) and np.array_equal(j[first_c][inverse_c], j)):
                    raise CompileError("XB531", f"layer '{layer.name}': a column of crossbar {crossbars[k].id} "
                                                "holds two matrix columns of one row block",
                                       location=Location(node=layer.name))
                held = np.zeros((len(rows), len(cols)), dtype=bool)
                for p in parts:
                    at = np.searchsorted(cols, p[4])
                    held[np.searchsorted(rows, p[7]):np.searchsorted(rows, p[8]), at] = True
                c, dy, x_in = carried[first].T
                out.setdefault(key, []).append(Lines(k, site, rows, c, dy, x_in, cols, x_out[first_c], j[first_c],
                                                     held))
        return out

    def _keys(self, crossbars) -> list[tuple[tuple, bool]]:
        """Per read (integer mode's row blocks, fragments included), its row-block key and whether the read is
        only a part of it (a polarized fragment): :func:`row_blocks` and :func:`fragment_blocks`' order."""
        layer = self.layer
        blocks, index = row_blocks(layer, crossbars, np.zeros((layer.groups, layer.matrix_rows, layer.n_g), np.int8))
        reads = [(key, blocks[i].rows) for key, i in sorted(index.items(), key=lambda item: item[1])]
        q = layer.quant
        if q.encoding.signed == "polarized":  # fragment_blocks: cut along the fragment grid, then a stable sort
            ids = [rows // q.encoding.fragment_rows for _, rows in reads]
            reads = sorted([(key, rows[f == u]) for (key, rows), f in zip(reads, ids) for u in np.unique(f)],
                           key=lambda r: (r[0][0], tuple(row_ranges(r[1]))))
        if [(k[0], row_ranges(rows)) for k, rows in reads] != [(int(b.group), row_ranges(b.rows))
                                                               for b in self.row_blocks]:
            raise CompileError("XB531", f"layer '{layer.name}': its reads do not match its row blocks",
                               location=Location(node=layer.name))
        return [(key, len(rows) != len(blocks[index[key]].rows)) for key, rows in reads]

    def _effective(self, i: int, blk, key: tuple, fragment: bool, lines: dict[tuple, list[Lines]], states, perms,
                   m_c: int):
        """``([sites, K, copies * P * n], bound, virtual)``: the effective level of every cell read ``i`` sums, as a
        matmul weight per site (rows: the window's patch ``(c, dy, x_in)``; columns: copy, plane, column), the
        largest read it can give, and which of its reads no crossbar performs (None if none).

        Integer mode reads every column of a row block; a column no crossbar of the row block holds at a
        site (another column tile's rows differ) has no cells there: its reads are *virtual*, the stored
        levels of its zero weights (which the read's offset correction removes), exact and without noise.
        """
        enc, spec, window = self.enc, self.chip.spec, self.window
        kh, kw = self.kernel
        kw_eff = window.kernel[1]
        stored = blk.stored.numpy()  # [P, n, C, kh, kw], zero off the read's rows
        n_p, n = stored.shape[:2]
        c_lo = blk.c_lo - blk.group * self.c_g
        n_c = blk.c_hi - blk.c_lo
        span = n_c * kh * kw_eff
        column = np.full(self.n_g, -1, dtype=np.int64)
        column[blk.cols] = np.arange(n)
        out = np.zeros((window.sites, span, window.copies, n_p, n), dtype=np.float64)
        covered = np.zeros((window.sites, n), dtype=bool)
        toeplitz = window.copies > 1 or kw_eff != kw
        s_w, d_w = self.stride[1], self.dilation[1]
        for part in lines.get(key, []):
            keep_r = (part.c >= c_lo) & (part.c < c_lo + n_c)
            keep_c = column[part.j] >= 0
            if not keep_r.any() or not keep_c.any():
                continue
            rows, c, dy, x_in = part.rows[keep_r], part.c[keep_r] - c_lo, part.dy[keep_r], part.x_in[keep_r]
            cols, x_out, j = part.cols[keep_c], part.x_out[keep_c], column[part.j[keep_c]]
            covered[part.site, j] = True
            if toeplitz:  # the kernel column of word line x_in under copy x_out, where it reaches
                offset = x_in[:, None] - x_out[None, :] * s_w
                valid = (offset >= 0) & (offset % d_w == 0) & (offset // d_w < kw)
                dx = np.where(valid, offset // d_w, 0)
            else:
                valid = np.ones((len(rows), len(cols)), dtype=bool)
                dx = np.broadcast_to(x_in[:, None], valid.shape)
            held = valid & part.held[np.ix_(keep_r, keep_c)]
            perm_r, perm_c = perms[part.crossbar]
            state = states[part.crossbar]
            wl = perm_r[rows][:, None, None]
            phys = (perm_c[cols] * m_c)[None, :, None] + np.arange(n_p)[None, None, :]  # [1, nc, P]
            if state.levels is not None:
                levels = state.levels[wl, phys].astype(np.float64)
            else:
                levels = np.moveaxis(stored[:, j[None, :], c[:, None], dy[:, None], dx], 0, -1) * held[..., None]
            theta = None if state.theta is None else state.theta[wl, phys]
            effective = effective_levels(levels, state.stuck[wl, phys], theta, spec, enc.max_level)  # [nr, nc, P]
            if fragment:  # a fragment drives its own word lines: the cells holding its weights (slices: its rows)
                m = ((c + c_lo)[:, None] * kh + dy[:, None]) * kw + dx
                effective = effective * (valid & np.isin(m, self.row_blocks[i].rows))[..., None]
            patch = (c * kh + dy) * kw_eff + x_in
            out[part.site, patch[:, None], x_out[None, :], :, j[None, :]] += effective
        virtual = None
        if not covered.all():
            virtual = np.zeros((window.sites, window.copies, n_p, n), dtype=bool)
            c, dy, dx = (a.reshape(-1) for a in np.meshgrid(np.arange(n_c), np.arange(kh), np.arange(kw), indexing="ij"))
            for site in np.flatnonzero(~covered.all(1)):
                missing = np.flatnonzero(~covered[site])
                levels = np.moveaxis(stored[:, missing][:, :, c, dy, dx], 0, -1).transpose(1, 0, 2)  # [K, nm, P]
                for x_out in range(window.copies):
                    x_in = x_out * s_w + dx * d_w if toeplitz else dx
                    out[site, ((c * kh + dy) * kw_eff + x_in)[:, None], x_out, :, missing[None, :]] = levels
                virtual[site, :, :, missing] = True
            virtual = torch.from_numpy(virtual.reshape(window.sites, 1, -1)).to(self.device)
        out = out.reshape(window.sites, span, window.copies * n_p * n)
        bound = float(np.abs(out).sum(1).max(initial=0)) * enc.max_digit
        return out, bound, virtual

    def reads_per_image(self) -> int:
        """The analog reads one image performs on this layer: every cycle, plane, column, copy and window
        (virtual reads, of columns no crossbar of the row block holds, not counted)."""
        w = self.window
        per_window = w.copies * self.enc.planes
        per_run = [w.sites * per_window * len(blk.cols) if v is None else int((~v).sum())
                   for blk, v in zip(self.blocks, self.virtual)]
        return w.runs * len(self.enc.cycles) * sum(per_run)

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

    def _reads(self, driven: torch.Tensor, weights: list, generator) -> torch.Tensor:
        """:meth:`_lossy_per_read` of images on one replica (``weights``: its row blocks' effective levels)."""
        enc, window = self.enc, self.window
        cycles = torch.tensor([w for w, _, _ in enc.cycles], dtype=torch.float64, device=driven.device)
        digits = self.digits(driven)  # [T, B, C, Hp, Wp]
        n_t, batch = digits.shape[:2]
        out_h, out_w = self.out_hw(driven, padded=True)
        sites, copies, runs = window.sites, window.copies, window.runs
        if sites == 1 and copies == 1:
            runs = out_h * out_w
        elif (out_h, out_w) != window.out_hw:
            raise CompileError("XB508", f"layer '{self.name}' computes {out_h}x{out_w} pixels, its crossbars hold "
                                        f"copies for {window.out_hw[0]}x{window.out_hw[1]}",
                               location=Location(node=self.name))
        width = digits.shape[-1] if sites == 1 and copies == 1 else window.width
        extra = width - digits.shape[-1]  # window columns past the input are not driven (digit 0)
        out = None
        for i, blk in enumerate(self.blocks):
            n, sigma, w = len(blk.cols), self.sigmas[i], weights[i]
            dtype = w.dtype
            scale = torch.exp2(-blk.step).to(dtype).repeat(copies * enc.planes)  # [copies * P * n] like the weight
            top = blk.top.to(dtype).repeat(copies * enc.planes)
            # codes -> value: per plane sign and shift (flips included) * 2**step, exact in ``plane_dtype``;
            # then the cycles' weights, in float64
            per_plane = blk.coef * torch.exp2(blk.step).view(1, -1)  # [P, n]
            plane_dtype = exact_dtype(float((per_plane.abs() * blk.top.view(1, -1)).sum(0).max()))
            per_plane = per_plane.to(plane_dtype)
            chunk = max(1, CHUNK_ELEMENTS // max(n_t * enc.planes * n * runs * sites * copies, 1))
            parts = []
            for b0 in range(0, batch, chunk):
                d = digits[:, b0:b0 + chunk, blk.c_lo:blk.c_hi].flatten(0, 1).to(dtype)
                d = F.pad(d, (0, extra)) if extra > 0 else d[..., :width]
                patches = F.unfold(d, window.kernel, dilation=window.dilation, stride=window.stride)  # [TB, K, L]
                tb, k = patches.shape[:2]
                patches = patches.view(tb, k, runs, sites).permute(3, 0, 2, 1).reshape(sites, tb * runs, k)
                reads = torch.bmm(patches, w)  # [S, TB * runs, copies * P * n]: every read of every copy
                if self.noise:
                    noise = torch.randn(reads.shape, generator=generator, dtype=dtype, device=reads.device)
                    if self.virtual[i] is not None:
                        noise.masked_fill_(self.virtual[i], 0.0)
                    reads.add_(noise, alpha=sigma)
                reads.mul_(scale)
                reads = (reads.round_() if self.q.adc.rounding == "nearest-even" else reads.floor_())
                codes = torch.minimum(reads.clamp_(min=0), top, out=reads)
                codes = codes.view(sites, n_t, (tb // n_t) * runs, copies, enc.planes, n).to(plane_dtype)
                per_cycle = codes.mul_(per_plane).sum(4)  # [S, T, B * runs, copies, n]
                y = torch.tensordot(cycles, per_cycle.double(), dims=([0], [1]))  # [S, B * runs, copies, n]
                parts.append(y.view(sites, tb // n_t, runs, copies, n).permute(1, 4, 2, 0, 3))
            y = torch.cat(parts).reshape(batch, n, out_h, -1)[..., :out_w]
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
