"""Writing a report where the user asked (``--report DIR``).

The directory is checked before any work starts (`check`), as every other
output popek writes is (`popek.writable`): a campaign of ten minutes should
not end in "cannot write there".  Both files are written atomically, so a
killed command leaves the previous report whole.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from popek.errors import UserError
from popek.writable import ensure_writable_dir

JSON_NAME = "report.json"
HTML_NAME = "index.html"


def check(directory: str | None) -> None:
    """``--report DIR`` usable: made if missing, and takes files."""
    if directory:
        ensure_writable_dir(directory, "--report")


def write(directory: str, doc: dict) -> tuple[Path, Path]:
    """Write ``report.json`` and ``index.html`` into ``directory``; their paths."""
    from popek.spec.stored import write_atomic

    from .page import render

    where = ensure_writable_dir(directory, "--report")
    json_path, html_path = where / JSON_NAME, where / HTML_NAME
    try:
        write_atomic(json_path, (json.dumps(doc, indent=1) + "\n").encode("utf-8"))
        write_atomic(html_path, render(doc).encode("utf-8"))
        umask = os.umask(0)
        os.umask(umask)
        for p in (json_path, html_path):  # readable as any new file would be (write_atomic's are private)
            os.chmod(p, 0o666 & ~umask)
    except OSError as e:
        raise UserError(f"--report {directory}: cannot write: {e.strerror or e}") from None
    return json_path, html_path


def print_paths(paths: tuple[Path, Path]) -> None:
    """The report's paths, last, so that a terminal or a script finds them."""
    json_path, html_path = paths
    print(f"report: {json_path.resolve()}")
    print(f"report: {html_path.resolve()}")
