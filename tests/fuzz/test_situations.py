"""Situation coverage: each detector sees a hand-written guest that reaches
its situation and not one that does not; watching does not change the run;
default guests reach every situation of every profile."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings

from popek.fuzz import execute, situations, strategies
from popek.fuzz.guest import HANDLER, KDATA, PTABLE, GuestCase, Op
from popek.fuzz.isa_coverage import IsaCoverage
from popek.spec import profiles
from popek.spec import state as st

PG = profiles.get("pg")
HALT = (Op("halt"),)


def reached(case: GuestCase) -> set[str]:
    return execute.situations_reached(case)


def scenario(name: str, memsize: int = 0x400) -> tuple[Op, ...]:
    plan = strategies._Plan(PG, ("alu",), memsize, frozenset())
    return tuple(dict(plan.scenarios)[name](memsize))


def test_catalogue_is_derived_from_the_spec():
    assert situations.unmaskers(PG) == ("ei", "popf", "rti")
    assert situations.unmaskers(profiles.get("vtx")) == ("ei", "popf", "rti")  # vmrun: guest mode
    names = situations.names(PG)
    assert len(names) == len(set(names))
    assert "trap-privileged-from-user" in names and "trap-privileged-from-supervisor" not in names
    assert not any("vmexit" in n or "npf" in n for n in situations.names(profiles.get("vtx")))
    assert all(s.why for s in situations.catalogue(PG))


def test_two_bases():
    assert "code-under-two-bases" in reached(GuestCase("pg", scenario("rebase")))
    plain = (Op("li", 6, 0, 0), Op("li", 5, 0, 0x400), Op("wrr", 6, 5))  # base 0 again: one base
    assert "code-under-two-bases" not in reached(GuestCase("pg", plain))


def test_two_mappings():
    on = (Op("li", 6, 0, PTABLE), Op("lptb", 0, 6))
    table = tuple([7] * 16)
    case = GuestCase("pg", on + scenario("reprotect-handler"), handler=(), page_perms=table)
    assert "code-under-two-mappings" in reached(case)
    twice = (Op("sys"), Op("sys"))  # the handler twice, its entry unchanged
    assert "code-under-two-mappings" not in reached(GuestCase("pg", on + twice, handler=(), page_perms=table))


def test_pte_fields_changed_between_uses():
    on = (Op("li", 6, 0, PTABLE), Op("lptb", 0, 6))
    page = KDATA // 64
    touch = (Op("li", 4, 0, KDATA), Op("ld", 3, 4, 0))
    rewrite = (Op("li", 6, 0, PTABLE + page), Op("li", 5, 0, (page + 1) * 64 | 1), Op("st", 6, 5, 0))
    r = reached(GuestCase("pg", on + touch + rewrite + touch, handler=(), page_perms=tuple([7] * 16)))
    assert {"pte-frame-changed", "pte-write-changed", "pte-user-changed"} <= r
    assert "pte-present-changed" not in r
    r = reached(GuestCase("pg", on + touch + touch, handler=(), page_perms=tuple([7] * 16)))
    assert not any(n.startswith("pte-") for n in r)


def test_self_modifying_code():
    assert "self-modifying-code" in reached(GuestCase("pg", scenario("self-modify")))
    data = (Op("li", 5, 0, 9), Op("st", 0, 5, KDATA))  # a store to data
    assert "self-modifying-code" not in reached(GuestCase("pg", data))


def test_top_and_first_page():
    r = reached(GuestCase("pg", (Op("li", 1, 0, 0xFFFF), Op("ld", 2, 1, 0))))
    assert "top-page" in r and "trap-memory-from-supervisor" in r
    r = reached(GuestCase("pg", (Op("ld", 2, 0, st.OLD_CAUSE),)))
    assert "first-page" in r and "top-page" not in r
    assert not {"first-page", "top-page"} & reached(GuestCase("pg", (Op("ld", 2, 0, KDATA),)))


@pytest.mark.parametrize("name", ["ei", "popf", "rti"])
def test_unmask_with_a_tick_pending(name):
    r = reached(GuestCase("pg", scenario(f"unmask-{name}"), handler=()))
    assert f"unmask-pending-by-{name}" in r and "trap-timer-from-supervisor" in r
    # interrupts on first, then the tick: it is taken as it falls due, nothing unmasks it
    r = reached(GuestCase("pg", (Op("ei"), Op("li", 5, 0, 1), Op("stimer", 0, 5), Op("nop")), handler=()))
    assert not any(n.startswith("unmask-") for n in r) and "tick-after-sensitive" in r


def test_tick_at_the_end_of_a_slice():
    ops = scenario("tick-at-cut") + (Op("nop"), Op("nop"))
    cut = len(scenario("tick-at-cut")) - 1 + strategies.TICK_AT_CUT
    assert "tick-at-slice-end" in reached(GuestCase("pg", ops, handler=(), chunks=(cut, 400 - cut)))
    assert "tick-at-slice-end" not in reached(GuestCase("pg", ops, handler=(), chunks=(cut - 1, 401 - cut)))
    assert "tick-at-slice-end" not in reached(GuestCase("pg", ops, handler=()))  # one slice: no boundary


def test_relocation_at_and_past_memsize():
    assert "base-at-memsize" in reached(GuestCase("pg", scenario("base-at-memsize")))
    assert "base-beyond-memsize" in reached(GuestCase("pg", scenario("base-past-memsize")))
    r = reached(GuestCase("pg", scenario("rebase")))  # base 2, bound memsize - 2
    assert "end-at-memsize" in r and not {"base-at-memsize", "base-beyond-memsize", "end-beyond-memsize"} & r


def test_traps_by_cause_and_mode():
    user = (Op("sys", 0, 0, 3), Op("halt"))
    r = reached(GuestCase("pg", (), handler=(), user=user))
    assert {"trap-syscall-from-user", "trap-privileged-from-user"} <= r
    assert "trap-syscall-from-supervisor" not in r


def test_sizes_and_lengths():
    r = reached(GuestCase("pg", HALT, memsize=0x340, steps=100))
    assert {"storage-small", "storage-not-power-of-two", "run-short"} <= r
    r = reached(GuestCase("pg", HALT))
    assert not {"storage-small", "storage-not-power-of-two", "storage-large", "run-short", "run-long"} & r


@seed(11)
@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(strategies.from_profile("x86"))
def test_watching_does_not_change_the_run(case):
    plain = execute.run_bare(case)
    watched = execute.run_bare(case, coverage=IsaCoverage())
    assert plain.states == watched.states and plain.steps == watched.steps
    machine = execute._bare_machine(profiles.get(case.profile), case.memsize)
    assert "_fill" not in machine.__dict__  # the machine's own routines are back


def test_counts_travel_through_json():
    a = IsaCoverage()
    execute.run_bare(GuestCase("pg", scenario("rebase")), coverage=a)
    b = IsaCoverage()
    b.add_situations(a.situations_json(PG))
    assert b.observed == 1 and b.situations["code-under-two-bases"] == 1
    doc = b.situations_json(PG)
    assert "code-under-two-bases" not in doc["unreached"] and "top-page" in doc["unreached"]


@pytest.mark.parametrize("name", ["pg", "hybrid", "x86", "vtx"])
def test_default_guests_reach_every_situation(name):
    """Seeded batches of 200 default guests, until every situation of the
    profile has been reached (at most 1,200 guests)."""
    prof = profiles.get(name)
    cov = IsaCoverage()
    for batch in range(6):

        @seed(batch)
        @settings(max_examples=200, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(strategies.from_profile(name))
        def run(case):
            one = IsaCoverage()
            execute.run_bare(case, coverage=one)
            cov.merge(one)

        run()
        if not situations.unreached(dict(cov.situations), prof):
            break
    assert situations.unreached(dict(cov.situations), prof) == [], f"after {cov.observed} guests"
