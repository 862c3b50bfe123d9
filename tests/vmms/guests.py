"""The hand-written guests of tests/guests/, and running them bare or under a VMM.

Kept apart from the tests so the benchmark and other test files can reuse it.
"""

from __future__ import annotations

from pathlib import Path

from popek.model.machine import Machine
from popek.registry import load
from popek.spec.asm import assemble
from popek.spec.profiles import all_profiles, get
from popek.vmm import VMM, GuestState

GUEST_DIR = Path(__file__).resolve().parent.parent / "guests"
MEMSIZE = 4096
MAX_STEPS = 20_000  # every guest halts well within this on bare hardware

# The profiles the guests are written for; vtx is x86 plus an extension
# these guests do not use, so it joins them once it is registered.
PROFILES = tuple(p for p in ("pg", "hybrid", "x86", "vtx") if p in {q.name for q in all_profiles()})

# guest -> the profiles it runs on
GUESTS: dict[str, tuple[str, ...]] = {
    "syscall": PROFILES,
    "timer": PROFILES,
    "pushf": PROFILES,
    "readr": PROFILES,
    "paging": PROFILES,
    "smc": PROFILES,
    "smc_irq": PROFILES,
    "jru": ("hybrid",),
}


def image(guest: str, profile: str):
    path = GUEST_DIR / f"{guest}.s"
    return assemble(path.read_text(), get(profile), file=str(path))


def run_bare(guest: str, profile: str, steps: int = MAX_STEPS) -> tuple[GuestState, int, bool]:
    m = Machine(get(profile), MEMSIZE)
    m.load(image(guest, profile))
    r = m.run(steps)
    return GuestState.from_machine(m), r.steps, r.halted


def vmm_for(design: str, guest: str, profile: str) -> VMM:
    p = get(profile)
    vmm = load(design)(Machine(p, 1 << p.arch.word))
    vmm.load(image(guest, profile), memsize=MEMSIZE)
    return vmm
