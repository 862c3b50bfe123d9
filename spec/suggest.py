""""Did you mean ...?" for names a user types: profiles, VMMs, instructions.

A mistyped name used to get the whole list of known names, which makes the
user find the one they meant themselves.  `difflib` finds the close ones;
the list stays only when nothing is close.  It lives in `spec`, the bottom
layer, so that every layer's error messages can use it.
"""

from __future__ import annotations

import difflib
from typing import Iterable


def close_names(word: str, known: Iterable[str], n: int = 3) -> list[str]:
    """The known names closest to ``word`` (case ignored), best first."""
    names = sorted(set(known))
    by_lower: dict[str, str] = {}
    for name in names:
        by_lower.setdefault(name.lower(), name)
    return [by_lower[m] for m in difflib.get_close_matches(word.lower(), list(by_lower), n=n, cutoff=0.6)]


def did_you_mean(word: str, known: Iterable[str], what: str = "names") -> str:
    """``"did you mean 'x86'? known profiles: ..."``: the close names first
    (when there are any), then all of them, so that the message always says
    what would have worked."""
    names = sorted(set(known))
    close = close_names(word, names)
    known_text = f"known {what}: " + (", ".join(names) or "none")
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "? " + known_text
    return known_text
