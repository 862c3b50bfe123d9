"""The error a user can fix, shared by the library and the command line.

Library modules (`popek.program_files`, `popek.vmm_runner`) raise
`UserError` for what the user got wrong (a bad file, a bad profile, a
misbehaving plug-in); `popek.cli` re-exports it and prints it as one line,
never as a traceback.  It lives here so that the library never imports the
command line.
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user can fix; printed without a traceback."""
