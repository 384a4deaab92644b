"""Reading user files safely and writing outputs atomically.

Reading: every file a user names (scenario, study, fleet, config.json, price CSV) goes through
`read_text_file`, which checks the kind and size before reading (a FIFO, a device or a
multi-gigabyte file is refused, not read), decodes strict UTF-8 and turns every OS error into
one-line `InputError`s. `load_structured` parses YAML or JSON with duplicate keys rejected,
alias expansion and nesting depth bounded.

Writing: `write_atomically` never leaves a half-written file; a full or read-only disk is an
`InputError` naming the path. `exclusive_lock` keeps two runs from writing one output.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from planner.errors import InputError, OutputError

MAX_INPUT_BYTES = 8 * 2**20
"""Largest input file read (8 MiB): scenario, study, fleet and config files are a few KiB; price CSVs well under this."""

MAX_YAML_NODES = 200_000
"""Most values a YAML document may hold with its aliases expanded (an alias bomb expands to billions)."""

MAX_NESTING = 64
"""Deepest nesting of mappings and lists accepted in a YAML or JSON file."""

MAX_ECHO_CHARS = 80
"""Longest user value repeated in a message; longer ones are cut with an ellipsis."""


def shorten(value: Any, limit: int = MAX_ECHO_CHARS) -> str:
    """`repr(value)` cut to `limit` characters, computed without expanding huge nested values."""
    if isinstance(value, (dict, list, tuple)) and _too_big(value, 200):
        return f"<{type(value).__name__} of {len(value)} items>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _too_big(value: Any, budget: int) -> bool:
    stack = [value]
    seen = 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > budget:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


def _os_message(path: Path, err: OSError) -> str:
    if err.errno == errno.ENAMETOOLONG:
        return f"{str(path)[:60]}…: file name too long."
    if isinstance(err, PermissionError):
        return f"{path}: permission denied (cannot read the file)."
    return f"{path}: cannot read ({err.strerror or type(err).__name__})."


def read_text_file(path: Path, what: str = "file") -> str:
    """The UTF-8 text of a regular file of at most MAX_INPUT_BYTES; every problem is a one-line `InputError`."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found.") from None
    except OSError as err:
        raise InputError(_os_message(path, err)) from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{path}: is a directory, expected a {what}.")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path}: not a regular file (a pipe, socket or device); expected a {what}.")
    if info.st_size > MAX_INPUT_BYTES:
        raise InputError(f"{path}: {info.st_size:,} bytes is larger than the {MAX_INPUT_BYTES:,}-byte limit for a {what}.")
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_INPUT_BYTES + 1)
    except OSError as err:
        raise InputError(_os_message(path, err)) from None
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(f"{path}: larger than the {MAX_INPUT_BYTES:,}-byte limit for a {what}.")
    if b"\x00" in data:
        raise InputError(f"{path}: binary content (NUL bytes); expected a UTF-8 text {what}.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text (invalid byte at offset {err.start}); save the {what} as UTF-8.") from None
    return text[1:] if text.startswith("\ufeff") else text


# ---- YAML and JSON with duplicate keys rejected, aliases and depth bounded -----------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and refuses documents whose aliases expand past MAX_YAML_NODES."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._expanded: dict[int, int] = {}

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a plain value", key_node.start_mark) from None
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {shorten(key, 40)}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, memo: dict[int, int], active: set[int], depth: int = 0) -> int:
    """Values the node stands for with every alias expanded (memoised per node, so the count itself is cheap)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise InputError("a YAML alias refers to itself (recursive structure)")
    if depth > MAX_NESTING:
        raise InputError(f"nesting deeper than {MAX_NESTING} levels")
    active.add(key)
    total = 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            total += _expanded_size(k, memo, active, depth + 1) + _expanded_size(v, memo, active, depth + 1)
            if total > MAX_YAML_NODES:
                break
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            total += _expanded_size(v, memo, active, depth + 1)
            if total > MAX_YAML_NODES:
                break
    active.discard(key)
    memo[key] = total
    return total


def _check_depth(value: Any, origin: Path) -> None:
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_NESTING:
            raise InputError(f"{origin}: nesting deeper than {MAX_NESTING} levels.")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {shorten(key, 40)}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_structured(text: str, path: Path) -> Any:
    """Parse YAML (or JSON when the name ends in .json) into plain Python values; one-line `InputError` on any problem."""
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text, object_pairs_hook=_json_pairs, parse_constant=_no_constant)
            _check_depth(data, path)
            return data
        loader = _StrictLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            size = _expanded_size(node, {}, set())
            if size > MAX_YAML_NODES:
                raise InputError(f"{path}: the YAML expands to more than {MAX_YAML_NODES:,} values (aliases); write it out plainly.")
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except InputError as err:
        message = str(err)
        raise InputError(message if message.startswith(str(path)) else f"{path}: {message}.") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}.") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "cannot parse"
        raise InputError(f"{path}: malformed YAML{where}: {problem}.") from None
    except ValueError as err:
        raise InputError(f"{path}: malformed JSON: {err}.") from None
    except RecursionError:
        raise InputError(f"{path}: nesting too deep (more than {MAX_NESTING} levels).") from None


CACHE_SETTLE_NS = 2_000_000_000
"""A file modified less than this long ago is not cached: a rewrite within one timestamp tick keeps size and mtime,
so only files that have settled are trusted to be unchanged while their stat is."""


def stat_key(path: Path) -> tuple[Any, ...] | None:
    """(path as given, device, inode, size, mtime, ctime of the file it resolves to): a cache key that changes whenever the
    file may have; None when it cannot be stat'ed."""
    try:
        info = Path(path).stat()
    except OSError:
        return None
    return (str(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def settled(key: tuple[Any, ...]) -> bool:
    """True when the file of a `stat_key` has not changed for CACHE_SETTLE_NS, so caching on the key is safe."""
    return time.time_ns() - max(key[4], key[5]) > CACHE_SETTLE_NS


def load_structured(path: Path, what: str = "YAML or JSON file") -> Any:
    """Read and parse a YAML or JSON file with every safety check of this module."""
    return parse_structured(read_text_file(Path(path), what), Path(path))


# ---- writing -------------------------------------------------------------------------------------


def _write_error(path: Path, err: OSError) -> OutputError:
    if err.errno == errno.ENOSPC:
        return OutputError(f"{path}: no space left on the device; nothing was written (free space or choose another folder).")
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return OutputError(f"{path}: cannot write here ({err.strerror}); nothing was written.")
    if err.errno == errno.ENAMETOOLONG:
        return OutputError(f"{str(path)[:60]}…: file name too long; nothing was written.")
    if err.errno == errno.ENOENT:
        return OutputError(f"{path}: folder {path.parent} does not exist; nothing was written.")
    if err.errno == errno.EISDIR:
        return OutputError(f"{path}: is a directory; give a file name.")
    return OutputError(f"{path}: cannot write ({err.strerror or shorten(str(err)) or type(err).__name__}); nothing was written.")


def check_writable(path: Path) -> None:
    """Fail before any work when `path`'s folder is missing, read-only or full: create and drop a temp file there."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give a file name.")
    try:
        with tempfile.TemporaryFile(dir=path.parent, prefix=f".{path.name[:100]}."):
            pass
    except OSError as err:
        raise _write_error(path, err) from None


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write through `write` into a temp file in the same folder, fsync it, then `os.replace` it over `path`.

    On any failure (Ctrl-C included) the temp file is removed and an existing `path` is left
    untouched; an OS error (full or read-only disk, missing folder) becomes an `InputError`.
    The file gets the ordinary umask permissions, not mkstemp's 0600.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give a file name.")
    try:
        handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:100]}.", suffix=".tmp")
    except OSError as err:
        raise _write_error(path, err) from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp_name, path)
    except OSError as err:
        Path(tmp_name).unlink(missing_ok=True)
        raise _write_error(path, err) from None
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock beside `path` (a hidden `.NAME.lock`) for the block; a held lock is an `InputError`.

    The lock file is removed on release. A run that locked a file just unlinked by another
    sees that its file is no longer the one at the path and tries again, so two runs never
    hold "the" lock at once.
    """
    import fcntl

    path = Path(path)
    lock_path = path.parent / f".{path.name[:200]}.lock"
    for _ in range(20):
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise _write_error(lock_path, err) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(f"{path}: another run is writing this output now (lock {lock_path}); "
                             f"wait for it or choose another file.") from None
        try:
            current = os.stat(lock_path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)  # locked a file another run has just removed: take the new one
    else:
        raise InputError(f"{path}: could not take the output lock {lock_path}.")
    try:
        yield
    finally:
        try:
            lock_path.unlink(missing_ok=True)
        finally:
            os.close(fd)
