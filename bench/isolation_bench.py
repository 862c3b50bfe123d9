"""The cost of running plug-ins in their own process (issue 15), measured,
never asserted.

* per fuzz case: the median time of one `popek.fuzz.properties.check`
  (bare run, run under the VMM with the safety watches, compared) for the
  same plug-in class in-process and isolated (`popek.isolation`: one round
  trip to its process per case), over the same Hypothesis-drawn cases;
* harness / generation: cases/s of the full property against cases/s of
  Hypothesis drawing the same guests and doing nothing with them, for the
  shipped design (in-process: target >= 70%) and for the isolated plug-in.

The plug-in is `Plugin` below, a trap-and-emulate subclass that popek did
not ship, so by default it is isolated; loaded by its class object it runs
in-process.  Called by bench/run.py (``bench() -> [(name, value, unit)]``);
runnable alone.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings

from popek import isolation, registry
from popek.fuzz import properties, strategies
from popek.model.vmms.trap_and_emulate import TrapAndEmulate

PROFILE = "pg"
SHIPPED = "trap-and-emulate"
EXAMPLES = 300
SEEDS = 3


class Plugin(TrapAndEmulate):
    """A plug-in popek did not ship (the shipped design's behaviour)."""

    name = "bench-plugin"


def _cases(body, case_seed: int) -> float:
    """Seconds to draw EXAMPLES cases with ``case_seed`` and pass each to ``body``."""
    run = settings(
        max_examples=EXAMPLES, database=None, deadline=None, phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )(given(strategies.from_profile(PROFILE))(body))  # fmt: skip
    run = seed(case_seed)(run)
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _timed(cls, times: list[float]):
    def body(case) -> None:
        t0 = time.perf_counter()
        properties.check(cls, case)
        times.append(time.perf_counter() - t0)

    return body


def bench() -> list[tuple[str, float, str]]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # the plug-in process imports this module
    shipped = registry.load(SHIPPED)
    isolated = isolation.load(f"{Path(__file__).stem}:Plugin", isolate=True)
    in_process: list[float] = []
    remote: list[float] = []
    gen, har_shipped, har_isolated = [], [], []
    _cases(lambda case: None, 0)  # warm caches (compiled code, strategy plans) before timing
    _cases(_timed(shipped, []), 0)
    _cases(_timed(isolated, []), 0)  # and start the plug-in's process
    for s in range(1, SEEDS + 1):
        gen.append(_cases(lambda case: None, s))
        har_shipped.append(_cases(_timed(shipped, []), s))
        _cases(_timed(Plugin, in_process), s)
        har_isolated.append(_cases(_timed(isolated, remote), s))
    # rates are cases over seconds, the same cases on both sides: the ratio of rates is g / h
    ratio_shipped = statistics.median(100 * g / h for g, h in zip(gen, har_shipped))
    ratio_isolated = statistics.median(100 * g / h for g, h in zip(gen, har_isolated))
    here, there = statistics.median(in_process) * 1e3, statistics.median(remote) * 1e3
    return [
        (f"per case, plug-in in-process ({EXAMPLES * SEEDS} cases, median)", here, "ms"),
        ("per case, plug-in isolated (median)", there, "ms"),
        ("isolated - in-process, per case", there - here, "ms"),
        (f"harness / generation, {SHIPPED} in-process (target >= 70)", ratio_shipped, "%"),
        ("harness / generation, the plug-in isolated", ratio_isolated, "%"),
    ]


if __name__ == "__main__":
    for name, value, unit in bench():
        print(f"{name:<60} {value:>10,.2f} {unit}")
