"""Atomic file output: a reader never sees a half-written report or results table."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write through `write` into a temp file in the same folder, fsync it, then `os.replace` it over `path`.

    On any failure (Ctrl-C included) the temp file is removed and an existing `path` is left
    untouched. The file gets the ordinary umask permissions, not mkstemp's 0600.
    """
    path = Path(path)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path
