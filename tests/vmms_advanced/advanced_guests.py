"""The hand-written guests of tests/guests/, for the advanced designs.

Every ``.s`` file there is a guest; it runs on every profile whose
instruction set assembles it (``jru.s`` only on hybrid).  Kept apart from
the tests so bench/advanced_bench.py can reuse it.
"""

from __future__ import annotations

from pathlib import Path

from popek.model.machine import Machine
from popek.registry import load
from popek.spec.asm import AsmError, assemble
from popek.spec.image import Image
from popek.spec.profiles import get
from popek.vmm import VMM, GuestState

GUEST_DIR = Path(__file__).resolve().parent.parent / "guests"
MEMSIZE = 4096
MAX_STEPS = 20_000
PROFILES = ("pg", "hybrid", "x86", "vtx")
ADVANCED = ("binary-translation", "paravirt", "hardware-assisted")


def image(guest: str, profile: str) -> Image:
    path = GUEST_DIR / f"{guest}.s"
    return assemble(path.read_text(), get(profile), file=str(path))


def guests() -> dict[str, tuple[str, ...]]:
    """guest name -> the profiles it assembles on."""
    out = {}
    for path in sorted(GUEST_DIR.glob("*.s")):
        ok = []
        for p in PROFILES:
            try:
                image(path.stem, p)
            except AsmError:
                continue
            ok.append(p)
        out[path.stem] = tuple(ok)
    return out


def run_bare(img: Image, profile: str, steps: int = MAX_STEPS) -> tuple[GuestState, int, bool]:
    m = Machine(get(profile), MEMSIZE)
    m.load(img)
    r = m.run(steps)
    return GuestState.from_machine(m), r.steps, r.halted


def vmm_for(design: str, img: Image, profile: str, memsize: int = MEMSIZE) -> VMM:
    p = get(profile)
    vmm = load(design)(Machine(p, 1 << p.arch.word))
    vmm.load(img, memsize=memsize)
    return vmm
