"""Snapshot files: a guest saved to disk, self-contained and versioned.

A file is three parts (docs/lifecycle.md)::

    POPEK-SNAPSHOT\\n                       magic line
    {"version": 1, "profile": ..., ...}\\n   header: one line of JSON
    <payload>                               the VMM's snapshot value, pickled

The header names the format version, the profile, the design (its
``name``) and the plug-in class (``module:Class``), the guest's storage
size when the value says, the payload's length and its SHA-256.  Reading
checks all of it before anything is unpickled or restored: a truncated,
corrupt, wrong-version, wrong-profile or wrong-design file is refused with
one line naming what is wrong (`SnapshotFileError`), so a restore never
starts on a bad file.  The payload is unpickled by an unpickler that
builds only containers, numbers and strings, and classes of popek or of
the plug-in's own package.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAGIC = b"POPEK-SNAPSHOT\n"
VERSION = 1
_MAX_HEADER = 4096  # bytes: a header line longer than this is not ours

_SAFE_BUILTINS = frozenset(
    {"tuple", "list", "dict", "set", "frozenset", "int", "str", "bytes", "bool", "float", "complex", "range",
     "slice", "NoneType", "bytearray"}
)  # fmt: skip


class SnapshotFileError(ValueError):
    """A snapshot file that cannot be restored; ``str()`` is one line."""


@dataclass(frozen=True)
class Header:
    version: int
    profile: str
    design: str
    vmm: str  # module:Class of the plug-in that took the snapshot
    memsize: int | None
    steps: int | None  # guest steps run before the snapshot, when the writer knows
    payload: int  # bytes
    sha256: str


def class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def write(path: str | os.PathLike, snap: Any, *, profile: str, vmm_cls: type,
          memsize: int | None = None, steps: int | None = None) -> Header:  # fmt: skip
    """Write ``snap`` (what ``vmm_cls().snapshot()`` returned) to ``path``,
    all at once (a temporary file renamed: a crash leaves no half file)."""
    try:
        payload = pickle.dumps(snap, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:  # the contract asks for a picklable value
        raise SnapshotFileError(f"the snapshot of {class_path(vmm_cls)} cannot be written: {type(e).__name__}: {e}") from None
    header = Header(
        VERSION, profile, str(getattr(vmm_cls, "name", vmm_cls.__name__)), class_path(vmm_cls),
        memsize, steps, len(payload), hashlib.sha256(payload).hexdigest(),
    )  # fmt: skip
    data = MAGIC + json.dumps(header.__dict__, sort_keys=True).encode() + b"\n" + payload
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return header


def read(path: str | os.PathLike, *, profile: str | None = None, vmm_cls: type | None = None) -> tuple[Header, Any]:
    """The header and snapshot value of ``path``, checked whole first;
    ``profile``/``vmm_cls``: what the restoring side is (refused if the file
    was written by another)."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise SnapshotFileError(f"{name}: cannot read: {e.strerror or e}") from None
    header = parse_header(data, name)
    if header.version != VERSION:
        raise SnapshotFileError(f"{name}: snapshot format version {header.version}, this popek reads version {VERSION}")
    if profile is not None and header.profile != profile:
        raise SnapshotFileError(f"{name}: a snapshot of a {header.profile!r} guest, not {profile!r}")
    if vmm_cls is not None and header.vmm != class_path(vmm_cls):
        raise SnapshotFileError(f"{name}: taken by {header.vmm} ({header.design}), not {class_path(vmm_cls)}")
    payload = data[data.index(b"\n", len(MAGIC)) + 1 :]
    if len(payload) < header.payload:
        raise SnapshotFileError(f"{name}: truncated: {len(payload)} of {header.payload} payload bytes")
    if len(payload) > header.payload:
        raise SnapshotFileError(f"{name}: {len(payload) - header.payload} bytes after the payload")
    if hashlib.sha256(payload).hexdigest() != header.sha256:
        raise SnapshotFileError(f"{name}: corrupt: the payload's checksum does not match the header's")
    try:
        snap = _Unpickler(io.BytesIO(payload), header.vmm).load()
    except SnapshotFileError:
        raise
    except Exception as e:
        raise SnapshotFileError(f"{name}: unreadable payload: {type(e).__name__}: {e}") from None
    return header, snap


def parse_header(data: bytes, name: str = "snapshot") -> Header:
    if not data.startswith(MAGIC):
        what = "not a popek snapshot file (no POPEK-SNAPSHOT line)"
        if not data:
            what = "empty"
        elif MAGIC.startswith(data):
            what = "truncated: the file ends inside its first line"
        raise SnapshotFileError(f"{name}: {what}")
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + _MAX_HEADER)
    if end < 0:
        raise SnapshotFileError(f"{name}: truncated: the header line does not end")
    try:
        fields = json.loads(data[len(MAGIC) : end])
        header = Header(**fields)
    except (ValueError, TypeError) as e:
        raise SnapshotFileError(f"{name}: corrupt header: {e}") from None
    ints = {"version": header.version, "payload": header.payload}
    if not all(isinstance(v, int) and v >= 0 for v in ints.values()) or not all(
        isinstance(v, str) for v in (header.profile, header.design, header.vmm, header.sha256)
    ):
        raise SnapshotFileError(f"{name}: corrupt header: a field has the wrong type")
    return header


class _Unpickler(pickle.Unpickler):
    """Builds nothing but plain values and classes of popek or of the plug-in's package."""

    def __init__(self, f, vmm: str):
        super().__init__(f)
        self.package = vmm.split(":")[0].split(".")[0]

    def find_class(self, module: str, name: str) -> Any:
        top = module.split(".")[0]
        if (module == "builtins" and name in _SAFE_BUILTINS) or module == "collections" and name in (
            "Counter", "OrderedDict", "deque",
        ) or top in ("popek", self.package):  # fmt: skip
            found = super().find_class(module, name)
            if isinstance(found, type):  # classes only: no function is called while reading
                return found
        raise SnapshotFileError(f"the payload names {module}.{name}, which a snapshot may not hold")
