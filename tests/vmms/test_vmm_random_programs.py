"""Seeded random programs: where a design is declared faithful, it agrees
with bare hardware on every one of them.

Not the fuzzer (popek.fuzz shrinks and reports); a fixed, fast sample that
keeps the designs' plumbing honest across traps of every cause, timer
interrupts, user mode, odd R values and paging that the hand-written
guests do not reach.
"""

from __future__ import annotations

import random

import pytest

from popek.model.machine import Machine
from popek.registry import BUILTINS, load
from popek.spec.encoding import encode
from popek.spec.image import Image
from popek.spec.profiles import get
from popek.vmm import GuestState

MEMSIZE = 512
SEEDS = range(120)


def random_image(profile_name: str, rng: random.Random) -> Image:
    """Valid instructions with operands biased towards interesting values,
    and a random new PSW (handler, mode, R) so that traps go somewhere."""
    p = get(profile_name)
    insns = list(p.insns)
    words: dict[int, int] = {}
    for a in range(16, 400, 2):
        insn = rng.choice(insns)
        imm = rng.choice(
            [rng.randrange(16, 400, 2), rng.randrange(16), rng.randrange(1024),
             rng.randrange(1 << 16), 0x10, 0x20, 0x30]
        )  # fmt: skip
        ops = {f: imm if f == "imm" else rng.randrange(8) for f in insn.fields}
        words[a], words[a + 1] = encode(p, insn, **ops)
    words[8] = rng.choice([0x20, 0x30, 0x00, 0x10, rng.randrange(64)])
    words[9] = rng.randrange(16, 400, 2)
    words[10] = rng.choice([0, 0, 16, rng.randrange(1024)])
    words[11] = rng.choice([MEMSIZE, 400, rng.randrange(1024)])
    for k in range(8):
        words.setdefault(k, rng.randrange(64))
    return Image(words, 16, code=set(range(16, 400, 2)))


FAITHFUL = [
    (d, p) for d in BUILTINS for p, s in load(d).supports.items()
    if s.faithful and p in ("pg", "hybrid", "x86")
    and d != "paravirt"  # needs a code map and refuses self-reading code: tests/vmms_advanced
]  # fmt: skip


@pytest.mark.parametrize("design, profile", FAITHFUL, ids=[f"{d}-{p}" for d, p in FAITHFUL])
def test_random_programs_agree_with_bare_hardware(design: str, profile: str) -> None:
    p = get(profile)
    for seed in SEEDS:
        rng = random.Random(seed)
        image = random_image(profile, rng)
        steps = rng.choice([50, 200, 600])
        bare = Machine(p, MEMSIZE)
        bare.load(image)
        r = bare.run(steps)
        vmm = load(design)(Machine(p, 1 << p.arch.word))
        vmm.load(image, memsize=MEMSIZE)
        got = vmm.run(steps)
        c = vmm.counters()
        assert c.direct + c.emulated == got.steps, seed
        assert (got.steps, got.halted) == (r.steps, r.halted), seed
        assert vmm.guest_state().differences(GuestState.from_machine(bare)) == [], seed
