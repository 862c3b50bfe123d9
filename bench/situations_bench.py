"""Situation coverage of default guests (issue 11, part 4), measured, never asserted.

For each profile, the share of N default guests (``from_profile(profile)``,
one fixed Hypothesis seed) whose bare run reaches each situation of
`popek.fuzz.situations.catalogue`.  Target: every situation >= 1%.

Called by bench/run.py (``bench() -> [(name, value, unit)]``); runnable
alone (``python bench/situations_bench.py [N]``).
"""

from __future__ import annotations

import sys

from hypothesis import HealthCheck, Phase, given, seed, settings

from popek.fuzz import execute, situations, strategies
from popek.fuzz.isa_coverage import IsaCoverage
from popek.spec import profiles

PROFILES = ("pg", "hybrid", "x86", "vtx")
CASES = 1000
SEED = 1


def shares(profile: str, cases: int = CASES, case_seed: int = SEED) -> dict[str, float]:
    """Situation -> share of ``cases`` default guests of ``profile`` reaching it."""
    prof = profiles.get(profile)
    total = IsaCoverage()

    @seed(case_seed)
    @settings(max_examples=cases, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategies.from_profile(profile))
    def run(case) -> None:
        one = IsaCoverage()
        execute.run_bare(case, coverage=one)
        total.merge(one)

    run()
    return situations.shares(dict(total.situations), total.observed, prof)


def bench(cases: int = CASES) -> list[tuple[str, float, str]]:
    rows = []
    for p in PROFILES:
        got = shares(p, cases)
        low = [n for n, v in got.items() if v < 0.01]
        rows.append((f"{p}: lowest share, of {cases} guests (target >= 1)", 100 * min(got.values()), "%"))
        rows += [(f"  {p}: {n}", 100 * v, "%" + ("  BELOW 1%" if v < 0.01 else "")) for n, v in got.items()]
        rows.append((f"{p}: situations below 1% (target 0)", float(len(low)), ""))
    return rows


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else CASES
    for name, value, unit in bench(n):
        print(f"{name:<55} {value:>10,.2f} {unit}")
