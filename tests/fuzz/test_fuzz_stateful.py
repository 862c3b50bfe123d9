"""Stateful tests: run(n) interleaved with snapshot/restore and guest switching."""

from __future__ import annotations

import pytest
from hypothesis import Phase, settings

from popek import registry
from popek.fuzz import strategies
from popek.fuzz.stateful import vmm_state_machine
from popek.spec.state import FLAGS
from tiny_vmms import SharedStorage, TwoGuests

TestTrapAndEmulateSnapshots = vmm_state_machine(registry.load("trap-and-emulate"), "pg").TestCase
TestTwoGuests = vmm_state_machine(TwoGuests, "x86").TestCase


class RestoreKeepsFlags(registry.load("trap-and-emulate")):
    """restore() puts storage and registers back, but keeps the current flags."""

    name = "restore-keeps-flags"

    def restore(self, snap):
        flags = self.vcpu.S[FLAGS] if self.vcpu is not None else 0  # (a fresh instance has none)
        super().restore(snap)
        self.vcpu.S[FLAGS] = flags


@pytest.mark.parametrize(
    "cls,profile", [(RestoreKeepsFlags, "pg"), (SharedStorage, "pg")], ids=["restore", "multi-guest"]
)
def test_capability_bugs_are_found(cls, profile):
    guests = strategies.from_profile(profile, split_runs=False)
    machine = vmm_state_machine(cls, profile, guests=guests)
    test = machine.TestCase("runTest")
    # found, not shrunk: shrinking a stateful run is slow and not what this checks
    test.settings = settings(
        max_examples=300, stateful_step_count=12, deadline=None, database=None, derandomize=True,
        phases=[Phase.generate],
    )  # fmt: skip
    with pytest.raises(AssertionError, match="differs from (its bare twin|the unmigrated guest)"):
        test.runTest()
