"""The guest strategies: validated arguments, readable repr, guests that
assemble, terminate within their budget, and reach every instruction."""

from __future__ import annotations

import pytest
from hypothesis import given, seed, settings
from hypothesis.errors import InvalidArgument

from popek.fuzz import execute, strategies
from popek.fuzz.families import FAMILIES, by_family, shape
from popek.fuzz.guest import GuestCase
from popek.fuzz.isa_coverage import IsaCoverage
from popek.spec import profiles
from popek.spec.asm import assemble, disassemble


def test_every_instruction_has_one_family(profile):
    groups = by_family(profile)
    names = [s.insn.name for f in FAMILIES for s in groups[f]]
    assert sorted(names) == sorted(i.name for i in profile.insns)


def test_families_follow_the_effects():
    x86, pg = profiles.get("x86"), profiles.get("pg")
    # popf writes the interrupt flag (a resource) on both profiles
    assert shape(pg["popf"]).family == shape(x86["popf"]).family == "system"
    assert shape(pg["jz"]).family == "control" and shape(pg["jz"]).imm_role == "jump"
    assert shape(pg["ld"]).imm_role == "address"
    assert shape(pg["sys"]).family == "trap"
    assert shape(x86["rdmode"]).family == "system"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_instructions": -1},
        {"max_instructions": "3"},
        {"steps": 0},
        {"memsize": 1000},
        {"memsize": 512},
        {"families": ["alu", "nonsense"]},
        {"families": []},
        {"os_scaffold": 1},
        {"exclude": ["no-such-insn"]},
    ],
)
def test_arguments_are_validated(kwargs):
    with pytest.raises(InvalidArgument):
        strategies.from_profile("pg", **kwargs)


def test_unknown_profile_is_invalid():
    with pytest.raises(InvalidArgument):
        strategies.from_profile("no-such-profile")


def test_repr_shows_how_it_was_built():
    assert repr(strategies.from_profile("x86")) == "from_profile('x86')"
    s = strategies.from_profile("pg", steps=50, exclude=["rdmode"])
    assert repr(s) == "from_profile('pg', steps=50, exclude=('rdmode',))"


@seed(5)
@settings(max_examples=60, deadline=None, database=None)
@given(strategies.from_profile("hybrid"))
def test_guests_disassemble_and_reassemble(case: GuestCase):
    prof = profiles.get(case.profile)
    image = case.image(prof)
    again = assemble(disassemble(image, prof), prof)
    assert again.words == {a: w for a, w in image.words.items()}
    assert again.entry == image.entry
    assert GuestCase.from_json(case.to_json()) == case


@seed(6)
@settings(max_examples=60, deadline=None, database=None)
@given(strategies.from_profile("pg", exclude=["rdmode", "popf"], max_instructions=10))
def test_excluded_instructions_are_not_drawn(case: GuestCase):
    for section in (case.kernel, case.handler or (), case.user or ()):
        assert len(section) <= 10
        assert not {op.name for op in section} & {"rdmode", "popf"}


def test_user_system_scenario_is_drawn_and_excluded_like_the_others():
    """The drawn scenario that starts the user program with a system
    instruction: three times as likely as a fixed one, gone when its whole
    family is excluded or left out; drawn only from what is not excluded."""
    from hypothesis import find

    prof = profiles.get("vtx")
    system = {s.insn.name for s in by_family(prof)["system"]}

    def names(families=FAMILIES, exclude=()) -> list[str]:
        return [n for n, _ in strategies._Plan(prof, families, 0x400, frozenset(exclude)).scenarios]

    assert names().count(strategies.USER_SYSTEM) == strategies.USER_SYSTEM_WEIGHT == 3
    assert strategies.USER_SYSTEM not in names(exclude=system)
    assert strategies.USER_SYSTEM not in names(families=("alu", "memory"))
    assert strategies.USER_SYSTEM in names(exclude=system - {"rdbound"})
    # with every other system instruction excluded, a user program starts with the one left
    case = find(
        strategies.from_profile("vtx", exclude=sorted(system - {"rdbound"})),
        lambda c: bool(c.user) and c.user[0].name == "rdbound",
        settings=settings(database=None, max_examples=2000),
    )
    assert not {op.name for op in case.user} & (system - {"rdbound"})


@pytest.mark.parametrize("name", ["pg", "hybrid", "x86"])
def test_every_instruction_is_reached_in_both_modes(name):
    """ISA coverage on the bare machine: generated guests reach every
    (instruction, mode) pair of the profile within 3000 cases (batches of
    200 with fixed seeds, stopping once everything is reached)."""
    prof = profiles.get(name)
    cov = IsaCoverage()
    cases = 0
    for batch in range(15):

        @seed(batch)
        @settings(max_examples=200, deadline=None, database=None)
        @given(strategies.from_profile(name))
        def run(case):
            execute.run_bare(case, coverage=cov)

        run()
        cases += 200
        if not cov.unreached(prof):
            break
    assert cov.unreached(prof) == [], f"after {cases} cases"
    print(f"{name}: every instruction reached in both modes within {cases} cases")
    table = cov.table(prof)
    assert table["halt"]["user"]["trapped"] > 0  # privileged in user mode: traps
    assert table["li"]["user"]["retired"] > 0
    assert table["<interrupt>"]["user"]["trapped"] > 0  # timer slices reach user code


def _sp_on_entering_user(case: GuestCase) -> int:
    """sp when the bare machine first runs in user mode."""
    from popek.model.machine import Machine
    from popek.spec import state as st

    prof = profiles.get(case.profile)
    m = Machine(prof, case.memsize)
    m.load(case.image(prof))
    for _ in range(200):
        if m.S[st.MODE] == st.USER:
            return m.S[st.SP]
        m.step()
    raise AssertionError("the kernel never entered the user program")


def test_some_user_bounds_reach_past_the_end_of_storage():
    """Some user programs get a bound past the end of storage (the storage
    check, not the bounds check, then stops a stray access, and a VMM must
    clip the real bound to the allocation); a user program's stack starts
    at the top of what its bound and storage allow."""
    from hypothesis import find

    from popek.fuzz.guest import USER_BASE, USER_SIZE

    past = find(
        strategies.from_profile("pg"),
        lambda c: c.user is not None and c.user_bound > c.memsize - USER_BASE,
        settings=settings(database=None, max_examples=2000),
    )
    lifted = GuestCase("pg", (), handler=(), user=(), user_bound=past.user_bound)
    assert _sp_on_entering_user(lifted) == past.memsize - USER_BASE
    assert _sp_on_entering_user(GuestCase("pg", (), handler=(), user=())) == USER_SIZE
