"""Hypervisor types, checked and measured (issue 13, item 3).

* **Type 2 against type 1** (`type2_cost`): the same guest under a design
  as it ships (type 1: the VMM owns the host) and under the same design
  behind a host kernel (`popek.model.hosts.hosted`).  The guest's run must
  be the same in both and equal to bare (fidelity is the design's, not the
  host's: `check_type2` runs popek's ordinary properties on the hosted
  design); what differs is cost, in host steps: every trap costs the
  kernel's handler on top.
* **Type 0** (`check_partitioned`): guests side by side on a partitioned
  host (`popek.model.hosts.partition`), each on its own CPU.  Each guest
  must equal its bare twin after every slice (fidelity); a slice of one
  guest must change no host word outside that guest's partition (safety:
  no guest reaches another's storage or the manager's); and, since
  nothing is emulated, each guest's CPU must have run exactly its bare
  twin's steps, in the same real modes (its kernel in real supervisor
  mode).  `HOSTILE` guests load R far beyond their storage and store there,
  which a partition check that is off by a page lets through.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from popek.model.hosts.hosted import hosted
from popek.model.hosts.partition import PartitionManager
from popek.model.machine import Machine
from popek.session import canary
from popek.spec import state as st
from popek.spec.asm import assemble
from popek.spec.image import Image
from popek.spec.profiles import Profile
from popek.vmm import VMM, GuestState

from . import guest as g
from .multi_guest import MultiProblem
from .properties import Outcome, check


# -- type 2 -----------------------------------------------------------------------
def check_type2(design: type[VMM], case: g.GuestCase) -> Outcome:
    """popek's properties (fidelity against bare, safety) on ``design``
    behind a host kernel."""
    return check(hosted(design), case)


@dataclass
class TypeCost:
    """One guest under one design, as a type 1 and as a type 2 host."""

    design: str
    guest_steps: int
    traps: int  # host traps (each went through the kernel under type 2)
    host_steps: int  # type 1: what the host machine ran
    kernel_steps: int  # type 2: what the host kernel ran on top
    seconds1: float
    seconds2: float
    same_state: bool  # the guest ended the same under both

    @property
    def per_trap(self) -> float:
        return self.kernel_steps / self.traps if self.traps else 0.0

    @property
    def step_slowdown(self) -> float:
        """Host steps under type 2 over host steps under type 1."""
        return (self.host_steps + self.kernel_steps) / self.host_steps if self.host_steps else 1.0

    @property
    def time_slowdown(self) -> float:
        return self.seconds2 / self.seconds1 if self.seconds1 else 1.0


def _run(design: type[VMM], profile: Profile, image: Image, steps: int, memsize: int) -> tuple[VMM, GuestState, float]:
    host = Machine(profile, 1 << profile.arch.word)
    vmm = design(host)
    t = time.perf_counter()
    vmm.load(image, memsize=memsize)
    vmm.run(steps)
    return vmm, vmm.guest_state(), time.perf_counter() - t


def type2_cost(design: type[VMM], profile: Profile, image: Image, *, steps: int, memsize: int) -> TypeCost:
    """Run ``image`` under ``design`` as type 1 and as type 2; the kernel's
    steps come from the hosted design's counters, the host's from its
    counters of direct steps and traps."""
    one, state1, s1 = _run(design, profile, image, steps, memsize)
    two, state2, s2 = _run(hosted(design), profile, image, steps, memsize)
    c1, c2 = one.counters(), two.counters()
    traps = sum(c1.traps.values())
    return TypeCost(
        getattr(design, "name", design.__name__),
        c1.direct + c1.emulated,
        traps,
        c1.direct + traps,
        c2.extra["host_os_steps"],
        s1,
        s2,
        state1 == state2,
    )


# -- type 0 -----------------------------------------------------------------------
# A guest that loads R far past its own storage and stores just beyond its
# end; on bare hardware that store traps MEMORY (to a handler that halts),
# and so it must inside a partition.  {memsize} is its storage size.
HOSTILE = """
        .org  0x8
        .word 0x20, caught, 0, 0xffff   ; new PSW: supervisor, handler below
        .org  0x10
start:  li   r1, 0
        li   r2, 0xffff
        wrr  r1, r2                     ; R = (0, 0xffff): "all of storage"
        li   r3, 0x5a5a
        li   r4, {memsize}
        st   r3, 0(r4)                  ; the first word past the guest's storage
        st   r3, 40(r4)                 ; and one further on
        out  r3
caught: halt
"""


def hostile(profile: Profile, memsize: int) -> Image:
    return assemble(HOSTILE.format(memsize=memsize), profile)


@dataclass
class PartitionReport:
    """What a partitioned run showed, per guest and in all."""

    problems: list[MultiProblem] = field(default_factory=list)
    steps: dict[int, int] = field(default_factory=dict)  # guest -> steps run
    # guest -> real mode -> steps its CPU ran (nothing else runs on a type 0
    # host: these add up to the guest's steps, or something was emulated)
    modes: dict[int, dict[str, int]] = field(default_factory=dict)

    @property
    def first(self) -> MultiProblem | None:
        """The most serious problem: a safety finding before any other."""
        ranked = sorted(self.problems, key=lambda p: p.kind != "safety")
        return ranked[0] if ranked else None


def _mode_counts(census: Counter) -> dict[str, int]:
    out = {"supervisor": 0, "user": 0}
    for (_name, mode, _trapped), n in census.items():
        out["supervisor" if mode == st.SUPERVISOR else "user"] += n
    return out


def check_partitioned(
    profile: Profile,
    guests: Sequence[tuple[Image, int, int]],
    *,
    manager: type[PartitionManager] = PartitionManager,
    slice_steps: int = 97,
) -> PartitionReport:
    """Run ``guests`` (image, memsize, steps) side by side on a type 0 host
    whose storage starts as a canary, a slice at a time in turn, and check
    fidelity, safety and that nothing was emulated (see the module doc).
    A guest that differs from its twin stops there and the others run on;
    a safety finding ends the run (host storage is no longer trustworthy)."""
    report = PartitionReport()
    size = 1 << profile.arch.word
    host = manager(profile, storage=list(canary(size, profile.arch.mask)))
    twins: dict[int, Machine] = {}
    left: dict[int, int] = {}
    for image, memsize, steps in guests:
        gid = host.add_guest(image, memsize=memsize)
        twin = Machine(profile, memsize)
        twin.load(image)
        twin.census = Counter()
        twins[gid], left[gid] = twin, steps
        report.steps[gid] = 0
    while any(left.values()):
        for gid, twin in twins.items():
            n = min(slice_steps, left[gid])
            if n == 0:
                continue
            part = host.partitions[gid]
            before = list(host.storage)
            r = host.run(gid, n)
            moved = _first_change_outside(host.storage, before, part.allocation)
            if moved is not None:
                report.problems.append(MultiProblem(
                    "safety",
                    f"guest {gid} (partition [{part.base:#x}, {part.base + part.size:#x})) changed host word "
                    f"{moved:#06x} outside its partition: {before[moved]:#06x} -> {host.storage[moved]:#06x}",
                ))  # fmt: skip
                return report
            b = twin.run(n)
            report.steps[gid] += r.steps
            left[gid] = 0 if r.halted or r.steps < n else left[gid] - r.steps
            diffs = GuestState.from_machine(twin).differences(host.guest_state(gid))
            if r.steps != b.steps:
                diffs.insert(0, ("steps run", b.steps, r.steps))
            if diffs:
                names = ", ".join(d[0] for d in diffs[:6])
                report.problems.append(MultiProblem(
                    "fidelity", f"guest {gid} differs from its bare run after {report.steps[gid]} steps: {names}"
                ))  # fmt: skip
                left[gid] = 0  # this guest is done with; the others run on (one finding hides no other)
    if report.problems:
        return report
    for gid, twin in twins.items():
        ran, bare = host.mode_steps(gid), _mode_counts(twin.census)
        report.modes[gid] = ran
        if ran != bare:
            report.problems.append(MultiProblem(
                "efficiency", f"guest {gid}'s CPU ran {ran} steps by real mode; its bare run took {bare}"
            ))  # fmt: skip
    return report


def _first_change_outside(now: list[int], before: list[int], kept: range) -> int | None:
    """The first word outside ``kept`` where ``now`` and ``before`` differ."""
    if now[: kept.start] != before[: kept.start]:
        return next(a for a in range(kept.start) if now[a] != before[a])
    if now[kept.stop :] != before[kept.stop :]:
        return next(a for a in range(kept.stop, len(now)) if now[a] != before[a])
    return None
