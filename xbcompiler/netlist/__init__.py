"""The netlist: the one typed boundary between the compiler and the emulator (docs/netlist.md, format 2).

A :class:`Netlist` is an immutable document (:mod:`.types`) and the arrays it names: each crossbar
layer's matrix stored once, biases, integer datapath tables, host constants. The cells of any
physical crossbar are derived on demand from the placement records (:meth:`Netlist.crossbar_cells`).
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from importlib import resources
from pathlib import Path
from types import MappingProxyType

import msgspec
import numpy as np

from ..diagnostics import CompileError, Location
from ..gcpause import fewer_collections
from .check import check_document, check_target, check_weights, declared_arrays
from .encoding import Encoding
from .placement import (
    block_cells,
    crossbar_matrix_cells,
    footprint,
    physical_cells,
    row_block_key,
    row_blocks,
)
from .store import (
    NETLIST_FILE,
    WEIGHTS_FILE,
    read_arrays,
    read_json,
    recover,
    sha256_file,
    write_folder,
    write_npz,
)
from .types import FORMAT, VERSION, Blob, Crossbar, Document, Layer, Slice

__all__ = ["FORMAT", "NETLIST_FILE", "VERSION", "WEIGHTS_FILE", "Netlist", "load_netlist", "schema"]


class Netlist:
    """A netlist in memory: ``doc`` (typed, frozen) and ``arrays`` (read-only mapping of numpy arrays)."""

    __slots__ = ("__dict__", "arrays", "doc")

    def __init__(self, doc: Document, arrays: dict[str, np.ndarray]):
        for a in arrays.values():
            a.flags.writeable = False
        self.doc = doc
        self.arrays = MappingProxyType(dict(arrays))

    # --- reading ---------------------------------------------------------------------------------
    @property
    def layers(self) -> list[Layer]:
        return self.doc.layers

    @property
    def crossbars(self) -> list[Crossbar]:
        return self.doc.crossbars

    @property
    def summary(self) -> dict:
        """The ``summary`` keys as a plain dict (``{'crossbars': ..., 'tiles': ..., ...}``)."""
        return msgspec.to_builtins(self.doc.summary)

    @property
    def quantised(self) -> bool:
        return any(layer.quant is not None for layer in self.doc.layers)

    @cached_property
    def _layer_index(self) -> dict[str, Layer]:
        return {layer.name: layer for layer in self.doc.layers}

    @cached_property
    def _crossbar_index(self) -> dict[str, Crossbar]:
        return {x.id: x for x in self.doc.crossbars}

    @cached_property
    def _row_block_positions(self) -> dict[str, dict[tuple, int]]:
        """Per layer, each row block key's position in ``quant.row_blocks`` order (computed once per layer)."""
        return {}

    def row_block_positions(self, layer: Layer) -> dict[tuple, int]:
        """The position of each row block key of ``layer`` (for its per-row-block arrays: flips, ADC steps)."""
        found = self._row_block_positions
        if layer.name not in found:
            found[layer.name] = row_blocks(layer, self.layer_crossbars(layer), self.weight(layer))[1]
        return found[layer.name]

    def layer(self, name: str) -> Layer:
        try:
            return self._layer_index[name]
        except KeyError:
            raise CompileError("XB507", f"the netlist has no layer '{name}'",
                               hint="`xbc inspect DIR` lists the layers and crossbars") from None

    def layer_crossbars(self, layer: Layer | str) -> list[Crossbar]:
        layer = self.layer(layer) if isinstance(layer, str) else layer
        return self.doc.crossbars[layer.first_crossbar:layer.first_crossbar + layer.crossbars]

    def crossbar(self, crossbar_id: str) -> Crossbar:
        try:
            return self._crossbar_index[crossbar_id]
        except KeyError:
            raise CompileError("XB507", f"the netlist has no crossbar '{crossbar_id}'",
                               location=Location(crossbar=crossbar_id),
                               hint="crossbar ids are t<tile>.x<slot>; `xbc inspect DIR` lists them") from None

    def array(self, layer: Layer, name: str) -> np.ndarray | None:
        """The layer's array ``name`` (``weight``, ``bias``, ``adc_step``, ...) or None when it has none."""
        ref = getattr(layer.arrays, name)
        return None if ref is None else self.arrays[ref.key]

    def weight(self, layer: Layer | str) -> np.ndarray:
        """The layer's matrix ``[groups, K_g, N_g]``: real weights, or the integers ``Wq`` of a quantised layer."""
        layer = self.layer(layer) if isinstance(layer, str) else layer
        return self.arrays[layer.arrays.weight.key]

    def crossbar_cells(self, crossbar_id: str) -> np.ndarray:
        """What one physical crossbar holds, derived from its placement records (docs/netlist.md).

        Float layer: ``[rows, cols]`` real weights (one logical column per weight). Quantised layer:
        ``[rows, physical_cols]`` cell levels: logical column ``j`` is physical columns ``j * m_c ..
        j * m_c + m_c - 1`` (``m_c = physical_cols // cols``), its first ``P`` the layer's weight planes in
        order (the rest zero), flipped columns stored complemented. Physical places: a crossbar ``remap-faults``
        permuted holds placement cell ``(r, c)`` at row ``row_permutation[r]``, logical column
        ``column_permutation[c]``.
        """
        x = self.crossbar(crossbar_id)
        layer = self.layer(x.layer)
        weight = self.weight(layer)
        if layer.quant is None:
            return physical_cells(x, crossbar_matrix_cells(layer, x, weight))
        enc = Encoding(layer.quant.encoding)
        wq = crossbar_matrix_cells(layer, x, weight.astype(np.int64))
        occupied = crossbar_matrix_cells(layer, x, np.ones(weight.shape, dtype=bool))
        levels = enc.levels(wq) * occupied  # [P, rows, cols]
        flips = self.array(layer, "flips")
        if flips is not None:
            index = self.row_block_positions(layer)
            flip = np.zeros(levels.shape, dtype=bool)
            for record in (*x.slices, *x.blocks):
                f = flips[index[row_block_key(x, record)]] > 0  # [P, N_g]
                rows, cols = _record_cells(layer, x, record)
                flip[:, rows, cols] = f[:, _record_columns(layer, record, cols)]
            levels = np.where(flip & occupied, enc.max_level - levels, levels)
        out = np.zeros((x.rows, x.cols, x.physical_cols // x.cols), dtype=levels.dtype)
        out[:, :, :enc.planes] = np.moveaxis(levels, 0, -1)
        return physical_cells(x, out.reshape(x.rows, x.physical_cols))

    # --- writing ---------------------------------------------------------------------------------
    def json_bytes(self) -> bytes:
        """``netlist.json`` as written: compact, sorted keys, fields at their default left out, a final newline.

        (``python -m json.tool netlist.json`` pretty-prints it; ``xbc inspect`` shows crossbars.)
        """
        return msgspec.json.encode(self.doc, order="sorted") + b"\n"

    def to_builtins(self) -> dict:
        """The document as plain JSON values (a copy: editing it changes nothing here)."""
        return msgspec.to_builtins(self.doc, order="sorted")

    def save(self, directory: str | os.PathLike) -> Path:
        """Replace ``directory`` by this netlist's two files, atomically (a good earlier netlist survives any failure)."""
        state = {}

        def weights(path: Path) -> None:
            write_npz(path, dict(self.arrays))
            state["blob"] = Blob(sha256=sha256_file(path), bytes=path.stat().st_size)

        def document(path: Path) -> None:
            doc = msgspec.structs.replace(self.doc, blobs={WEIGHTS_FILE: state["blob"]})
            path.write_bytes(Netlist(doc, {}).json_bytes())

        return write_folder(Path(directory), [(WEIGHTS_FILE, weights), (NETLIST_FILE, document)])


def _record_cells(layer: Layer, x: Crossbar, record):
    """``(cell rows, cell cols)`` of every weight a record places."""
    if isinstance(record, Slice):
        f = footprint(layer, record)
        r, c = np.meshgrid(np.arange(f.r0, f.r1), np.arange(f.c0, f.c1), indexing="ij")
        return r.reshape(-1), c.reshape(-1)
    r, c, _, _ = block_cells(layer, record)
    return r, c


def _record_columns(layer: Layer, record, cols: np.ndarray) -> np.ndarray:
    """The group-local output column of each cell column of a record."""
    if isinstance(record, Slice):
        return record.cols[0] + cols - record.at[1]
    return record.out_channels[0] + (cols - record.at[1]) // layer.w_o


def schema() -> dict:
    """The bundled JSON Schema of ``netlist.json`` (generated from :mod:`.types`)."""
    return json.loads(resources.files("xbcompiler.netlist").joinpath("netlist.schema.json").read_text())


def generated_schema() -> dict:
    """The JSON Schema of the typed document, as :mod:`msgspec` generates it."""
    out = msgspec.json.decode(msgspec.json.encode(msgspec.json.schema(Document)))  # plain JSON values
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"xbcompiler-netlist-v{VERSION}", **out}


def write_schema() -> Path:
    """Regenerate the bundled ``netlist.schema.json`` from the types (after changing :mod:`.types`)."""
    path = Path(__file__).with_name("netlist.schema.json")
    path.write_text(json.dumps(generated_schema(), indent=1, sort_keys=True) + "\n")
    return path


class _Header(msgspec.Struct):
    format: str | None = None
    version: object = None


def decode(data: bytes, file: str = NETLIST_FILE) -> Document:
    """The typed document of ``netlist.json`` bytes: XB504 for another version, XB502 with the JSON path otherwise."""
    where = Location(file=file)
    try:
        header = msgspec.json.decode(data, type=_Header)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise CompileError("XB502", f"netlist.json is not valid JSON: {exc}", location=where) from None
    if header.format == FORMAT and header.version != VERSION:
        hint = "this is a version 1 netlist (every weight copy stored); recompile it with this xbcompiler" \
            if header.version == 1 else "recompile with this xbcompiler"
        raise CompileError("XB504", f"netlist version {header.version!r} is not supported (this reads {VERSION})",
                           location=where, hint=hint)
    try:
        return msgspec.json.decode(data, type=Document)
    except msgspec.ValidationError as exc:
        raise CompileError("XB502", f"netlist does not match its schema: {exc}", location=where) from None
    except (msgspec.DecodeError, RecursionError, MemoryError) as exc:
        raise CompileError("XB502", f"netlist.json cannot be decoded: {exc}", location=where) from None


def validate(netlist: Netlist) -> None:
    """Every load-time check of an in-memory netlist (:mod:`.check`)."""
    target = check_target(netlist.doc)
    check_document(netlist.doc, target)
    check_weights(netlist.doc, netlist.arrays)


@fewer_collections()
def load_netlist(directory: str | os.PathLike) -> Netlist:
    """Read and check a saved netlist; nothing runs before every check of :mod:`.check` has passed."""
    d = Path(directory)
    recover(d)
    doc = decode(read_json(d), str(d / NETLIST_FILE))
    target = check_target(doc)
    check_document(doc, target)
    blob = doc.blobs.get(WEIGHTS_FILE)
    if blob is None:
        raise CompileError("XB502", "$.blobs: the netlist names no weights.npz checksum", location=Location(file=str(d)))
    arrays = read_arrays(d / WEIGHTS_FILE, declared_arrays(doc), blob.sha256)
    check_weights(doc, arrays)
    return Netlist(doc, arrays)
