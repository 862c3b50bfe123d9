"""Recursive virtualization (issue 13): the slowdown per level of nesting.

The inner guest is examples/monitor/inner.s (a kernel serving a system
call every ten user instructions).  Level 0 runs it on the bare machine;
level 1 under the monitor in guest code (examples/monitor/monitor.s) on
the bare machine; level 2 the monitor and its guest under each shipped
Python VMM that declares pg; level 3 a monitor under the monitor, under
trap-and-emulate.  Each row gives the time against the level below and
against bare, and the traps that explain it: ``inner`` traps are the
inner guest's into the monitor, ``vmm`` traps the Python VMM's.  Every run
is checked to end where the bare run ends (same output) before it is
timed; times are the fastest of a few runs.
"""

from __future__ import annotations

import time
from pathlib import Path

from popek import registry
from popek.fuzz import nesting as N
from popek.model.machine import Machine
from popek.spec import profiles
from popek.spec.asm import assemble

ROOT = Path(__file__).resolve().parents[1]
INNER = ROOT / "examples" / "monitor" / "inner.s"
MEMSIZE = 0x400
RUNS = 3
BUDGET = 10_000_000


def _fastest(fn):
    best, result = float("inf"), None
    for _ in range(RUNS):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def bench() -> list[tuple[str, float, str]]:
    pg = profiles.get("pg")
    monitor = N.Monitor.load(profile=pg)
    inner = assemble(INNER.read_text(), pg)
    one, size1 = N.nest(monitor, inner, MEMSIZE)
    two, size2 = N.nest(monitor, one, size1)

    def bare(image, memsize):
        m = Machine(pg, memsize)
        m.load(image)
        r = m.run(BUDGET)
        return m, r

    t0, (m0, r0) = _fastest(lambda: bare(inner, MEMSIZE))
    expected = list(m0.out)
    t1, (m1, r1) = _fastest(lambda: bare(one, size1))
    assert r1.halted and list(m1.out) == expected, "the monitor did not finish its guest"
    traps = N.run_under_monitor(monitor, inner, MEMSIZE, [r0.steps]).traps
    rows = [
        ("L0 inner guest on bare (steps)", float(r0.steps), f"steps in {t0 * 1e3:.1f} ms"),
        ("L1 under the monitor, on bare: slowdown vs L0", t1 / t0,
         f"x  ({r1.steps} steps; {traps} inner traps, {(r1.steps - r0.steps) / max(traps, 1):.0f} monitor steps each)"),
    ]  # fmt: skip
    for name in registry.BUILTINS:
        cls = registry.load(name)
        if "pg" not in cls.supports:
            continue

        def under(cls=cls, image=one, memsize=size1):
            states, run = N.run_vmm_image(cls, image, memsize, pg, [BUDGET], safety=False)
            return states, run

        t2, (states, run) = _fastest(under)
        if run.problems:
            rows.append((f"L2 under {name}", 0.0, f"not measured: {run.problems[0][:60]}"))
            continue
        assert run.halted and list(states[-1].out) == expected, f"{name}: the nested run did not finish"
        rows.append((f"L2 under {name}: slowdown vs L1 (vs L0)", t2 / t1,
                     f"x  ({t2 / t0:.0f}x bare; {traps} inner traps, {run.vmm_traps} vmm traps)"))  # fmt: skip
    te = registry.load("trap-and-emulate")
    t3, (states, run) = _fastest(lambda: N.run_vmm_image(te, two, size2, pg, [BUDGET], safety=False))
    assert run.halted and list(states[-1].out) == expected, "three deep did not finish"
    t2b, _ = _fastest(lambda: bare(two, size2))
    rows.append(("L2' monitor under monitor, bare: slowdown vs L1", t2b / t1, f"x  ({t2b / t0:.0f}x bare)"))
    rows.append(("L3 that, under trap-and-emulate: slowdown vs L2'", t3 / t2b,
                 f"x  ({t3 / t0:.0f}x bare; {run.vmm_traps} vmm traps)"))  # fmt: skip
    return rows


if __name__ == "__main__":
    for row, value, unit in bench():
        print(f"{row:<55} {value:>14,.1f} {unit}")
