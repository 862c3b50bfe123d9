"""The compiled exact path of the paravirtualizing pass's analysis
(model/analysis/reach_exact.py) must be the interpreted one: the same reads,
fetches, runs and end state, recorded in the same order, so that the merged
phase after it is the same too.  And where it stops early, at a state the
guest had before, it must still cover everything a real run does."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings

from popek.fuzz import strategies
from popek.model.machine import Machine
from popek.model.analysis import reach_exact
from popek.model.analysis.reach import NSLOTS, _Analysis
from popek.spec.asm import assemble
from popek.spec.profiles import get
from popek.spec.state import PC

sys.path.insert(0, str(Path(__file__).parents[1] / "vmms_advanced"))
from test_advanced_random_programs import random_image  # noqa: E402


def _everything(an: _Analysis) -> tuple:
    """All an analysis knows, dictionaries' orders included (the merged
    phase visits and widens in that order)."""
    r = an.result
    return (
        r.pcs, r.reads, list(r.reads), r.fetches, list(r.fetches), r.runs, list(r.runs), r.gave_up,
        an.reads_of, list(an.reads_of), an.states, list(an.states),
        an.storage.init, an.storage.special, an.storage.extra, an.storage.wild,
    )  # fmt: skip


def _both_routes(image, profile, memsize: int, steps: int) -> tuple[tuple, tuple]:
    compiled = _Analysis(image, profile, memsize)
    compiled.run(steps, cycles=False)
    interpreted = _Analysis(image, profile, memsize)
    interpreted.run(steps, compiled=False)
    return _everything(compiled), _everything(interpreted)


def test_the_compiled_path_is_the_interpreted_path_on_random_programs() -> None:
    """Random programs of every profile (paging, traps, vtx guest mode),
    with budgets that end in a halt, mid-path, or at once."""
    compared = 0
    for name in ("pg", "hybrid", "x86", "vtx"):
        p = get(name)
        for seed in range(8):
            image = random_image(name, random.Random(seed))
            for steps in (600, 23, 0):
                compiled, interpreted = _both_routes(image, p, 512, steps)
                assert compiled == interpreted, (name, seed, steps)
                compared += 1
    assert compared == 4 * 8 * 3


@settings(max_examples=25, database=None, deadline=None, phases=[Phase.generate],
          suppress_health_check=list(HealthCheck))  # fmt: skip
@given(strategies.from_profile("x86"))
def test_the_compiled_path_is_the_interpreted_path_on_generated_guests(case) -> None:
    """The fuzzer's guests: a kernel, a trap handler, a user program under
    R, page tables and timer interrupts."""
    p = get("x86")
    compiled, interpreted = _both_routes(case.image(p), p, case.memsize, 400)
    assert compiled == interpreted


LOOP = """
start:  li   r1, 3
spin:   addi r1, 1
        addi r1, 0xffff
        jmp  spin
"""


def test_a_path_that_comes_back_to_a_state_stops_there() -> None:
    """A guest spinning forever: its state repeats within a few steps, the
    path stops there with nothing left to merge, and what it found is what
    the interpreter finds by following the whole budget and merging."""
    p = get("pg")
    image = assemble(LOOP, p)
    an = _Analysis(image, p, 0x200)
    reach = an.run(2000)
    assert reach.gave_up is None and not an.states  # complete: no merged phase
    S = [v[0][0] for v in an.start[:NSLOTS]]
    followed = reach_exact.follow(p, S, dict(an.storage.init), 0x200, 2000)
    assert followed.cycled and followed.steps < 20
    reference = _Analysis(image, p, 0x200)
    reference.run(2000, compiled=False)
    assert _everything(an)[:8] == _everything(reference)[:8]


COUNTER = """
start:  li   r2, 0x100
loop:   ld   r1, 0(r2)
        addi r1, 1
        st   r1, 0(r2)
        li   r1, 0
        jmp  loop
"""


def test_storage_that_still_changes_is_not_a_cycle() -> None:
    """Registers and flags come back each time round this loop, but the
    counter in storage does not: the state has not repeated."""
    p = get("pg")
    image = assemble(COUNTER, p)
    an = _Analysis(image, p, 0x200)
    S0 = [v[0][0] for v in an.start[:NSLOTS]]
    heads = []
    for steps in (6, 11, 16):  # the loop head after one, two and three rounds
        S = list(S0)
        reach_exact.follow(p, S, dict(an.storage.init), 0x200, steps, cycles=False)
        heads.append(S)
    assert heads[0] == heads[1] == heads[2]  # the registers alone would say "cycle"
    followed = reach_exact.follow(p, list(S0), dict(an.storage.init), 0x200, 2000)
    assert not followed.cycled and not followed.halted and followed.steps == 2000
    assert followed.M[0x100] == 2000 // 5


def test_a_path_cut_short_by_a_cycle_still_covers_the_machine() -> None:
    """Every program counter a long run of the machine starts a step at is
    one the analysis starts a step at, for paths the analysis stopped
    early because they came back to a state they had."""
    p, cycled = get("pg"), 0
    for seed in range(60):
        image = random_image("pg", random.Random(seed))
        an = _Analysis(image, p, 512)
        S = [v[0][0] for v in an.start[:NSLOTS]]
        followed = reach_exact.follow(p, S, dict(an.storage.init), 512, 2000)
        if not followed.cycled:
            continue
        reach = an.run(2000)
        m = Machine(p, 512)
        m.load(image)
        for _ in range(4 * followed.steps + 100):
            if m.halted:
                break
            assert m.S[PC] in reach.pcs, (seed, m.S[PC])
            m.step()
        cycled += 1
    assert cycled >= 3, cycled
