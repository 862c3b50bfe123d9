"""Seeded random programs under the advanced designs, where the profile adds
what the classic designs' random test does not cover: vtx (binary
translation and the hardware-assisted design) and paravirtualization (whose
pass may refuse a program; refusals are counted, and most programs must be
accepted)."""

from __future__ import annotations

import random

import pytest

from popek.model.machine import Machine
from popek.model.vmms.paravirt import RewriteError
from popek.model.analysis.may_be_sensitive import footprint
from popek.registry import load
from popek.spec.encoding import encode
from popek.spec.image import Image
from popek.spec.profiles import get
from popek.vmm import GuestState

MEMSIZE = 512
SEEDS = range(60)
PV_SEEDS = range(20)


def random_image(profile_name: str, rng: random.Random) -> Image:
    """Valid instructions (code map included), operands biased to interesting
    values, direct jumps onto code, a random new PSW, and a page table for
    whichever lptb loads it."""
    p = get(profile_name)
    insns = list(p.insns)
    words: dict[int, int] = {}
    for a in range(16, 320, 2):
        insn = rng.choice(insns)
        imm = rng.choice(
            [rng.randrange(16, 320, 2), rng.randrange(16), rng.randrange(1024),
             rng.randrange(1 << 16), 0x10, 0x20, 0x30, 0x1C0]
        )  # fmt: skip
        if footprint(insn, p.arch).jump_to_imm:  # direct jumps land on code (the pass
            imm = rng.randrange(16, 320, 2)  # refuses a jump into data)
        ops = {f: imm if f == "imm" else rng.randrange(8) for f in insn.fields}
        words[a], words[a + 1] = encode(p, insn, **ops)
    for k in range(8):  # a page table at 0x1C0 for whichever lptb loads it
        words[0x1C0 + k] = (k << 6) | rng.choice([7, 7, 7, 3, 5, 1, 0])
    words[8] = rng.choice([0x20, 0x30, 0x00, 0x10, rng.randrange(64)])
    words[9] = rng.randrange(16, 320, 2)
    words[10] = rng.choice([0, 0, 16, rng.randrange(1024)])
    words[11] = rng.choice([MEMSIZE, 400, rng.randrange(1024)])
    for k in range(8):
        words.setdefault(k, rng.randrange(64))
    return Image(words, 16, code=set(range(16, 320, 2)))


CASES = [("binary-translation", "vtx"), ("hardware-assisted", "vtx"), ("hardware-assisted+shadow", "vtx"),
         ("paravirt", "pg"), ("paravirt", "x86"), ("paravirt", "vtx")]  # fmt: skip


@pytest.mark.parametrize("design, profile", CASES, ids=[f"{d}-{p}" for d, p in CASES])
def test_random_programs_agree_with_bare_hardware(design: str, profile: str) -> None:
    """Paravirtualization's pass analyses every program before rewriting it
    (model/analysis/reach.py), which costs about a tenth of a second for these
    looping programs: it gets fewer of them."""
    p = get(profile)
    refused = 0
    seeds = PV_SEEDS if design == "paravirt" else SEEDS
    for seed in seeds:
        rng = random.Random(seed)
        image = random_image(profile, rng)
        steps = rng.choice([50, 200, 600])
        bare = Machine(p, MEMSIZE)
        bare.load(image)
        r = bare.run(steps)
        vmm = load(design)(Machine(p, 1 << p.arch.word))
        try:
            vmm.load(image, memsize=MEMSIZE)
        except RewriteError:
            refused += 1
            continue
        got = vmm.run(steps)
        c = vmm.counters()
        assert c.direct + c.emulated == got.steps, seed
        assert (got.steps, got.halted) == (r.steps, r.halted), seed
        assert vmm.guest_state().differences(GuestState.from_machine(bare)) == [], seed
    assert refused <= len(seeds) // 2, f"{design} refused {refused} of {len(seeds)} programs"
