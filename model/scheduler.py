"""Time-sharing several guests over k host CPUs: the lecture's CPU mapping.

    guests:   G1   G2   G3   G4          (n virtual CPUs)
               \\    |    |    /
    run queue: [G1, G2, G3, G4]          round robin, a slice each
               /              \\
    CPUs:    CPU0            CPU1        (k host Machines, one storage)

Each round, every CPU takes the next runnable guest it may run (a pinned
guest only on its own CPU: the one-to-one case when n <= k) and runs it for
one *time slice*: at most ``slice_steps`` guest steps.  The slice is the
host timer's job on real hardware; here the host machine's step bound is
that timer: `Machine.run` returns to the VMM after the bound however the
guest behaves, interrupts masked or not, so a guest that never yields still
loses the CPU at the end of its slice.  More guests than CPUs (overcommit)
just makes the queue longer.

Time is counted in host steps, read from each CPU's own performance
counter (`Machine.census`), not from what the VMM reports: a VMM that
lets a guest run past its slice and says nothing is seen.  CPUs run in
parallel, so a round lasts as long as its longest slice; the report gives,
per guest, its share of the host's CPU time, the elapsed time until it
finished against the host time it used (its slowdown against running alone
on a CPU), and how often it was switched in; the scheduling overhead (the
VMM's own work per switch) is what `bench/` measures in wall-clock time.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Mapping

from popek.model.machine import Machine


@dataclass
class GuestShare:
    gid: Any
    steps: int = 0  # guest steps run
    host_steps: int = 0  # host steps its slices took
    halted: bool = False
    slices: int = 0
    migrations: int = 0  # slices on another CPU than the one before
    finished_at: int | None = None  # elapsed host steps when it halted or met its budget

    def slowdown(self) -> float:
        """Elapsed time to finish over the time alone (the host time it used)."""
        return (self.finished_at or 0) / self.host_steps if self.host_steps else 1.0


@dataclass
class Schedule:
    cpus: int
    slice_steps: int
    guests: dict[Any, GuestShare] = field(default_factory=dict)
    rounds: int = 0
    elapsed: int = 0  # host steps, CPUs in parallel
    busy: int = 0  # host steps summed over CPUs

    def share(self, gid: Any) -> float:
        return self.guests[gid].host_steps / self.busy if self.busy else 0.0

    def format(self) -> str:
        rows = [f"schedule: {len(self.guests)} guests on {self.cpus} CPU(s), slices of {self.slice_steps} steps, "
                f"{self.rounds} rounds, {self.elapsed} host steps elapsed ({self.busy} CPU steps busy)"]  # fmt: skip
        for g in self.guests.values():
            rows.append(
                f"  guest {g.gid}: {g.steps} steps{' (halted)' if g.halted else ''}, {self.share(g.gid):.0%} of CPU time, "
                f"{g.slices} slices, {g.migrations} moves, finished at {g.finished_at}, "
                f"slowdown {g.slowdown():.2f}x against alone"
            )
        return "\n".join(rows)


def host_cpus(vmm: Any, k: int) -> list[Machine]:
    """The VMM's host and k-1 more CPUs over the same storage."""
    if k < 1:
        raise ValueError(f"a host needs at least one CPU, not {k}")
    host = vmm.host
    if k > 1 and not hasattr(vmm, "use_cpu"):
        raise ValueError(f"VMM {getattr(vmm, 'name', vmm)!r} runs its guests on one CPU")
    return [host] + [Machine(host.profile, len(host.M), storage=host.M) for _ in range(k - 1)]


def run_guests(
    vmm: Any,
    budgets: Mapping[Any, int],
    *,
    cpus: list[Machine],
    slice_steps: int = 200,
    pin: Mapping[Any, int] | None = None,
    host_time: bool = True,
) -> Schedule:
    """Run each guest of a multi-guest ``vmm`` until it halts or has run
    its budget of guest steps, time-sharing ``cpus``; ``pin`` maps a guest
    to the only CPU (index) it may run on.  ``host_time`` off: time is the
    guest steps the VMM reports (the CPUs' counters cost some 15% of a
    run; a benchmark of the scheduler's own overhead leaves them off)."""
    if slice_steps < 1:
        raise ValueError(f"a time slice is at least one step, not {slice_steps}")
    pin = dict(pin or {})
    for gid, c in pin.items():
        if not 0 <= c < len(cpus):
            raise ValueError(f"guest {gid} is pinned to CPU {c}, but the host has {len(cpus)}")
    sched = Schedule(len(cpus), slice_steps, {gid: GuestShare(gid) for gid in budgets})
    for cpu in cpus:  # the host's own count of the steps it takes
        if host_time and cpu.census is None:
            cpu.census = Counter()

    def clock(cpu: Machine) -> int:
        return sum(cpu.census.values()) if host_time else 0

    queue = deque(budgets)
    last_cpu: dict[Any, int] = {}
    while queue:
        sched.rounds += 1
        longest, taken = 0, []
        for c, cpu in enumerate(cpus):
            gid = next((g for g in queue if g not in taken and pin.get(g, c) == c), None)
            if gid is None:
                continue
            taken.append(gid)
            share = sched.guests[gid]
            vmm.select_guest(gid)
            if len(cpus) > 1:
                vmm.use_cpu(cpu)
            if last_cpu.get(gid, c) != c:
                share.migrations += 1
            last_cpu[gid] = c
            before = clock(cpu)
            r = vmm.run(min(slice_steps, budgets[gid] - share.steps))
            took = clock(cpu) - before if host_time else r.steps
            share.steps += r.steps
            share.host_steps += took
            share.slices += 1
            share.halted = r.halted
            longest = max(longest, took)
            sched.busy += took
            if r.halted or share.steps >= budgets[gid] or r.steps == 0:
                share.finished_at = sched.elapsed + took
        sched.elapsed += longest
        for gid in taken:  # to the back of the queue, or out when done
            queue.remove(gid)
            if sched.guests[gid].finished_at is None:
                queue.append(gid)
        if not taken:
            raise ValueError("no CPU may run any waiting guest (check the pinning)")
    if len(cpus) > 1:
        vmm.use_cpu(cpus[0])
    return sched
