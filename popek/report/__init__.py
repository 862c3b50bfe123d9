"""The report a person opens: ``report.json`` and a self-contained ``index.html``.

``popek verify``, ``check``, ``equiv`` and ``fuzz`` with ``--report DIR``
(and ``make verify``, always) write both.  The JSON is the record, versioned
and described by a JSON Schema shipped beside this module
(`schema_path`); the HTML is drawn from the JSON alone, so either can be
regenerated from the other's source and the page never says more than the
record.  The page opens offline: styles inline, plots as inline SVG drawn
by `popek.report.svg`, no script and nothing fetched.

Modules: `document` (the JSON, from what a command computed), `svg` (the
plots), `page` (the HTML), `files` (writing both where the user asked).
"""

from __future__ import annotations

from pathlib import Path

FORMAT = "popek-report"
VERSION = 1


def schema_path() -> Path:
    """The JSON Schema of ``report.json`` version `VERSION`."""
    return Path(__file__).with_name(f"report-v{VERSION}.schema.json")
