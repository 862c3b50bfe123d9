"""Asking Z3, with the discipline every proof here follows.

* Every query has a timeout; a query that runs out answers ``unknown`` and
  is reported as unknown, never as proved.
* One Z3 context per process: every term and solver lives in Z3's main
  context (nothing here creates a ``z3.Context``), so terms built by one
  module can be handed to another and cached across queries.
* A satisfying model is completed (``model_completion=True`` where values
  are read), so a counterexample is a whole concrete state.
* ``prefer`` constraints shape a witness without changing the answer: the
  query is decided without them, and they are kept only if the query stays
  satisfiable with them (e.g. "timer at 0" so a replay's tick is a no-op).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import z3

TIMEOUT_MS = 10_000

SAT, UNSAT, UNKNOWN = "sat", "unsat", "unknown"


@dataclass
class Answer:
    status: str  # SAT, UNSAT or UNKNOWN
    model: z3.ModelRef | None = None
    reason: str = ""  # why unknown (Z3's reason_unknown)
    seconds: float = 0.0


def _solver() -> z3.Solver:
    """Simplify and eliminate the equations a query is full of (fields copied
    from one state to another, fixed operands) before the SMT core sees it:
    on these queries that is one to two orders of magnitude faster, and
    far less erratic, than the default solver."""
    return z3.Then("simplify", "propagate-values", "solve-eqs", "simplify", "smt").solver()


STATS = {"queries": 0, "seconds": 0.0, "unknown": 0}


def check(
    constraints: list[z3.BoolRef],
    *,
    prefer: list[z3.BoolRef] = (),  # type: ignore[assignment]
    timeout_ms: int = TIMEOUT_MS,
) -> Answer:
    """Decide the conjunction of ``constraints``."""
    start = time.perf_counter()
    s = _solver()
    s.set("timeout", timeout_ms)
    s.add(*constraints)
    r = s.check()
    answer: Answer
    if r == z3.sat:
        model = s.model()
        if prefer:
            s.push()
            s.add(*prefer)
            if s.check() == z3.sat:
                model = s.model()
            s.pop()
        answer = Answer(SAT, model)
    elif r == z3.unsat:
        answer = Answer(UNSAT)
    else:
        answer = Answer(UNKNOWN, reason=s.reason_unknown())
        STATS["unknown"] += 1
    answer.seconds = time.perf_counter() - start
    STATS["queries"] += 1
    STATS["seconds"] += answer.seconds
    return answer
