"""popek's version, as the installed distribution records it.

Asked by ``popek --version`` and written into every report, so it lives
below the command line (the report is library code)."""

from __future__ import annotations


def version() -> str:
    """The installed distribution's version (``0+unknown`` when run from a
    checkout that was never installed)."""
    from importlib import metadata

    try:
        return metadata.version("popek")
    except metadata.PackageNotFoundError:
        return "0+unknown"
