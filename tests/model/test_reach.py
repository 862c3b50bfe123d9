"""The paravirtualizing pass's analysis (model/analysis/reach.py) must be sound:
everything a real run reads or runs is inside what it reports.  Checked
three ways: each value operation against the machine's arithmetic, the
exact path against the machine itself, and the merged (abstract) analysis
against the exact one."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as hs

from popek.model.machine import Machine
from popek.model.analysis import intervals as iv
from popek.model.analysis.reach import analyse, traps_in_user_mode
from popek.spec.asm import assemble
from popek.spec.profiles import get
from popek.spec.state import PC

sys.path.insert(0, str(Path(__file__).parents[1] / "vmms_advanced"))
from test_advanced_random_programs import random_image  # noqa: E402

WIDTH = 16
MASK = (1 << WIDTH) - 1
OPS = ("add", "sub", "and", "or", "xor", "shl", "lshr", "eq", "ult", "slt")


@hs.composite
def value_sets(draw) -> iv.Values:
    pairs = []
    for _ in range(draw(hs.integers(1, 4))):
        lo = draw(hs.one_of(hs.integers(0, MASK), hs.sampled_from([0, 1, 0x7FFF, 0x8000, MASK])))
        hi = min(MASK, lo + draw(hs.one_of(hs.integers(0, 3), hs.integers(0, 5000), hs.just(MASK))))
        pairs.append((lo, hi))
    return iv.make(pairs)


def _samples(a: iv.Values, rng: random.Random) -> list[int]:
    out = [p for pair in a for p in pair]
    return out + [rng.randint(lo, hi) for lo, hi in a for _ in range(4)]


@settings(max_examples=300, deadline=None)
@given(hs.sampled_from(OPS), value_sets(), value_sets(), hs.integers(0, 2**32))
def test_every_operation_contains_every_concrete_result(op: str, a, b, seed: int) -> None:
    rng = random.Random(seed)
    if op in ("shl", "lshr") and rng.random() < 0.7:
        b = iv.const(rng.randrange(WIDTH))  # shifts by a constant, as the spec writes them
    width = 1 if op in ("eq", "ult", "slt") else WIDTH
    result = iv.binary(op, a, b, width, WIDTH)
    for x in _samples(a, rng):
        for y in _samples(b, rng):
            got = iv.concrete(op, x, y, width, WIDTH)
            assert iv.contains(result, got), (op, iv.show(a), iv.show(b), x, y, got, iv.show(result))


@settings(max_examples=100, deadline=None)
@given(value_sets(), hs.integers(0, 15), hs.integers(0, 15))
def test_not_and_extract_contain_every_concrete_result(a, i: int, j: int) -> None:
    hi, lo = max(i, j), min(i, j)
    for x in _samples(a, random.Random(i * 16 + j)):
        assert iv.contains(iv.not_(a, WIDTH), x ^ MASK)
        assert iv.contains(iv.extract(a, hi, lo), (x >> lo) & ((1 << (hi - lo + 1)) - 1))


def _machine_pcs(image, profile, memsize: int, steps: int) -> tuple[set[int], bool]:
    m = Machine(profile, memsize)
    m.load(image)
    pcs = set()
    for _ in range(steps):
        if m.halted:
            return pcs, True
        pcs.add(m.S[PC])
        m.step()
    return pcs, m.halted


def test_the_exact_path_is_the_machines_path() -> None:
    """Every program counter the machine starts a step at is one the
    analysis starts a step at; for a program that halts within the exact
    budget, no other."""
    p, compared, halting = get("pg"), 0, 0
    for seed in range(40):
        image = random_image("pg", random.Random(seed))
        pcs, halted = _machine_pcs(image, p, 512, 600)
        reach = analyse(image, p, 512, exact_steps=2000)
        if reach.gave_up:
            continue
        assert pcs <= reach.pcs, seed
        if halted:
            assert reach.pcs == pcs, seed
            halting += 1
        compared += 1
    assert compared >= 10 and halting >= 2, (compared, halting)


def test_merging_keeps_everything_the_exact_path_saw() -> None:
    """With no exact prefix at all, the merged analysis still covers every
    read, fetch and instruction of the exact one, or gives up."""
    p, compared = get("pg"), 0
    for seed in range(30):
        image = random_image("pg", random.Random(seed))
        exact = analyse(image, p, 512, exact_steps=2000)
        merged = analyse(image, p, 512, exact_steps=0)
        if exact.gave_up or merged.gave_up:
            continue
        for pc, reads in exact.reads.items():
            assert all(iv.contains(merged.reads.get(pc, ()), a) for a in iv.members(reads)), (seed, pc)
        for pc, (p0, p1) in exact.fetches.items():
            m0, m1 = merged.fetches[pc]
            assert all(iv.contains(m0, a) for a in iv.members(p0)), (seed, pc)
            assert all(iv.contains(m1, a) for a in iv.members(p1)), (seed, pc)
        assert set(exact.runs) <= set(merged.runs), seed
        compared += 1
    assert compared >= 5, "the merged analysis gave up on too many programs to compare"


def test_a_bounds_check_that_passed_bounds_the_address() -> None:
    """After the guest's own loop, with merged values, a load through an
    unknown index is still known to stay below R's bound."""
    text = """
start:  li   r1, 0
loop:   ld   r2, 0x100(r1)
        addi r1, 1
        cmpi r1, 40
        jnz  loop
        halt
"""
    p = get("pg")
    reach = analyse(assemble(text, p), p, 0x200, exact_steps=0)
    assert reach.gave_up is None
    reads = iv.make(x for v in reach.reads.values() for x in v)
    assert reads[-1][1] < 0x200  # without the narrowing: any address at all


def test_privileged_instructions_are_the_ones_that_always_trap_in_user_mode() -> None:
    p = get("x86")
    names = {i.name for i in p.insns if traps_in_user_mode(i, p)}
    assert {"rti", "ei", "di", "lptb", "halt", "out"} <= names
    assert not names & {"pushf", "popf", "rdmode", "add", "ld", "st", "nop"}


def test_a_guest_left_mid_loop_by_the_long_prefix_is_bounded_from_a_shorter_one():
    """pt_heavy.s with 100 accesses per remap and 84 passes (as `make bench`
    runs it): merged from step 20,000 a loop's counter is caught mid-way and
    widened past bounding; merged from step 2,000 it is bounded.  Both are
    sound, so the pass tries the shorter prefix when the longer one fails."""
    text = (Path(__file__).parents[1] / "guests" / "pt_heavy.s").read_text()
    text = text.replace("li   r6, 8              ; passes", "li   r6, 84")
    text = text.replace("li   r3, 20             ; ACCESSES this pass", "li   r3, 100")
    text = text.replace("addi r2, 15             ; frame number 23 down to 16", "li   r1, 7\n and r2, r1\n addi r2, 16")
    p = get("vtx")
    image = assemble(text, p)
    assert analyse(image, p, 4096, exact_steps=20_000).gave_up  # what the retry is for
    assert analyse(image, p, 4096).gave_up is None
