"""What a benchmark is, and how `make bench` measures and prints it.

A benchmark is a name, a ``prepare(steps)`` function and a step count.
``prepare`` builds everything (machines, images) and returns a `Prepared`:
the timed call, and a check run after it.  Only the call is timed.  Each
benchmark is prepared and run ``runs`` times; the figure is the median of
guest steps per second.  To add a section, write a module with a
``BENCHMARKS`` list and name it in ``bench/run.py``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Prepared:
    run: Callable[[], object]  # returns something with a ``.steps`` count
    check: Callable[[], None]  # raises if the run did not do the work


@dataclass(frozen=True)
class Benchmark:
    name: str
    prepare: Callable[[int], Prepared]
    steps: int
    target: int | None = None  # guest steps per second, if the issue sets one
    unit: str = "guest instr/s"


@dataclass(frozen=True)
class Figure:
    bench: Benchmark
    median: float
    samples: list[float]

    @property
    def verdict(self) -> str:
        if self.bench.target is None:
            return "-"
        return "met" if self.median >= self.bench.target else "NOT MET"


def measure(bench: Benchmark, runs: int) -> Figure:
    rates = []
    for _ in range(runs):
        prepared = bench.prepare(bench.steps)
        t0 = time.perf_counter()
        result = prepared.run()
        elapsed = time.perf_counter() - t0
        steps = getattr(result, "steps", bench.steps)
        if steps != bench.steps:
            raise AssertionError(f"{bench.name}: ran {steps} steps, expected {bench.steps}")
        prepared.check()
        rates.append(steps / elapsed)
    return Figure(bench, statistics.median(rates), rates)


def table(figures: list[Figure], runs: int) -> str:
    head = ("benchmark", "steps", f"median of {runs}", "min", "max", "target", "")
    rows = [head]
    for f in figures:
        rows.append((
            f.bench.name,
            f"{f.bench.steps:,}",
            f"{f.median:,.0f}",
            f"{min(f.samples):,.0f}",
            f"{max(f.samples):,.0f}",
            f"{f.bench.target:,}" if f.bench.target else "-",
            f.verdict,
        ))  # fmt: skip
    w = [max(len(r[k]) for r in rows) for k in range(len(head))]
    lines = []
    for i, r in enumerate(rows):
        cells = [r[0].ljust(w[0])] + [c.rjust(w[k]) for k, c in enumerate(r[1:-1], 1)] + [r[-1]]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)
