"""Places popek writes to, checked before any work starts.

A campaign that cannot keep its findings, or a command whose ``--json`` path
cannot be written, should say so in one line before the first case, not
after the summary (or never).  Permission bits are not asked (`os.access`
says yes to root on a read-only file system): a directory is tried by
creating and removing a file in it.  Every check raises `UserError` naming
the option's ``what`` and the path.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from popek.errors import UserError


def ensure_writable_dir(path: str | Path, what: str) -> Path:
    """``path`` as a directory popek can create files in (made if missing)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{what} {p}: not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=p, prefix=".popek-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"{what} {p}: cannot write there: {e.strerror or e}") from None
    return p


def ensure_writable_file(path: str | Path, what: str) -> Path:
    """``path`` as a regular file popek can (re)write: its directory exists
    and takes files, and it is a regular file or not there yet.  A device
    (``/dev/full``), a FIFO or a directory is refused."""
    p = Path(path)
    try:
        info = os.stat(p)
    except FileNotFoundError:
        info = None
    except OSError as e:
        raise UserError(f"{what} {p}: {e.strerror or e}") from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise UserError(f"{what} {p}: is a directory, not a file")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise UserError(f"{what} {p}: not a regular file")
    parent = p.parent
    if not parent.is_dir():
        raise UserError(f"{what} {p}: directory {parent} does not exist")
    ensure_writable_dir(parent, what + " (its directory)")
    return p


def check_campaign_outputs(findings_dir: str | Path, db: str | None, json_path: str | None = None) -> None:
    """Everything a campaign command writes, checked before its first case:
    the findings directory, the example database (a directory, or a Redis
    server that answers), and the ``--json`` file."""
    from popek.fuzz.example_db import DatabaseError, check_database

    ensure_writable_dir(findings_dir, "findings directory")
    try:
        check_database(db)
    except DatabaseError as e:
        raise UserError(str(e)) from None
    if json_path:
        ensure_writable_file(json_path, "--json")
