"""Timings of the Z3 side: classification, and the simulation and safety proofs.

``bench()`` measures itself (one process, one core, caches cleared first so
every definition is traced and every query asked afresh) and returns
``(name, seconds, target)`` rows for ``bench/run.py``.  Targets (issue 6):
classifying every instruction of every profile in at most 10 s, all
simulation and safety proofs in at most 60 s.
"""

from __future__ import annotations

import time

from popek.proofs import classify, simulation, solver
from popek.proofs.safety import prove_safety
from popek.spec.profiles import all_profiles


def _cold() -> None:
    classify._classify_definition.cache_clear()
    classify.relocation_lemma.cache_clear()
    simulation.translation_lemma.cache_clear()
    simulation.opaque_trace.cache_clear()


def bench() -> list[tuple[str, float, str]]:
    profiles = all_profiles()
    names = ", ".join(p.name for p in profiles)
    rows: list[tuple[str, float, str]] = []

    _cold()
    before = dict(solver.STATS)
    start = time.perf_counter()
    count = sum(len(classify.classify_profile(p)) for p in profiles)
    rows.append((f"classify {count} instructions ({names})", time.perf_counter() - start,
                 "s (target <= 10 s)"))
    unknown = solver.STATS["unknown"] - before["unknown"]

    _cold()
    start = time.perf_counter()
    for p in profiles:
        simulation.prove_trap_and_emulate(p)
        prove_safety(p)
    rows.append(("trap-and-emulate simulation + safety proofs, all profiles",
                 time.perf_counter() - start, "s (target <= 60 s)"))
    unknown += solver.STATS["unknown"] - before["unknown"] - unknown
    rows.append(("Z3 queries answered unknown (timeouts)", float(unknown), "(target 0)"))
    return rows


if __name__ == "__main__":
    for name, value, target in bench():
        print(f"{name:<60} {value:8.2f} {target}")
