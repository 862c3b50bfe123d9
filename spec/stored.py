"""Files popek keeps: read with bounds, checked field by field, written atomically.

A finding, an example-database entry, a JSON image (and, later, a snapshot)
is read back long after it was written, perhaps by another version, perhaps
after a crash, a full disk or a hand edit.  So every reader goes through
here: a size limit before anything is parsed, a nesting limit checked by a
scan *before* `json.loads` (whose recursion is Python's: a deep enough file
is a RecursionError, not a ValueError), integer literals capped in length, a
decompression limit, a versioned header, and accessors that name the file
and the field in a one-line `StoredError`.  Writers go through
`write_atomic`: a temporary file in the same directory, flushed and fsynced,
renamed over the target; a failed write leaves no temporary file behind.

It sits in ``popek.spec`` (the bottom layer) so that every layer can use it;
docs/file-formats.md describes the formats built on it.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import zlib
from pathlib import Path
from typing import Any

MAX_BYTES = 8 << 20  # a finding is a few kB; an image at most 64 k words
MAX_DEPTH = 32  # the deepest popek document nests 4 levels
MAX_INT_DIGITS = 40  # wider than any word popek has


class StoredError(ValueError):
    """A file (or a blob) that is not what popek wrote: names it and the field."""

    def __init__(self, file: str, message: str, field: str = ""):
        where = f"{file}: {field}: " if field else f"{file}: "
        super().__init__(where + message)
        self.file, self.field, self.message = file, field, message


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------
def nesting(text: str) -> int:
    """How deeply JSON ``text`` nests arrays and objects (strings skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"integer of {len(text)} digits is too long")
    return int(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number popek writes")


def loads(data: str | bytes, *, file: str, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """JSON from ``data`` within the limits; `StoredError` otherwise."""
    if len(data) > max_bytes:
        raise StoredError(file, f"{len(data)} bytes is more than the {max_bytes} a popek file holds")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise StoredError(file, f"not UTF-8 text (byte {e.start})") from None
    if nesting(data) > max_depth:
        raise StoredError(file, f"nested more than {max_depth} levels deep")
    try:
        return json.loads(data, parse_int=_bounded_int, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise StoredError(file, f"not valid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except ValueError as e:  # from the bounded parsers
        raise StoredError(file, str(e)) from None


def read_bytes(path: str | Path, *, max_bytes: int = MAX_BYTES, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``max_bytes``.  A FIFO, a device
    or a directory is refused before it is opened (opening a FIFO blocks)."""
    p = Path(path)
    try:
        info = os.stat(p)
    except FileNotFoundError:
        raise StoredError(str(p), f"no such {what}") from None
    except OSError as e:
        raise StoredError(str(p), f"cannot read: {e.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise StoredError(str(p), f"is a directory, not a {what}")
    if not stat.S_ISREG(info.st_mode):
        raise StoredError(str(p), f"not a regular file (a {what} is one)")
    if info.st_size > max_bytes:
        raise StoredError(str(p), f"{info.st_size} bytes is more than the {max_bytes} a {what} holds")
    try:
        with open(p, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise StoredError(str(p), f"cannot read: {e.strerror}") from None
    if len(data) > max_bytes:
        raise StoredError(str(p), f"more than the {max_bytes} bytes a {what} holds")
    return data


def read_json(path: str | Path, *, what: str = "file", max_bytes: int = MAX_BYTES) -> Any:
    return loads(read_bytes(path, max_bytes=max_bytes, what=what), file=str(path), max_bytes=max_bytes)


def inflate(data: bytes, *, limit: int, file: str, field: str = "") -> bytes:
    """zlib ``data`` decompressed to at most ``limit`` bytes (a bomb stops there)."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as e:
        raise StoredError(file, f"not zlib data: {e}", field) from None
    if len(out) > limit:
        raise StoredError(file, f"expands to more than {limit} bytes", field)
    if not d.eof:
        raise StoredError(file, "compressed data is truncated", field)
    return out


def check_header(doc: Any, *, file: str, kind: str, versions: tuple[int, ...]) -> int:
    """The version of a document of ``kind`` (``{"format": kind, "version": N}``);
    a document with no ``format`` field is version 0 (written before formats
    were versioned)."""
    if not isinstance(doc, dict):
        raise StoredError(file, f"a {kind} file holds a JSON object, not {type(doc).__name__}")
    if "format" not in doc:
        return 0
    if doc["format"] != kind:
        raise StoredError(file, f"is a {str(doc['format'])[:40]!r} file, not a {kind!r} file", "format")
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version not in versions:
        raise StoredError(file, f"version {version!r} is not one this popek reads "
                          f"({', '.join(map(str, versions))})", "version")  # fmt: skip
    return version


def integer(value: Any, lo: int, hi: int, *, file: str, field: str) -> int:
    """``value`` as an int in ``lo..hi`` (a bool is not an int here)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise StoredError(file, f"expected a whole number, got {type(value).__name__}", field)
    if not lo <= value <= hi:
        raise StoredError(file, f"{value} is outside {lo}..{hi}", field)
    return value


def text(value: Any, *, file: str, field: str, max_len: int = 10_000) -> str:
    if not isinstance(value, str):
        raise StoredError(file, f"expected text, got {type(value).__name__}", field)
    if len(value) > max_len:
        raise StoredError(file, f"text of {len(value)} characters is longer than {max_len}", field)
    return value


def array(value: Any, *, file: str, field: str, max_len: int) -> list:
    if not isinstance(value, list):
        raise StoredError(file, f"expected a list, got {type(value).__name__}", field)
    if len(value) > max_len:
        raise StoredError(file, f"{len(value)} entries is more than {max_len}", field)
    return value


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------
def write_atomic(path: str | Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` by ``data`` all at once: readers see the old file or
    the new one, never a part, also after a crash (fsync before the rename,
    and of the directory after it).  On failure the temporary file is removed
    and the OSError propagates; the old file, if any, is untouched.
    ``durable=False`` skips the fsyncs (about 4x faster here): still atomic
    against a killed process, for versions soon replaced by a durable one."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if not durable:
        return
    try:  # the rename itself made durable; not every file system lets a directory be fsynced
        dfd = os.open(p.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
