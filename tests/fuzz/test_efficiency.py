"""The efficiency verdict's bound (popek.fuzz.efficiency), on counts whose
answer is known, and on real runs."""

from __future__ import annotations

from hypothesis import given, settings

from popek.fuzz import execute, strategies
from popek.fuzz.efficiency import ENOUGH, judge
from popek.fuzz.isa_coverage import IsaCoverage
from tiny_vmms import Interpreter

# 3000 steps on the bare machine: 2000 innocuous instructions retired, and
# 1000 others (a sensitive instruction, trapped steps)
BARE = IsaCoverage({
    ("add", "supervisor", "retired"): 1500,
    ("ld", "user", "retired"): 500,
    ("lrr", "supervisor", "retired"): 600,
    ("ld", "user", "trapped"): 400,
})  # fmt: skip
INNOCUOUS = {"add", "ld"}


def test_emulating_only_what_may_be_emulated_is_efficient():
    e = judge(BARE, steps=3000, direct=2000, innocuous=INNOCUOUS)
    assert (e.innocuous, e.emulated_innocuous, e.direct_share) == (2000, 0, 1.0)
    assert e.efficient() is True


def test_the_surplus_of_emulated_steps_is_innocuous():
    # 1000 steps may be emulated for free; 2200 were: at least 1200 innocuous ones
    e = judge(BARE, steps=3000, direct=800, innocuous=INNOCUOUS)
    assert e.emulated_innocuous == 1200 and e.direct_share == 0.4
    assert e.efficient(0.5) is False and e.efficient(0.3) is True
    assert "at least 1200 of 2000 innocuous steps emulated" in e.describe()


def test_an_emulator_is_not_efficient():
    e = judge(BARE, steps=3000, direct=0, innocuous=INNOCUOUS)
    assert e.emulated_innocuous == 2000 and e.direct_share == 0.0 and e.efficient(0.01) is False


def test_extra_steps_of_an_unfaithful_vmm_count_as_free():
    e = judge(BARE, steps=3500, direct=2000, innocuous=INNOCUOUS)
    assert e.emulated_innocuous == 0


def test_too_small_a_sample_is_not_judged():
    small = IsaCoverage({("add", "supervisor", "retired"): ENOUGH - 1})
    e = judge(small, steps=ENOUGH - 1, direct=0, innocuous=INNOCUOUS)
    assert e.direct_share == 0.0 and e.efficient() is None
    assert "not judged" in e.describe()


@settings(max_examples=20, deadline=None, database=None)
@given(strategies.from_profile("pg"))
def test_an_interpreter_emulates_every_innocuous_step(case):
    cov = IsaCoverage()
    execute.run_bare(case, coverage=cov)
    run = execute.run_vmm(Interpreter, case, safety=False)
    innocuous = {"add", "addi", "li", "ld", "st", "nop", "cmpi", "jmp", "jz", "jnz", "mov"}
    e = judge(cov, steps=run.counters.guest_steps, direct=run.counters.direct, innocuous=innocuous)
    assert e.emulated_innocuous == e.innocuous


def test_each_declared_mode_is_judged_on_its_own():
    """A design that runs its guest's kernel directly and interprets the
    user program passes on the campaign-wide count (kernels execute more),
    but not on the cases where the instruction ran in user mode only."""
    from popek.fuzz.efficiency import DirectLedger, DirectRule
    from popek.fuzz.isa_coverage import RETIRED, IsaCoverage

    rule = DirectRule(frozenset({"add"}))  # both modes declared
    ledger = DirectLedger(rule)
    for _ in range(10):  # kernel-only cases: all 5 direct (weighted: 4 of 4)
        ledger.add(IsaCoverage({("add", "supervisor", RETIRED): 5}), {"add": 5})
    for _ in range(10):  # user-only cases: 3 executions, none direct
        ledger.add(IsaCoverage({("add", "user", RETIRED): 3}), {})
    assert ledger.share("add") == 40 / 70  # a majority overall ...
    low = ledger.emulated(0.5)
    assert [(e.insn, e.modes, e.direct, e.executions) for e in low] == [("add", ("user",), 0, 30)]  # ... not in user mode
    assert ledger.shares() == {"add": 40 / 70, "add (supervisor)": 1.0, "add (user)": 0.0}
    # a case with both modes says nothing about either mode alone
    mixed = DirectLedger(rule)
    for _ in range(30):
        mixed.add(IsaCoverage({("add", "user", RETIRED): 3, ("add", "supervisor", RETIRED): 5}), {"add": 5})
    assert mixed.emulated(0.5) == [] and not mixed.mode_executions
    # the JSON form keeps the per-mode counts
    again = DirectLedger.from_json(rule, ledger.to_json())
    assert again.shares() == ledger.shares()


def test_one_declared_mode_is_judged_as_before():
    """Declaring user mode only (a hybrid VMM): the kernel's executions
    are not judged at all, so there is nothing to split."""
    from popek.fuzz.efficiency import DirectLedger, DirectRule
    from popek.fuzz.isa_coverage import RETIRED, IsaCoverage

    ledger = DirectLedger(DirectRule(frozenset({"add"}), frozenset({"user"})))
    for _ in range(10):
        ledger.add(IsaCoverage({("add", "user", RETIRED): 3}), {"add": 3})
    assert ledger.shares() == {"add": 1.0} and ledger.emulated(0.5) == []


def test_the_end_of_long_runs_is_judged_on_its_own():
    """A design that turns slow after a while: direct over the whole of
    every run (short ones are most of a campaign), emulated at the end of
    long ones; the late counts show it, and a long case from the generator
    has its last slice counted on both sides."""
    from popek.fuzz import strategies
    from popek.fuzz.efficiency import DirectLedger, DirectRule
    from popek.fuzz.execute import run_bare
    from popek.fuzz.isa_coverage import RETIRED, IsaCoverage

    rule = DirectRule(frozenset({"addi"}), frozenset({"supervisor"}))
    ledger = DirectLedger(rule)
    whole = IsaCoverage({("addi", "supervisor", RETIRED): 100})
    for _ in range(5):  # 5 cases: enough weighted executions (4 each) to judge
        ledger.add(whole, {"addi": 70})
    # one long run's last slice, counted as it ran (not weighted)
    ledger.add_late(whole, IsaCoverage({("addi", "supervisor", RETIRED): 30}), {})
    assert ledger.share("addi") == 0.7
    (late,) = ledger.emulated(0.5)
    assert late.late and (late.direct, late.executions) == (0, 30) and "late in long runs" in late.describe()
    shares = DirectLedger.from_json(rule, ledger.to_json()).shares()
    assert shares == {"addi": 0.7, "addi (late)": 0.0}
    # the generator's long loop: the last slice is the loop, counted apart
    from popek.fuzz import guest as g

    ops = strategies._long_loop(0xFFFF)
    case = g.GuestCase("pg", ops, steps=strategies.LONG_STEPS,
                       chunks=(strategies.LONG_STEPS - strategies.LONG_TAIL, strategies.LONG_TAIL))
    run = run_bare(case, coverage=IsaCoverage())
    assert run.steps == [strategies.LONG_STEPS - strategies.LONG_TAIL, strategies.LONG_TAIL] and not run.halted
    assert sum(run.last.counts.values()) == strategies.LONG_TAIL
    assert {name for name, _m, _o in run.last.counts} == {"addi", "cmpi", "jz", "jr"}


def test_one_looping_case_does_not_decide_a_share():
    """One case whose guest loops through a path the design emulates (a
    kernel's vmrun starting a nested guest that the design interprets for
    398 steps, nearly all of them mov) among cases that ran mov directly:
    counted raw, it put mov at 25% direct and the design was called not
    efficient; each case weighs at most CASE_WEIGHT executions, so the
    share is over cases.  Its direct executions count in proportion."""
    from popek.fuzz.efficiency import CASE_WEIGHT, DirectLedger, DirectRule
    from popek.fuzz.isa_coverage import RETIRED, IsaCoverage

    rule = DirectRule(frozenset({"mov"}))
    ledger = DirectLedger(rule)
    for _ in range(33):  # 33 ordinary cases, 4 movs each, all direct
        ledger.add(IsaCoverage({("mov", "supervisor", RETIRED): 4}), {"mov": 4})
    ledger.add(IsaCoverage({("mov", "supervisor", RETIRED): 400}), {"mov": 2})  # the looping one
    assert ledger.executions["mov"] == 34 * CASE_WEIGHT
    assert ledger.direct["mov"] == 33 * 4 + 2 * 4 / 400
    assert ledger.share("mov") > 0.97 and ledger.emulated(0.5) == []  # raw: 134 of 532, 25%
    assert ledger.shares()["mov (supervisor)"] == ledger.share("mov")
    # the weighted counts are fractions: kept by the JSON form, printed as they are
    again = DirectLedger.from_json(rule, ledger.to_json())
    assert again.shares() == ledger.shares() and again.direct["mov"] == ledger.direct["mov"]
    low = again.emulated(1.0)
    assert "mov 132.02/136" in again.describe(1.0), again.describe(1.0)
    assert "(132.02 of 136 executions direct)" in low[0].describe()
    # an instruction every case emulates stays at 0%; judged once its
    # weighted executions reach ENOUGH_EXECUTIONS (raw ones do not count)
    slow = DirectLedger(rule)
    for n in (398, 7, 4, 9, 2):
        slow.add(IsaCoverage({("mov", "user", RETIRED): n}), {})
    assert slow.executions["mov"] == 18 and slow.judged() == 0  # 420 executions, 18 weighted
    slow.add(IsaCoverage({("mov", "user", RETIRED): 2}), {})
    assert slow.shares() == {"mov": 0.0, "mov (user)": 0.0}


def test_the_summary_line_names_each_share_as_judged():
    """An instruction judged short both overall and in one mode is one
    instruction, named twice with where it was judged: "1 of 2", not "2 of
    2", and never "addi 0/20, addi 0/20"."""
    from popek.fuzz.efficiency import DirectLedger, DirectRule
    from popek.fuzz.isa_coverage import RETIRED, IsaCoverage

    ledger = DirectLedger(DirectRule(frozenset({"add", "addi"}), frozenset({"user", "supervisor"})))
    for _ in range(5):
        ledger.add(IsaCoverage({("addi", "user", RETIRED): 4, ("add", "user", RETIRED): 4}), {"add": 4})
    line = ledger.describe(0.5)
    assert "1 of 2 ran directly in under 50%" in line, line
    assert "addi 0/20" in line and "addi (user) 0/20" in line, line
