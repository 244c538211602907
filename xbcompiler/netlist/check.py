"""Load-time consistency of a decoded netlist: everything the emulator relies on, checked before it runs.

Each failure is a coded :class:`CompileError` naming the field by its JSON path (``$.layers[3].first_crossbar``):

- XB510 an index or range outside what its layer, crossbar or target allows (a crossbar permutation that is
  not one, or moves a row onto a word line of another row block);
- XB511 two placement records of one crossbar overlap on a cell;
- XB512 a weight placed other than ``copies`` times (or a weight no record places is not zero);
- XB513 tile, slot or chip numbers inconsistent with the target's hierarchy;
- XB514 ``target_fingerprint`` is not the hash of ``target`` (or ``target`` is not a valid target);
- XB517 the bookkeeping disagrees (layers' crossbar ranges, node references, summary counts);
- XB350 / XB521 a pruned layer's routing tables (a pattern layer's ``spm``) / a quantised layer's row blocks
  disagree with its records.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from itertools import pairwise

import numpy as np

from ..diagnostics import CompileError, Location
from ..target import TargetSpec, target_from_dict
from .encoding import Encoding
from .placement import (
    conv_out,
    footprint,
    fragment_blocks,
    row_blocks,
    row_classes,
    row_ranges,
    spatial,
    weight_counts,
)
from .routing import crossbar_tables, layer_fanin, spm_rows
from .types import Crossbar, Document, Layer

_INT_DTYPES = ("int8", "int16", "int32", "int64")


def fail(code: str, path: str, message: str, crossbar: str | None = None) -> CompileError:
    return CompileError(code, f"{path}: {message}", location=Location(node=path, crossbar=crossbar))


def check_target(doc: Document) -> TargetSpec:
    """The target section as a validated target whose fingerprint is ``target_fingerprint`` (XB514)."""
    try:
        target = target_from_dict(doc.target, file="netlist.json $.target")
    except CompileError as exc:
        raise fail("XB514", "$.target", f"not a valid target: {exc.message}") from None
    if target.fingerprint() != doc.target_fingerprint:
        raise fail("XB514", "$.target_fingerprint", "is not the sha256 of the target section (the target was "
                                                    "edited after compilation); recompile for the intended target")
    return target


def declared_arrays(doc: Document) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every array the document names: key -> (shape, dtype); a key named twice is XB517."""
    out: dict[str, tuple[tuple[int, ...], str]] = {}

    def add(path: str, ref) -> None:
        if ref.key in out:
            raise fail("XB517", path, f"array '{ref.key}' is named twice")
        out[ref.key] = (tuple(ref.shape), ref.dtype)

    for i, c in enumerate(doc.constants):
        add(f"$.constants[{i}]", c)
    for i, layer in enumerate(doc.layers):
        for field in layer.arrays.__struct_fields__:
            ref = getattr(layer.arrays, field)
            if ref is not None:
                add(f"$.layers[{i}].arrays.{field}", ref)
    return out


def check_document(doc: Document, target: TargetSpec) -> None:
    """Structure that needs no array: bookkeeping, geometry, hierarchy, records in range, no overlap."""
    _check_nodes(doc)
    position = 0
    for i, layer in enumerate(doc.layers):
        path = f"$.layers[{i}]"
        if layer.first_crossbar != position:
            raise fail("XB517", f"{path}.first_crossbar", f"is {layer.first_crossbar}; the layers before it end at "
                                                          f"crossbar {position}")
        position += layer.crossbars
        if position > len(doc.crossbars):
            raise fail("XB517", f"{path}.crossbars", f"runs past the {len(doc.crossbars)} crossbars of the netlist")
        _check_layer(layer, path)
        for k in range(layer.first_crossbar, position):
            _check_crossbar(layer, doc.crossbars[k], f"$.crossbars[{k}]", k, target)
    if position != len(doc.crossbars):
        raise fail("XB517", "$.crossbars", f"has {len(doc.crossbars)} entries; the layers own {position}")
    _check_sites(doc, target)
    if doc.summary.crossbars != position or doc.summary.layers != len(doc.layers):
        raise fail("XB517", "$.summary", "crossbar or layer count disagrees with the lists")


def _check_nodes(doc: Document) -> None:
    seen: set[str] = set()
    layers = {layer.name for layer in doc.layers}
    constants = {c.name for c in doc.constants}
    for i, node in enumerate(doc.nodes):
        path = f"$.nodes[{i}]"
        if node.name in seen:
            raise fail("XB517", f"{path}.name", f"'{node.name}' is defined twice")
        if node.op == "xbar" and node.target not in layers:
            raise fail("XB517", f"{path}.target", f"names no layer ('{node.target}')")
        if node.op == "const" and node.target not in constants:
            raise fail("XB517", f"{path}.target", f"names no constant ('{node.target}')")
        if node.op == "input" and node.target not in {str(k) for k in range(len(doc.inputs))}:
            raise fail("XB517", f"{path}.target", f"names no model input ('{node.target}')")
        for ref in _refs([node.args, node.kwargs]):
            if ref not in seen:
                raise fail("XB517", f"{path}.args", f"refers to '{ref}', which is not an earlier node")
        seen.add(node.name)
    for ref in _refs(doc.output):
        if ref not in seen:
            raise fail("XB517", "$.output", f"refers to '{ref}', which is not a node")


def _refs(value, depth: int = 0):
    if depth > 64:
        raise fail("XB502", "$.nodes", "arguments nested deeper than 64 levels")
    if isinstance(value, dict):
        if isinstance(value.get("ref"), str) and len(value) == 1:
            yield value["ref"]
        else:
            for v in value.values():
                yield from _refs(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            yield from _refs(v, depth + 1)


def _check_layer(layer: Layer, path: str) -> None:
    g = layer.geometry
    kh, kw = g.kernel
    if g.in_channels % layer.groups or g.out_channels % layer.groups:
        raise fail("XB510", f"{path}.groups", f"{layer.groups} does not divide the channels")
    if layer.matrix_rows != g.in_channels // layer.groups * kh * kw or layer.matrix_cols != g.out_channels:
        raise fail("XB510", f"{path}.matrix_rows", "matrix shape disagrees with the geometry")
    if not layer.input_shape or not layer.output_shape or 0 in layer.input_shape or 0 in layer.output_shape:
        raise fail("XB510", f"{path}.input_shape", "empty layer shape")
    if g.kind == "linear":
        ok = (layer.input_shape[-1] == g.in_channels and layer.output_shape[-1] == g.out_channels
              and layer.input_shape[:-1] == layer.output_shape[:-1] and g.kernel == (1, 1))
    else:
        (h, w), (ho, wo) = spatial(layer)
        channels_ok = layer.input_shape[0] == g.in_channels and layer.output_shape[0] == g.out_channels
        ok = channels_ok and (ho, wo) == (conv_out(h, kh, g.stride[0], g.padding[0], g.dilation[0]),
                                          conv_out(w, kw, g.stride[1], g.padding[1], g.dilation[1]))
        ok = ok and len(layer.input_shape) == (2 if g.kind == "conv1d" else 3) == len(layer.output_shape)
    if not ok:
        raise fail("XB510", f"{path}.output_shape", "input/output shapes disagree with the geometry")
    if layer.patterns is not None:
        _check_patterns(layer, path)
    _, (h_out, w_out) = spatial(layer)
    if layer.strategy != "fully-folded":
        step = layer.w_o * g.stride[1]
        if layer.w_i != (layer.w_o - 1) * g.stride[1] + g.dilation[1] * (kw - 1) + 1 or layer.n_w * layer.w_o < w_out \
                or (layer.n_w - 1) * layer.w_o >= w_out or step <= 0:
            raise fail("XB510", f"{path}.w_i", "slice widths disagree with the geometry")
        copies = layer.w_o * layer.n_w * (h_out if layer.strategy == "fully-unfolded" else 1)
    else:
        copies = 1
    if layer.copies != copies:
        raise fail("XB510", f"{path}.copies", f"is {layer.copies}; the strategy and slice widths give {copies}")
    arrays = layer.arrays
    want = {"weight": [layer.groups, layer.matrix_rows, layer.n_g], "bias": [layer.matrix_cols],
            "input_correction": [layer.matrix_cols], "adc_compensation": [layer.matrix_cols]}
    for name, shape in want.items():
        ref = getattr(arrays, name)
        if ref is not None and ref.shape != shape:
            raise fail("XB510", f"{path}.arrays.{name}.shape", f"is {ref.shape}, the layer needs {shape}")
    if layer.quant is None:
        if arrays.weight.dtype != "float32" or any(getattr(arrays, n) is not None for n in
                                                   ("input_correction", "adc_compensation", "adc_step", "adc_bits", "flips",
                                                    "signs")):
            raise fail("XB510", f"{path}.arrays", "a float layer has float32 weights and no integer datapath arrays")
        return
    _check_quant(layer, path)


def _check_patterns(layer: Layer, path: str) -> None:
    """XB510 unless a pattern table belongs to an ungrouped fully-folded convolution and lists kernel positions."""
    kk = layer.geometry.kernel[0] * layer.geometry.kernel[1]
    if layer.strategy != "fully-folded" or layer.groups != 1 or layer.geometry.kind == "linear":
        raise fail("XB510", f"{path}.patterns", "only an ungrouped fully-folded convolution has a pattern table")
    for k, p in enumerate(layer.patterns):
        if any(b <= a for a, b in pairwise(p)) or p[-1] >= kk:
            raise fail("XB510", f"{path}.patterns[{k}]", f"{p} is not an ascending list of kernel positions "
                                                       f"within [0, {kk})")


def _check_spm(layer: Layer, x: Crossbar, path: str) -> None:
    """XB510 unless a pattern layer's crossbar has an ``spm`` of distinct ascending channels and known patterns."""
    if (layer.patterns is None) != (x.spm is None):
        raise fail("XB510", f"{path}.spm", "a crossbar has an spm exactly when its layer has a pattern table", x.id)
    if x.spm is None:
        return
    channels = [c for c, _ in x.spm]
    if any(b <= a for a, b in pairwise(channels)) or (channels and channels[-1] >= layer.geometry.in_channels):
        raise fail("XB510", f"{path}.spm", "input channels are not ascending within the layer's "
                                           f"{layer.geometry.in_channels}", x.id)
    for j, (_, k) in enumerate(x.spm):
        if k >= len(layer.patterns):
            raise fail("XB510", f"{path}.spm[{j}]", f"pattern {k} is not in the layer's table of "
                                                    f"{len(layer.patterns)}", x.id)
    if sum(len(layer.patterns[k]) for _, k in x.spm) > x.rows:
        raise fail("XB510", f"{path}.spm", f"names more rows than the crossbar's {x.rows}", x.id)


def _check_quant(layer: Layer, path: str) -> None:
    q, arrays = layer.quant, layer.arrays
    enc = Encoding(q.encoding)
    if arrays.weight.dtype not in _INT_DTYPES or q.encoding.weight_bits != q.weight_bits \
            or q.encoding.input_bits != q.input_bits or q.encoding.input_signed != q.input_signed:
        raise fail("XB510", f"{path}.quant.encoding", "disagrees with the layer's integer weights or inputs")
    if [(p.sign, p.shift) for p in q.planes] != list(zip(enc.plane_signs, enc.plane_shifts)):
        raise fail("XB510", f"{path}.quant.planes", "disagree with quant.encoding")
    if [(c.weight, c.lo, c.bits) for c in q.cycles] != enc.cycles:
        raise fail("XB510", f"{path}.quant.cycles", "disagree with quant.encoding")
    groups = -(-layer.matrix_cols // q.group_cols)
    if len(q.shifts) != groups or len(q.weight_exponents) != groups:
        raise fail("XB510", f"{path}.quant.shifts", f"needs one entry per column group ({groups})")
    blocks = len(q.row_blocks)
    for name, shape in (("adc_step", [blocks, layer.n_g]), ("adc_bits", [blocks, layer.n_g]),
                        ("flips", [blocks, enc.planes, layer.n_g])):
        ref = getattr(arrays, name)
        if (ref is None) != (name == "flips" and not q.encoding.flip_columns) or (ref is not None and ref.shape != shape):
            raise fail("XB510", f"{path}.arrays.{name}", f"must be present with shape {shape}")
    if arrays.bias is None or arrays.bias.dtype != "int64":
        raise fail("XB510", f"{path}.arrays.bias", "a quantised layer has an int64 bias")
    polarized = q.encoding.signed == "polarized"
    if polarized != (q.encoding.fragment_rows > 0) or polarized != (arrays.signs is not None) or \
            (polarized and (arrays.signs.shape != [blocks, layer.n_g] or arrays.signs.dtype != "int8")):
        raise fail("XB510", f"{path}.arrays.signs", "a polarized layer (and only one) has fragment_rows >= 1 and an "
                                                    f"int8 signs array of shape {[blocks, layer.n_g]}")


def _check_crossbar(layer: Layer, x: Crossbar, path: str, index: int, target: TargetSpec) -> None:
    where = x.id
    if x.layer != layer.name:
        raise fail("XB517", f"{path}.layer", f"crossbar {x.id} is listed at {index}, among the crossbars of layer "
                                             f"'{layer.name}'", where)
    if (x.rows, x.cols, x.physical_cols) != (target.crossbar.rows, target.logical_cols, target.logical_cols * target.m_c):
        raise fail("XB510", f"{path}.rows", "crossbar size disagrees with the target", where)
    fully_folded = layer.strategy == "fully-folded"
    if (x.blocks and fully_folded) or (x.slices and not fully_folded):
        raise fail("XB510", path, f"a {layer.strategy} crossbar holds the wrong kind of placement record", where)
    kh = layer.geometry.kernel[0]
    c_g = layer.geometry.in_channels // layer.groups
    _, (h_out, _) = spatial(layer)
    prints = []
    for kind, records in (("slices", x.slices), ("blocks", x.blocks)):
        for j, r in enumerate(records):
            rpath = f"{path}.{kind}[{j}]"
            if kind == "slices":
                ranges = ((r.rows, layer.matrix_rows, "rows"), (r.cols, layer.n_g, "cols"))
            else:
                ranges = ((r.channels, c_g, "channels"), (r.kernel_rows, kh, "kernel_rows"),
                          (r.out_channels, layer.n_g, "out_channels"))
                if r.slice >= layer.n_w or not -1 <= r.out_row < h_out:
                    raise fail("XB510", f"{rpath}.slice", "slice or output row out of range", where)
            if r.group >= layer.groups:
                raise fail("XB510", f"{rpath}.group", f"{r.group} is not a group of the layer", where)
            for (lo, hi), limit, name in ranges:
                if not 0 <= lo < hi <= limit:
                    raise fail("XB510", f"{rpath}.{name}", f"[{lo}, {hi}) is not a range within [0, {limit})", where)
            f = footprint(layer, r)
            if f.r1 > x.rows or f.c1 > x.cols:
                raise fail("XB510", f"{rpath}.at", f"the record runs past the {x.rows}x{x.cols} crossbar", where)
            prints.append((f, rpath))
    _check_spm(layer, x, path)
    prints.sort(key=lambda p: (p[0].r0, p[0].c0))
    for a in range(len(prints)):
        for b in range(a + 1, len(prints)):
            if prints[b][0].r0 >= prints[a][0].r1:
                break
            if prints[a][0].overlaps(prints[b][0]):
                raise fail("XB511", prints[b][1], f"overlaps {prints[a][1]} on crossbar {x.id}", where)
    _check_permutations(layer, x, path)


def _check_permutations(layer: Layer, x: Crossbar, path: str) -> None:
    """XB510 unless ``row_permutation`` / ``column_permutation`` permute the crossbar's rows / logical columns and
    every row lands on a word line of its own row blocks or a spare one (:func:`row_classes`)."""
    for name, size in (("row_permutation", x.rows), ("column_permutation", x.cols)):
        perm = getattr(x, name)
        if perm is not None and sorted(perm) != list(range(size)):
            raise fail("XB510", f"{path}.{name}", f"is not a permutation of 0..{size - 1}", x.id)
    if x.row_permutation is not None:
        classes = row_classes(layer, x)
        to = classes[np.asarray(x.row_permutation)]
        wrong = np.flatnonzero((classes >= 0) & (to >= 0) & (to != classes))
        if wrong.size:
            r = int(wrong[0])
            raise fail("XB510", f"{path}.row_permutation", f"moves row {r} onto word line {x.row_permutation[r]}, "
                                                           "which another row block's reads drive", x.id)


def _check_sites(doc: Document, target: TargetSpec) -> None:
    h = target.hierarchy
    seen: dict[tuple[int, int], str] = {}
    for k, x in enumerate(doc.crossbars):
        for j, (tile, slot, chip) in enumerate([(x.tile, x.slot, x.chip), *x.replica_sites]):
            path = f"$.crossbars[{k}]" + ("" if j == 0 else f".replica_sites[{j - 1}]")
            if slot >= h.crossbars_per_tile or chip != tile // h.tiles:
                raise fail("XB513", path, f"tile {tile}, slot {slot}, chip {chip} do not fit the target's "
                                          f"{h.tiles} tiles of {h.crossbars_per_tile} crossbars per chip", x.id)
            if (tile, slot) in seen:
                raise fail("XB513", path, f"tile {tile} slot {slot} is also crossbar {seen[(tile, slot)]}", x.id)
            seen[(tile, slot)] = x.id


def _check_sites_covered(layer: Layer, xbars: list[Crossbar], path: str) -> None:
    """XB512 unless every width slice (and, fully-unfolded, every output row) holds the same blocks, once each.

    Together with the copy count this proves each output pixel gets every weight exactly once.
    """
    _, (h_out, _) = spatial(layer)
    rows = range(h_out) if layer.strategy == "fully-unfolded" else (-1,)
    want = {(s, r) for s in range(layer.n_w) for r in rows}
    sites: dict[tuple[int, int], Counter] = defaultdict(Counter)
    for x in xbars:
        for b in x.blocks:
            sites[(b.slice, b.out_row)][(b.group, b.channels, b.kernel_rows, b.out_channels)] += 1
    if not sites and layer.pruned_weights:
        return
    if set(sites) != want:  # records outside the sites are XB510 already
        site = min(want - set(sites))
        raise fail("XB512", path, f"width slice {site[0]}, output row {site[1]} holds no block")
    first = sites[min(want)]
    for site, blocks in sites.items():
        if blocks != first or any(n != 1 for n in blocks.values()):
            raise fail("XB512", path, f"width slice {site[0]}, output row {site[1]} holds other blocks than "
                                      f"slice {min(want)[0]}, output row {min(want)[1]}")


def check_weights(doc: Document, arrays: Mapping[str, np.ndarray]) -> None:
    """Coverage (XB512), routing tables (XB350) and row blocks (XB521) of every layer, against its matrix."""
    for i, layer in enumerate(doc.layers):
        path = f"$.layers[{i}]"
        xbars = doc.crossbars[layer.first_crossbar:layer.first_crossbar + layer.crossbars]
        weight = arrays[layer.arrays.weight.key]
        if layer.strategy != "fully-folded":
            _check_sites_covered(layer, xbars, path)
        counts = weight_counts(layer, xbars)
        wrong = (counts != 0) & (counts != layer.copies)
        if wrong.any():
            g, r, c = (int(v[0]) for v in np.nonzero(wrong))
            raise fail("XB512", f"{path}", f"weight (group {g}, row {r}, column {c}) is placed {int(counts[g, r, c])} "
                                           f"times, the layer's copies are {layer.copies}")
        unplaced = counts == 0
        if int(unplaced.sum()) != layer.pruned_weights:
            raise fail("XB512", f"{path}.pruned_weights", f"is {layer.pruned_weights}; {int(unplaced.sum())} weights "
                                                          "are placed nowhere")
        if (weight[unplaced] != 0).any():
            raise fail("XB512", f"{path}.arrays.weight", "a weight that no crossbar holds is not zero")
        if layer.quant is not None:
            _check_integer_weights(layer, path, weight)
            blocks = fragment_blocks(layer, row_blocks(layer, xbars, weight)[0])
            got = [(b.group, row_ranges(b.rows)) for b in blocks]
            want = [(b.group, [tuple(r) for r in b.rows]) for b in layer.quant.row_blocks]
            if got != want:
                raise CompileError("XB521", f"{path}.quant.row_blocks: the crossbars read back as row blocks "
                                            f"{got[:2]}..., the netlist lists {want[:2]}...", location=Location(node=path))
            if layer.arrays.signs is not None:
                _check_signs(blocks, arrays[layer.arrays.signs.key], path)
        _check_routing(layer, xbars, path)


def _check_signs(blocks, signs: np.ndarray, path: str) -> None:
    """XB535 unless every polarized read's sign is +1 or -1 and no weight of the read has the other sign."""
    for i, b in enumerate(blocks):
        s = signs[i].astype(np.int64)
        wrong = (np.abs(s) != 1) | (b.weight.astype(np.int64) * s < 0).any(0)
        if wrong.any():
            col = int(np.flatnonzero(wrong)[0])
            raise CompileError("XB535", f"{path}.arrays.signs[{i}][{col}]: sign {int(s[col])} does not hold the "
                                        f"weights of fragment rows {row_ranges(b.rows)} of group {b.group}, column {col}",
                               location=Location(node=path))


def _check_integer_weights(layer: Layer, path: str, weight: np.ndarray) -> None:
    top = (1 << (layer.quant.weight_bits - 1)) - 1
    if weight.size and int(np.abs(weight.astype(np.int64)).max()) > top:
        raise fail("XB510", f"{path}.arrays.weight", f"holds a weight outside the {layer.quant.weight_bits}-bit range")


def _check_routing(layer: Layer, xbars: list[Crossbar], path: str) -> None:
    """XB350 unless a pruned layer's tables are those its records give (dense layers have none) and a pattern
    layer's crossbars hold exactly the rows their ``spm`` gives, in that order."""
    if layer.patterns is not None:
        for x in xbars:
            rows = spm_rows(layer, x)
            placed = crossbar_tables(layer, x).get("row_inputs", [])
            if placed != rows:
                raise CompileError("XB350", f"layer '{layer.name}': crossbar {x.id} holds matrix rows "
                                            f"{placed[:8]}..., its spm names rows {rows[:8]}...",
                                   location=Location(crossbar=x.id))
    if not layer.pruned_weights:
        if layer.fanin is not None or any(x.column_channels is not None or x.row_inputs is not None for x in xbars):
            raise fail("XB350", path, "a layer with no pruned weights has routing tables")
        return
    for x in xbars:
        want = crossbar_tables(layer, x)
        if (x.column_channels, x.row_inputs) != (want.get("column_channels"), want.get("row_inputs")):
            raise CompileError("XB350", f"layer '{layer.name}': the routing tables of crossbar {x.id} disagree with "
                                        "its placement", location=Location(crossbar=x.id))
    if layer.fanin != layer_fanin(layer, xbars):
        raise CompileError("XB350", f"layer '{layer.name}': the partial-sum fan-in disagrees with its crossbars",
                           location=Location(node=layer.name))
