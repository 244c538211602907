"""Output that ``xbc`` writes whole or not at all: netlist directories and single files."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ..diagnostics import CompileError, Location

NETLIST_FILE = "netlist.json"


def save_atomically(compiled, out: Path) -> Path:
    """Save into a temporary sibling directory, then move it into place.

    A new ``out`` appears whole (one rename); in an existing directory the two files are replaced one
    by one. On failure the temporary directory, and ``out`` and any parents this call created, go away.
    """
    out = Path(out)
    existed = out.exists()
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    tmp: Path | None = None

    def undo() -> None:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if not existed and out.is_dir():
            shutil.rmtree(out, ignore_errors=True)
        for p in created:  # innermost first
            with contextlib.suppress(OSError):
                p.rmdir()

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        compiled.save(tmp)
        if existed:  # the netlist last: it names the weights' sha256
            for name in sorted((p.name for p in tmp.iterdir()), key=lambda n: (n == NETLIST_FILE, n)):
                os.replace(tmp / name, out / name)
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except OSError as exc:
        undo()
        raise CompileError("XB004", f"cannot write the netlist to {out}: {exc.strerror or exc}",
                           location=Location(file=str(out))) from None
    except BaseException:
        undo()
        raise
    return out


def write_atomically(path: Path, write: Callable[[BinaryIO], None], *, make_parents: bool = False) -> Path:
    """Call ``write`` on a temporary file next to ``path``, then rename it to ``path``.

    ``path`` is either replaced whole or left as it was; the temporary file never stays behind. The file
    gets the permissions a plain ``open()`` would give it (``0o666`` less the umask). A directory that
    cannot be written (missing, unless ``make_parents``; read-only; ``path`` a directory) is XB004.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        if make_parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())  # mkstemp makes it 0o600
            write(fh)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise CompileError("XB004", f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
