"""Saving and loading netlist folders: deterministic bytes, whole-folder atomic replacement, bounded reads.

A save writes ``netlist.json`` and ``weights.npz`` into a fresh sibling folder ``.<name>.tmp-*``
and swaps it in: the earlier folder is renamed to ``.<name>.old-*``, the new one to ``<name>``, and
the old one is removed. Whatever stops a save (an error, a signal, a crash), the earlier netlist is
either still at ``<name>`` or, between the two renames, at ``.<name>.old-*``; the next save or load
of ``<name>`` puts it back and removes every leftover. Reading never executes code and never
allocates what the document has not declared and bounded: archive members are checked by name,
compression and size from the zip directory before any is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..diagnostics import CompileError, Location

NETLIST_FILE = "netlist.json"
WEIGHTS_FILE = "weights.npz"
#: Files a netlist folder holds; a save refuses to replace a non-empty folder without ``netlist.json``.
NETLIST_FILES = (NETLIST_FILE, WEIGHTS_FILE)
#: The largest ``netlist.json`` read (bytes).
MAX_JSON_BYTES = 1 << 30
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_CHUNK = 1 << 20

#: Test hook: called with a step name before every file operation of a save (fault injection).
_before_step = None


def _step(name: str) -> None:
    if _before_step is not None:
        _before_step(name)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A byte-identical ``.npz`` for identical arrays: sorted names, fixed timestamps, stored entries."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(arrays[name]), allow_pickle=False)


def _siblings(out: Path, kind: str) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.{kind}-*")) if out.parent.is_dir() else []


def recover(out: Path) -> None:
    """Finish or undo an interrupted save of ``out``: restore the earlier folder if the swap was cut, drop leftovers."""
    olds = [p for p in _siblings(out, "old") if any(p.iterdir())]
    if olds and not out.exists():
        os.rename(olds[0], out)
    for p in [*_siblings(out, "old"), *_siblings(out, "tmp")]:
        shutil.rmtree(p, ignore_errors=True)


def write_folder(out: Path, writers: list[tuple[str, Callable[[Path], None]]]) -> Path:
    """Replace folder ``out`` by one holding the files ``writers`` write, in order, atomically (module docstring).

    Each writer is ``(file name, function(path))``; a later writer may read the files of earlier ones.
    """
    out = Path(out)
    if str(out) in ("", "."):
        raise CompileError("XB004", "name an output directory (not the current one)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        recover(out)
        if out.exists() and not out.is_dir():
            raise CompileError("XB004", f"{out} exists and is not a directory", location=Location(file=str(out)))
        if out.is_dir() and any(out.iterdir()) and not (out / NETLIST_FILE).is_file():
            raise CompileError("XB004", f"{out} is a non-empty directory that holds no netlist; it is not replaced",
                               location=Location(file=str(out)), hint="name a new or empty directory")
        _step("mkdtemp")
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        old = None
        try:
            os.chmod(tmp, 0o777 & ~_umask())
            for name, write in writers:
                _step(f"write {name}")
                write(tmp / name)  # plain open(): the umask gives the permissions
                _fsync(tmp / name)
            if out.exists():
                _step("rename old")
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
                os.rename(out, old)  # replaces the empty placeholder; the earlier folder stays whole
            _step("rename new")
            os.rename(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if old is not None and not out.exists():
                os.rename(old, out)  # the earlier folder back in place
            elif old is not None:
                shutil.rmtree(old, ignore_errors=True)  # the empty placeholder
            raise
        _step("remove old")
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise CompileError("XB004", f"cannot write {out}: {exc.strerror or exc}", location=Location(file=str(out))) from None
    return out


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def read_json(directory: Path) -> bytes:
    """The bytes of ``netlist.json`` (XB501 missing, XB515 too large)."""
    path = directory / NETLIST_FILE
    if not path.is_file():
        raise CompileError("XB501", f"{NETLIST_FILE} not found in {directory}", location=Location(file=str(path)),
                           hint="pass the directory that `xbc compile -o DIR` wrote")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise CompileError("XB515", f"{NETLIST_FILE} is {size} bytes, more than the {MAX_JSON_BYTES} read",
                           location=Location(file=str(path)))
    return path.read_bytes()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_arrays(path: Path, declared: dict[str, tuple[tuple[int, ...], str]], sha256: str) -> dict[str, np.ndarray]:
    """The arrays of ``weights.npz``, each checked against its declared shape and dtype before it is read.

    Order: the zip directory (members the netlist does not name, compressed or oversized members are
    refused unread), then the checksum, then each member's ``.npy`` header, then its data.
    """
    where = Location(file=str(path))
    if not path.is_file():
        raise CompileError("XB501", f"{WEIGHTS_FILE} not found in {path.parent}", location=where,
                           hint="pass the directory that `xbc compile -o DIR` wrote")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CompileError("XB503", f"{WEIGHTS_FILE} is not a readable archive: {exc}", location=where) from None
    with zf:
        members = {info.filename: info for info in zf.infolist()}
        names = {f"{key}.npy" for key in declared}
        extra = sorted(set(members) - names)
        if extra:
            raise CompileError("XB516", f"{WEIGHTS_FILE} holds member '{extra[0]}' that the netlist does not name",
                               location=where, details=[f"{len(extra)} unnamed member(s)"], hint="recompile")
        missing = sorted(names - set(members))
        if missing:
            raise CompileError("XB502", f"array '{missing[0][:-4]}' is missing from {WEIGHTS_FILE}", location=where)
        for key, (shape, dtype) in declared.items():
            info = members[f"{key}.npy"]
            nbytes = int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
            if info.compress_type != zipfile.ZIP_STORED or not nbytes <= info.file_size <= nbytes + 4096:
                raise CompileError("XB515", f"array '{key}' is stored compressed or its size disagrees with its "
                                            f"declared shape {list(shape)} {dtype}", location=where)
        digest = sha256_file(path)
        if digest != sha256:
            raise CompileError("XB503", f"{WEIGHTS_FILE} has sha256 {digest[:12]}..., the netlist expects {sha256[:12]}...",
                               location=where, hint="the blob was modified or truncated; recompile")
        arrays = {}
        for key, (shape, dtype) in declared.items():
            arrays[key] = _read_member(zf, f"{key}.npy", shape, dtype, where)
    return arrays


def _read_member(zf: zipfile.ZipFile, name: str, shape: tuple[int, ...], dtype: str, where: Location) -> np.ndarray:
    with zf.open(name) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            header = read(fh, max_header_size=4096)
        except (ValueError, OSError, SyntaxError) as exc:
            raise CompileError("XB503", f"array '{name[:-4]}' has a bad header: {exc}", location=where) from None
        got_shape, fortran, got_dtype = header
        if tuple(got_shape) != tuple(shape) or got_dtype != np.dtype(dtype) or got_dtype.hasobject or fortran:
            raise CompileError("XB502", f"array '{name[:-4]}' is {list(got_shape)} {got_dtype}, the netlist declares "
                                        f"{list(shape)} {dtype}", location=where)
        count = int(np.prod(shape, dtype=np.int64))
        data = fh.read(count * got_dtype.itemsize)
    if len(data) != count * got_dtype.itemsize:
        raise CompileError("XB503", f"array '{name[:-4]}' is truncated", location=where)
    return np.frombuffer(data, dtype=got_dtype).reshape(shape)


@contextlib.contextmanager
def failing_at(step: str, exc: BaseException):
    """Test helper: make a save raise ``exc`` just before ``step``."""
    global _before_step
    saved = _before_step

    def hook(name: str) -> None:
        if name == step:
            raise exc

    _before_step = hook
    try:
        yield
    finally:
        _before_step = saved
