"""Host types, checked by running guests: type 2 changes no verdict of
fidelity, type 0 runs generated guests faithfully side by side, and a
partition check that is off by a page is a safety finding."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from popek.fuzz.host_types import check_partitioned, check_type2, hostile, type2_cost
from popek.fuzz.properties import check
from popek.fuzz.strategies import from_profile
from popek.model.vmms.binary_translation import BinaryTranslationVMM
from popek.model.vmms.trap_and_emulate import TrapAndEmulate
from popek.spec import profiles
from popek.spec.asm import assemble

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "quality"))
from planted_hosts import PartitionOnePageTooBig  # noqa: E402

FEW = settings(max_examples=12, derandomize=True, deadline=None, database=None,
               suppress_health_check=list(HealthCheck))  # fmt: skip


@pytest.mark.parametrize("design, profile", [(TrapAndEmulate, "pg"), (BinaryTranslationVMM, "x86")])
def test_type2_is_faithful_where_the_design_is(design, profile):
    @FEW
    @given(from_profile(profile))
    def prop(case):
        outcome = check_type2(design, case)
        assert outcome.problems == [], outcome.problems

    prop()


def test_type2_keeps_a_design_unfaithful_where_it_is():
    """The host kernel neither hides nor adds a finding: per case, the same
    kinds of problem as type 1 (trap-and-emulate on x86 is unfaithful)."""
    kinds = []

    @FEW
    @given(from_profile("x86"))
    def prop(case):
        one = [p.kind for p in check(TrapAndEmulate, case).problems]
        two = [p.kind for p in check_type2(TrapAndEmulate, case).problems]
        assert one == two
        kinds.extend(two)

    prop()
    assert "fidelity" in kinds


def test_type2_cost_counts_kernel_steps_per_trap():
    prof = profiles.get("pg")
    image = assemble((ROOT / "examples" / "monitor" / "inner.s").read_text(), prof)
    cost = type2_cost(TrapAndEmulate, prof, image, steps=3000, memsize=0x1000)
    assert cost.same_state and cost.traps > 0
    assert cost.per_trap > 1 and cost.step_slowdown > 1


@pytest.mark.parametrize("profile", ["pg", "x86"])
def test_type0_runs_generated_guests_side_by_side_as_on_bare(profile):
    prof = profiles.get(profile)
    ran = []

    @FEW
    @given(hs.lists(from_profile(prof), min_size=1, max_size=3))
    def prop(cases):
        guests = [(c.image(prof), c.memsize, c.steps) for c in cases] + [(hostile(prof, 0x400), 0x400, 50)]
        report = check_partitioned(prof, guests)
        assert report.problems == [], report.first.report()
        ran.append(sum(m["supervisor"] for m in report.modes.values()))

    prop()
    assert min(ran) > 0  # the guests' kernels ran in real supervisor mode


def test_a_guest_cannot_set_r_outside_its_partition():
    prof = profiles.get("pg")
    report = check_partitioned(prof, [(hostile(prof, 0x400), 0x400, 50)] * 2)
    assert report.problems == []
    assert report.steps[1] == report.steps[2] == 7  # the store trapped and the handler halted


@pytest.mark.parametrize("first", [True, False])
def test_a_partition_one_page_too_big_is_a_safety_finding(first):
    prof = profiles.get("x86")
    quiet = (assemble("start: li r1, 5\n out r1\n halt", prof), 0x400, 50)
    bad = (hostile(prof, 0x400), 0x400, 50)
    report = check_partitioned(prof, [bad, quiet] if first else [quiet, bad], manager=PartitionOnePageTooBig)
    assert report.first is not None and report.first.kind == "safety"
    gid = 1 if first else 2
    assert f"guest {gid} " in report.first.message and "outside its partition" in report.first.message
