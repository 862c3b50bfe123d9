"""Asking Z3, with the discipline every proof here follows.

* Every query has a budget; a query that spends it answers ``unknown``
  and is reported as unknown, never as proved.  The budget is counted in
  Z3's own resource units (``rlimit``), not in seconds, so the same query
  gets the same answer and the same witness on a quiet or a loaded machine
  (with a wall-clock budget, which configuration of a portfolio answered,
  and so which model came back, depended on the load).
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

# About ten seconds of Z3 on the machine it was measured on (2.6 to 7.7
# million units a second over every query of `popek prove --all`, its VMM
# proofs and its type 0 proofs; the largest decided query took 11.7 million).
BUDGET = 50_000_000
# A wall-clock limit behind the budget, for a part of Z3 that does not count
# its resources: far above what the budget lasts, so it never decides alone
# on a working Z3.
BACKSTOP_MS = 120_000

SAT, UNSAT, UNKNOWN = "sat", "unsat", "unknown"


@dataclass
class Answer:
    status: str  # SAT, UNSAT or UNKNOWN
    model: z3.ModelRef | None = None
    reason: str = ""  # why unknown (Z3's reason_unknown)
    seconds: float = 0.0


_PREPARE = ("simplify", "propagate-values", "solve-eqs", "simplify")

# Solver configurations, by name.  Each first simplifies and eliminates the
# equations a query is full of (fields copied from one state to another,
# fixed operands): on these queries that is one to two orders of magnitude
# faster, and far less erratic, than handing the query over as it is.
STRATEGIES = {
    "smt": lambda: z3.Then(*_PREPARE, "smt").solver(),
    "qfaufbv": lambda: z3.Then(*_PREPARE, z3.Tactic("qfaufbv")).solver(),
    "default": z3.Solver,
}

# Bit-vector queries are erratic: the same query can take 0.1 s or 20 s
# depending on term order.  A portfolio tries configurations one after the
# other, each with a slice of the budget, and answers with the first
# that decides.
PORTFOLIO = (("smt", 0.05), ("default", 0.1), ("qfaufbv", 0.15), ("smt", 0.7))
ARITHMETIC_PORTFOLIO = (("qfaufbv", 0.15), ("smt", 0.25), ("default", 0.6))


STATS = {"queries": 0, "seconds": 0.0, "unknown": 0}


def check(
    constraints: list[z3.BoolRef],
    *,
    prefer: list[z3.BoolRef] = (),  # type: ignore[assignment]
    budget: int = BUDGET,
    portfolio: tuple[tuple[str, float], ...] = PORTFOLIO,
) -> Answer:
    """Decide the conjunction of ``constraints`` within ``budget`` resource
    units in all (each configuration of the portfolio its share)."""
    start = time.perf_counter()
    reasons = []
    for name, share in portfolio:
        s = STRATEGIES[name]()
        s.set("rlimit", max(1, int(budget * share)))
        s.set("timeout", max(1, int(BACKSTOP_MS * share)))
        s.add(*constraints)
        try:
            r = s.check()
        except z3.Z3Exception as e:  # a configuration that cannot take this query
            reasons.append(f"{name}: {e}")
            continue
        if r != z3.unknown:
            break
        reasons.append(f"{name}: {s.reason_unknown()}")
    else:
        r = z3.unknown
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
        answer = Answer(UNKNOWN, reason="; ".join(reasons))
        STATS["unknown"] += 1
    answer.seconds = time.perf_counter() - start
    STATS["queries"] += 1
    STATS["seconds"] += answer.seconds
    return answer
