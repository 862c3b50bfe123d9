"""The properties catch each kind of broken VMM, and report it readably."""

from __future__ import annotations

import pytest
from hypothesis import given, seed, settings

from popek.fuzz import properties, strategies
from popek.fuzz.execute import run_vmm
from popek.fuzz.guest import GuestCase, Op
from tiny_vmms import OFFSET, Hang, Interpreter, OddR3, Scribbler

FEW = settings(max_examples=40, deadline=None, database=None)


@seed(11)
@FEW
@given(strategies.from_profile("x86"))
def test_a_faithful_vmm_passes_everything(case: GuestCase):
    outcome = properties.assert_all(Interpreter, case)
    assert outcome.ok and outcome.counters.guest_steps == sum(outcome.run.steps)


def out_case(value: int = 65) -> GuestCase:
    return GuestCase("pg", (Op("li", 3, 0, value), Op("out", 0, 3)))


def test_fidelity_failure_is_a_readable_counterexample():
    with pytest.raises(properties.PropertyFailed) as err:
        properties.assert_faithful(OddR3, out_case())
    text = str(err.value)
    assert text.startswith("FIDELITY: guest state differs")
    assert "li r3, 65" in text and "out r3" in text  # the guest, as assembly
    assert "r3     65    66" in text.replace("0x0041", "65").replace("0x0042", "66") or "r3" in text
    assert "popek fuzz --vmm tiny-odd-r3 --profile pg --replay" in text
    diffs = err.value.outcome.first().diffs
    assert diffs == [("r3", 65, 66)]


def test_safety_canary_catches_a_write_outside_the_allocation():
    outcome = properties.check(Scribbler, out_case())
    kinds = [p.kind for p in outcome.problems]
    assert kinds == ["safety"], outcome.problems
    assert "outside the guest's allocation" in outcome.problems[0].message
    # fidelity alone does not see it
    properties.assert_faithful(Scribbler, out_case())


def test_a_hanging_vmm_is_a_crash_not_a_hang():
    run = run_vmm(Hang, out_case(), timeout=0.5)
    assert [p.kind for p in run.problems] == ["crash"]
    assert "did not return within" in run.problems[0].message


def test_efficiency_threshold():
    # the interpreter runs nothing directly
    with pytest.raises(properties.PropertyFailed, match="EFFICIENCY"):
        properties.assert_efficient(Interpreter, out_case(), threshold=0.5)
    properties.assert_efficient(Interpreter, out_case(), threshold=0.0)


def test_equivalence_of_two_vmms():
    properties.assert_equivalent(Interpreter, Interpreter, out_case())
    with pytest.raises(properties.PropertyFailed):
        properties.assert_equivalent(Interpreter, OddR3, out_case())


def test_first_divergence_names_the_culprit():
    case = GuestCase("pg", (Op("li", 3, 0, 4), Op("addi", 3, 0, 1), Op("nop")))
    assert properties.first_divergence(OddR3, case) == (2, "addi", "supervisor")
    assert properties.first_divergence(Interpreter, case) is None


def test_the_canary_is_checked_afresh_on_every_case():
    # host storage is lent from case to case: a scribble in one case must
    # neither go unseen in the next nor leak into the clean case between
    for vmm, kinds in ((Scribbler, ["safety"]), (Interpreter, []), (Scribbler, ["safety"])):
        outcome = properties.check(vmm, out_case())
        assert [p.kind for p in outcome.problems] == kinds, outcome.problems


class LateWriter(Interpreter):
    """Keeps its host and writes into it after its case has ended."""

    name = "tiny-late-writer"
    hosts: list = []

    def load(self, image, *, memsize):
        super().load(image, memsize=memsize)
        LateWriter.hosts.append(self.host)


def test_a_write_after_the_case_ended_does_not_reach_the_next_case():
    properties.check(LateWriter, out_case())
    stale = LateWriter.hosts.pop()
    stale.M[0xFFF0] = 0  # the case is over; nothing checks this host any more
    outcome = properties.check(Interpreter, out_case())
    assert outcome.ok, outcome.problems


class BadReserved(Interpreter):
    name = "tiny-bad-reserved"

    def reserved(self):
        return [5]


def test_reserved_must_be_ranges():
    outcome = properties.check(BadReserved, out_case())
    assert [p.kind for p in outcome.problems] == ["contract"]
    assert "reserved() must return ranges, got int" in outcome.problems[0].message


class LaterBadState(Interpreter):
    """A well-formed state at the first checkpoint, a malformed one after."""

    name = "tiny-later-bad-state"
    calls = 0

    def guest_state(self):
        state = super().guest_state()
        self.calls += 1
        if self.calls > 1:
            del state.regs["r3"]
        return state


def test_a_malformed_state_at_a_later_checkpoint_is_a_contract_problem():
    case = GuestCase("pg", (Op("li", 3, 0, 1), Op("nop"), Op("nop")), steps=3, chunks=(1, 2))
    outcome = properties.check(LaterBadState, case)
    assert [p.kind for p in outcome.problems] == ["contract"], outcome.problems
    assert "GuestState.regs must map exactly" in outcome.problems[0].message


class WritesThroughAStaleHost(Interpreter):
    """While running, writes through the host of an earlier case, as a
    plug-in's teardown (a `__del__` run by the collector mid-case) would."""

    name = "tiny-stale-host-writer"

    def run(self, steps):
        for stale in LateWriter.hosts:
            stale.M[OFFSET : OFFSET + 64] = [0x5555] * 64
        return super().run(steps)


def test_a_finished_case_cannot_write_into_the_next_cases_storage():
    properties.check(LateWriter, out_case())  # keeps its host past its case
    try:
        outcome = properties.check(WritesThroughAStaleHost, out_case())
    finally:
        LateWriter.hosts.clear()
    assert outcome.ok, outcome.problems
