"""A last shrinking pass over a counterexample, after Hypothesis's own.

Hypothesis shrinks the choices that drew a case; some simplifications are
hard to reach that way (moving an instruction out of a trap handler into the
kernel, dropping the whole user program).  This pass works on the
`GuestCase` itself, greedily: it tries each simplification and keeps it when
the case still fails the same way (``still_fails``), until none applies or
the time budget runs out.  Each try is one run of the case, so the pass
costs at most a few hundred runs.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Iterator

from .guest import GuestCase


def _structural(case: GuestCase) -> Iterator[GuestCase]:
    """Whole-scaffold simplifications, biggest first."""
    every = case.kernel + (case.handler or ()) + (case.user or ())
    if case.handler is not None or case.user is not None:
        yield replace(case, kernel=every, handler=None, user=None, timer=0)
        yield replace(case, handler=None, user=None, timer=0)
    if case.user is not None:
        yield replace(case, kernel=case.kernel + case.user, user=None, timer=0)
    if case.timer:
        yield replace(case, timer=0)
    if case.chunks:
        yield replace(case, chunks=())
    if case.kdata:
        yield replace(case, kdata=())
    if case.page_perms is not None:
        yield replace(case, page_perms=None)


def _deletions(case: GuestCase) -> Iterator[GuestCase]:
    for name in ("kernel", "handler", "user"):
        ops = getattr(case, name)
        if not ops:
            continue
        for k in range(len(ops)):
            yield replace(case, **{name: ops[:k] + ops[k + 1 :]})


def minimize(
    case: GuestCase, still_fails: Callable[[GuestCase], bool], *, seconds: float = 10.0
) -> GuestCase:
    """The smallest case this pass reaches that ``still_fails``."""
    deadline = time.monotonic() + seconds
    improved = True
    while improved and time.monotonic() < deadline:
        improved = False
        for gen in (_structural, _deletions):
            for candidate in gen(case):
                if time.monotonic() >= deadline:
                    return case
                if candidate.instructions <= case.instructions and still_fails(candidate):
                    case = candidate
                    improved = True
                    break
            if improved:
                break
    return case
