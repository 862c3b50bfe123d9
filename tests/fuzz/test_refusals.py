"""A VMM that declines a guest (`GuestRefused`) gives no verdict on it: the
harness records the refusal instead of a failure, and campaigns go on."""

from __future__ import annotations

from hypothesis import given, settings

from popek.fuzz import properties, strategies
from popek.model.vmms.emulator import Emulator
from popek.vmm import GuestRefused


class RefusesEverything(Emulator):
    name = "refuses-everything"

    def load(self, image, *, memsize):
        raise GuestRefused("this design hosts no guest")


@settings(max_examples=10, deadline=None, database=None)
@given(strategies.from_profile("pg"))
def test_a_refused_guest_is_no_failure(case) -> None:
    outcome = properties.check(RefusesEverything, case)
    assert outcome.run.refused == "this design hosts no guest"
    assert outcome.problems == []
