"""The errors of a guarded VMM session (`popek.session`), on their own so
that the parts that run a plug-in in its own process (`popek.isolation`,
`popek.plugin_channel`) raise the same errors without depending on the
session, which depends on them."""

from __future__ import annotations

from typing import ClassVar


class SessionError(Exception):
    """A plug-in failed a call or broke the contract; ``str()`` is one line."""

    kind: ClassVar[str] = "contract"

    def __init__(self, message: str, *, method: str = "", detail: str = ""):
        super().__init__(message)
        self.method, self.detail = method, detail


class PluginCrashed(SessionError):
    """The plug-in raised, did not return in time, or returned the wrong type."""

    kind = "crash"


class ContractBroken(SessionError):
    """The plug-in returned a value the contract does not allow."""

    kind = "contract"


class UnsafeRun(SessionError):
    """``run(n)`` ran more than ``n`` guest steps: the VMM did not regain
    control within the bound it was given (a safety failure)."""

    kind = "safety"
