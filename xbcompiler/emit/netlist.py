"""The netlist: deterministic JSON plus an ``.npz`` of weights checked by sha256 (docs/netlist.md).

Emission is a function of the placed crossbar program, not a pass. Reading never executes code:
JSON is validated against the bundled schema and arrays are loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from ..diagnostics import CompileError, Location
from ..ir.program import XbarProgram

FORMAT = "xbcompiler-netlist"
VERSION = 1
NETLIST_FILE = "netlist.json"
WEIGHTS_FILE = "weights.npz"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass
class Netlist:
    """An in-memory netlist: the JSON document and its named arrays."""

    doc: dict
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def layers(self) -> list[dict]:
        return self.doc["layers"]

    @property
    def summary(self) -> dict:
        return self.doc["summary"]

    def layer(self, name: str) -> dict:
        return next(layer for layer in self.doc["layers"] if layer["name"] == name)

    def json_bytes(self) -> bytes:
        return (json.dumps(self.doc, sort_keys=True, indent=1, allow_nan=False) + "\n").encode()

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``netlist.json`` and ``weights.npz`` atomically (temp files, then rename)."""
        out = Path(directory)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CompileError("XB004", f"cannot create output directory {out}: {exc.strerror}") from None
        blob = npz_bytes(self.arrays)
        self.doc["blobs"] = {WEIGHTS_FILE: {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}}
        _atomic_write(out / WEIGHTS_FILE, blob)
        _atomic_write(out / NETLIST_FILE, self.json_bytes())
        return out


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A byte-identical ``.npz`` for identical arrays: sorted names, fixed timestamps, stored entries."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            data = io.BytesIO()
            np.lib.format.write_array(data, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            zf.writestr(info, data.getvalue())
    return buf.getvalue()


def _atomic_write(path: Path, data: bytes) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise CompileError("XB004", f"cannot write {path}: {exc.strerror}") from None


def schema() -> dict:
    """The bundled JSON Schema of netlist.json."""
    return json.loads(resources.files("xbcompiler.emit").joinpath("netlist.schema.json").read_text())


def validate(doc: dict, file: str = NETLIST_FILE) -> None:
    """Check a netlist document against the schema (XB504 for another version, XB502 otherwise)."""
    import jsonschema

    if isinstance(doc, dict) and doc.get("format") == FORMAT and doc.get("version") != VERSION:
        raise CompileError("XB504", f"netlist version {doc.get('version')} is not supported (this is {VERSION})",
                           location=Location(file=file))
    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.path) or "(top level)"
        raise CompileError("XB502", f"netlist does not match its schema at {where}: {first.message}",
                           location=Location(file=file), details=[f"{len(errors)} schema error(s) in all"])


def load_netlist(directory: str | os.PathLike) -> Netlist:
    """Read and check a saved netlist: schema, then the sha256 of the weights, then every array."""
    d = Path(directory)
    path, blob_path = d / NETLIST_FILE, d / WEIGHTS_FILE
    for p in (path, blob_path):
        if not p.is_file():
            raise CompileError("XB501", f"{p.name} not found in {d}", location=Location(file=str(p)),
                               hint="pass the directory that `xbc compile -o DIR` wrote")
    try:
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CompileError("XB502", f"netlist.json is not valid JSON: {exc}", location=Location(file=str(path))) from None
    validate(doc, str(path))
    blob = blob_path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != doc["blobs"][WEIGHTS_FILE]["sha256"]:
        raise CompileError("XB503", f"weights.npz has sha256 {digest[:12]}..., the netlist expects "
                                    f"{doc['blobs'][WEIGHTS_FILE]['sha256'][:12]}...",
                           location=Location(file=str(blob_path)), hint="the blob was modified or truncated; recompile")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except Exception as exc:  # noqa: BLE001 - any unreadable blob is bad input
        raise CompileError("XB503", f"weights.npz cannot be read: {exc}", location=Location(file=str(blob_path))) from None
    netlist = Netlist(doc, arrays)
    check_arrays(netlist, str(blob_path))
    return netlist


def check_arrays(netlist: Netlist, file: str) -> None:
    """Every array the document names exists with the recorded shape (XB502)."""
    for key, shape in _expected_arrays(netlist.doc):
        arr = netlist.arrays.get(key)
        if arr is None or list(arr.shape) != list(shape):
            raise CompileError("XB502", f"array '{key}' is missing or has the wrong shape", location=Location(file=file))


def _expected_arrays(doc: dict):
    for c in doc["constants"]:
        yield c["key"], c["shape"]
    for layer in doc["layers"]:
        for entry in layer["arrays"].values():
            yield entry["key"], entry["shape"]


def emit_netlist(program: XbarProgram, target, pipeline: str) -> Netlist:
    """Serialise a placed crossbar program (ids in topological order, no timestamps)."""
    from ..quant.netlist import quantize_netlist
    from .build import build_netlist

    netlist = build_netlist(program, target, pipeline)
    if any(m.quant is not None for m in program.matrices.values()):
        quantize_netlist(netlist, program, target)
    return netlist
