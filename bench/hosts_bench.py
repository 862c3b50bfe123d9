"""Hypervisor types (issue 13, item 3): what a host OS in front of the VMM
costs (type 2 against type 1), and what partitioning costs (type 0 against
bare).

The guest is examples/monitor/inner.s (a system call every ten user
instructions, 805 of them), run to its halt on profile pg.  Per design:
the host traps, the host kernel's steps per trap (examples/host_os/host_os.s,
from its entry to its upcall), host steps under type 2 over type 1 (what
the hardware ran: direct guest steps, traps, and under type 2 the kernel),
and wall time under type 2 over type 1 (the fastest of a few runs each;
it includes the VMM's own Python work, which host steps do not).  Type 0:
the guest on its own CPU in a partition against the bare machine, in host
steps and in wall time; nothing is emulated, so the steps are the same.
(Type 0's steps by real mode come from one run with the CPU's performance
counter on; the timed runs have it off on both sides, as the counter costs
more than the partition does on a guest that traps this often.)
Each run is checked (the guest ended as on bare) before it counts.
"""

from __future__ import annotations

import time
from pathlib import Path

from popek import registry
from popek.fuzz.host_types import type2_cost
from popek.model.hosts.partition import PartitionManager
from popek.model.machine import Machine
from popek.spec import profiles
from popek.spec.asm import assemble
from popek.vmm import GuestState

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = ROOT / "examples" / "monitor" / "inner.s"
DESIGNS = ("trap-and-emulate", "hybrid", "binary-translation", "paravirt", "emulator")
MEMSIZE = 0x1000
STEPS = 1_000_000
RUNS = 9  # the guest runs for milliseconds: the fastest of several runs


def _fastest(runs: list) -> float:
    return min(runs)


def bench() -> list[tuple[str, float, str]]:
    pg = profiles.get("pg")
    image = assemble(PROGRAM.read_text(), pg)
    bare = Machine(pg, MEMSIZE)
    bare.load(image)
    bare_steps = bare.run(STEPS).steps
    want = GuestState.from_machine(bare)
    rows: list[tuple[str, float, str]] = []
    for name in DESIGNS:
        design = registry.load(name)
        costs = [type2_cost(design, pg, image, steps=STEPS, memsize=MEMSIZE) for _ in range(RUNS)]
        c = costs[0]
        assert all(x.same_state for x in costs), f"{name}: type 2 changed the guest's run"
        rows += [
            (f"{name}: host traps", c.traps, "traps"),
            (f"{name}: host kernel steps per trap", c.per_trap, "steps"),
            (f"{name}: host steps, type 2 / type 1", c.step_slowdown, "x"),
            (f"{name}: wall time, type 2 / type 1", _fastest([x.seconds2 for x in costs]) / _fastest([x.seconds1 for x in costs]), "x"),
        ]  # fmt: skip

    def bare_run() -> float:  # the run only: setting up storage is not the guest's time
        m = Machine(pg, MEMSIZE)
        m.load(image)
        t = time.perf_counter()
        m.run(STEPS)
        return time.perf_counter() - t

    def partitioned_run(counted: bool = False) -> tuple[float, int, int]:
        host = PartitionManager(pg)
        gid = host.add_guest(image, memsize=MEMSIZE)
        if not counted:  # timed like bare, with no step counter
            host.partitions[gid].cpu.census = None
        t = time.perf_counter()
        r = host.run(gid, STEPS)
        seconds = time.perf_counter() - t
        assert host.guest_state(gid) == want, "type 0 changed the guest's run"
        modes = host.mode_steps(gid) if counted else {"supervisor": r.steps, "user": 0}
        return seconds, r.steps, r.steps - modes["supervisor"] - modes["user"]

    counted = partitioned_run(counted=True)
    t0 = [partitioned_run() for _ in range(RUNS)]
    tb = [bare_run() for _ in range(RUNS)]
    rows += [
        ("type 0: host steps / bare", counted[1] / bare_steps, "x"),
        ("type 0: guest steps emulated (the CPU's counter)", counted[2], "steps"),
        ("type 0: wall time / bare", min(x[0] for x in t0) / min(tb), "x"),
    ]
    return rows


if __name__ == "__main__":
    for row, value, unit in bench():
        print(f"{row:<55} {value:>14,.2f} {unit}")
