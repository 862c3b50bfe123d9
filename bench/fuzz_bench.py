"""Fuzzing harness throughput (issue 5's targets), measured, never asserted.

* harness vs generation: cases/s of the full property (guest generated, run
  on the bare machine with ISA coverage and under trap-and-emulate with the
  safety watches, compared) against cases/s of Hypothesis drawing the same
  guests and doing nothing with them.  Target: >= 70%.
* campaign scaling: ``popek fuzz --workers 2`` against ``--workers 1``, as
  the campaigns' own cases/s (each worker's cases over its own running time,
  summed).  Target: >= 1.7x on a 2-core machine.

Called by bench/run.py (``bench() -> [(name, value, unit)]``); runnable alone.
"""

from __future__ import annotations

import tempfile
import time

from hypothesis import HealthCheck, Phase, given, settings

from popek import registry
from popek.fuzz import properties, strategies
from popek.fuzz.campaign import CampaignConfig, run_campaign
from popek.fuzz.isa_coverage import IsaCoverage

PROFILE = "pg"
VMM = "trap-and-emulate"
EXAMPLES = 400
CAMPAIGN_SECONDS = 20.0


def _rate(body) -> float:
    strategy = strategies.from_profile(PROFILE)
    run = settings(
        max_examples=EXAMPLES, database=None, deadline=None, phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )(given(strategy)(body))  # fmt: skip
    start = time.perf_counter()
    run()
    return EXAMPLES / (time.perf_counter() - start)


def generation_vs_harness() -> tuple[float, float]:
    cls = registry.load(VMM)
    cov = IsaCoverage()

    def nothing(case) -> None:
        pass

    def harness(case) -> None:
        properties.check(cls, case, coverage=cov)

    _rate(nothing)  # warm caches (compiled code, strategy plans) before timing
    return _rate(nothing), _rate(harness)


def campaign_rate(workers: int) -> float:
    with tempfile.TemporaryDirectory(prefix="popek-bench-") as tmp:
        config = CampaignConfig(
            vmm=VMM, profile=PROFILE, seconds=CAMPAIGN_SECONDS, workers=workers,
            findings_dir=f"{tmp}/findings", db=f"{tmp}/examples", status_dir=f"{tmp}/status", seed=7,
        )  # fmt: skip
        return run_campaign(config, progress=None).cases_per_second


def bench() -> list[tuple[str, float, str]]:
    gen, harness = generation_vs_harness()
    one, two = campaign_rate(1), campaign_rate(2)
    return [
        (f"generation only, from_profile({PROFILE!r})", gen, "cases/s"),
        (f"full harness, {VMM} on {PROFILE}", harness, "cases/s"),
        ("harness / generation (target >= 70)", 100 * harness / gen, "%"),
        (f"campaign --workers 1 ({CAMPAIGN_SECONDS:g} s)", one, "cases/s"),
        (f"campaign --workers 2 ({CAMPAIGN_SECONDS:g} s)", two, "cases/s"),
        ("workers 2 / workers 1 (target >= 1.7)", two / one if one else 0.0, "x"),
    ]


if __name__ == "__main__":
    for name, value, unit in bench():
        print(f"{name:<55} {value:>10,.2f} {unit}")
