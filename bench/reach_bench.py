"""The paravirtualizing pass's analysis (model/analysis/reach.py), measured, never asserted.

Milliseconds per generated guest to analyse it (``reach.analyse``, the
pass's cost per fuzz case, which runs once per case), as the median, 90th
percentile and maximum over the same 200 guests of ``from_profile`` drawn
with a fixed seed, for pg and x86, after one untimed pass over them (what
is compiled once per process is not counted).

Called by bench/run.py (``bench() -> [(name, value, unit)]``); runnable alone.
"""

from __future__ import annotations

import statistics
import time

from hypothesis import HealthCheck, Phase, given, seed, settings

from popek.fuzz import strategies
from popek.model.analysis import reach
from popek.spec.profiles import get

CASES = 200
SEED = 12345


def guests(profile: str) -> list:
    """(image, memsize) of ``CASES`` generated guests, the same every run."""
    p, out = get(profile), []

    @seed(SEED)
    @settings(max_examples=CASES, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategies.from_profile(profile))
    def draw(case) -> None:
        out.append((case.image(p), case.memsize))

    draw()
    return out


def analysis_ms(profile: str) -> list[float]:
    p, cases = get(profile), guests(profile)
    for image, memsize in cases:  # a campaign's steady state: every routine already compiled
        reach.analyse(image, p, memsize)
    times = []
    for image, memsize in cases:
        start = time.perf_counter()
        reach.analyse(image, p, memsize)
        times.append(1000 * (time.perf_counter() - start))
    return sorted(times)


def bench() -> list[tuple[str, float, str]]:
    rows = []
    for profile in ("pg", "x86"):
        t = analysis_ms(profile)
        rows += [
            (f"analysis per guest on {profile}, median", statistics.median(t), "ms"),
            (f"analysis per guest on {profile}, 90th percentile", t[int(0.9 * len(t))], "ms"),
            (f"analysis per guest on {profile}, max", t[-1], "ms"),
        ]
    return rows


if __name__ == "__main__":
    for name, value, unit in bench():
        print(f"{name:<55} {value:>10,.2f} {unit}")
