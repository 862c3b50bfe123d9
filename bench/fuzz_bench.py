"""Fuzzing harness throughput (issue 5's targets), measured, never asserted.

* harness vs generation: cases/s of the full property (guest generated, run
  on the bare machine with ISA coverage and under trap-and-emulate with the
  safety watches, compared) against cases/s of Hypothesis drawing the same
  guests and doing nothing with them.  Target: >= 70%.  Both sides draw the
  same cases (the same Hypothesis seed), one right after the other, for
  PAIRS seeds; the figure is the median of the pairs' ratios.  (Unseeded,
  the two sides drew different guests, and single pairs moved by 10 points
  from run to run on their sizes alone.)
* campaign scaling: ``popek fuzz --workers 2`` against ``--workers 1``, as
  the campaigns' own cases/s (each worker's cases over its own running time,
  summed).  Target: >= 1.7x on a 2-core machine.

Called by bench/run.py (``bench() -> [(name, value, unit)]``); runnable alone.
"""

from __future__ import annotations

import tempfile
import time

import statistics

from hypothesis import HealthCheck, Phase, given, seed, settings

from popek import registry
from popek.fuzz import properties, strategies
from popek.fuzz.campaign import run_campaign
from popek.fuzz.campaign_config import CampaignConfig
from popek.fuzz.isa_coverage import IsaCoverage

PROFILE = "pg"
VMM = "trap-and-emulate"
EXAMPLES = 400
PAIRS = 5
CAMPAIGN_SECONDS = 20.0


def _rate(body, case_seed: int) -> float:
    strategy = strategies.from_profile(PROFILE)
    run = settings(
        max_examples=EXAMPLES, database=None, deadline=None, phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )(given(strategy)(body))  # fmt: skip
    run = seed(case_seed)(run)
    start = time.perf_counter()
    run()
    return EXAMPLES / (time.perf_counter() - start)


def generation_vs_harness() -> tuple[float, float, float]:
    """Median generation and harness rates (cases/s), and the median of the
    per-seed ratios (%)."""
    cls = registry.load(VMM)
    cov = IsaCoverage()

    def nothing(case) -> None:
        pass

    def harness(case) -> None:
        properties.check(cls, case, coverage=cov)

    _rate(nothing, 0)  # warm caches (compiled code, strategy plans) before timing
    _rate(harness, 0)
    gens, harnesses = [], []
    for case_seed in range(1, PAIRS + 1):
        gens.append(_rate(nothing, case_seed))
        harnesses.append(_rate(harness, case_seed))
    ratios = [100 * h / g for g, h in zip(gens, harnesses)]
    return statistics.median(gens), statistics.median(harnesses), statistics.median(ratios)


def campaign_rate(workers: int) -> float:
    with tempfile.TemporaryDirectory(prefix="popek-bench-") as tmp:
        config = CampaignConfig(
            vmm=VMM, profile=PROFILE, seconds=CAMPAIGN_SECONDS, workers=workers,
            findings_dir=f"{tmp}/findings", db=f"{tmp}/examples", status_dir=f"{tmp}/status", seed=7,
        )  # fmt: skip
        return run_campaign(config, progress=None).cases_per_second


def bench() -> list[tuple[str, float, str]]:
    gen, harness, ratio = generation_vs_harness()
    one, two = campaign_rate(1), campaign_rate(2)
    return [
        (f"generation only, from_profile({PROFILE!r})", gen, "cases/s"),
        (f"full harness, {VMM} on {PROFILE}", harness, "cases/s"),
        (f"harness / generation, median of {PAIRS} seeds (target >= 70)", ratio, "%"),
        (f"campaign --workers 1 ({CAMPAIGN_SECONDS:g} s)", one, "cases/s"),
        (f"campaign --workers 2 ({CAMPAIGN_SECONDS:g} s)", two, "cases/s"),
        ("workers 2 / workers 1 (target >= 1.7)", two / one if one else 0.0, "x"),
    ]


if __name__ == "__main__":
    for name, value, unit in bench():
        print(f"{name:<55} {value:>10,.2f} {unit}")
