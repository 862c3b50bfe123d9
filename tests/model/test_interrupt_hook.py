"""Taking an interrupt is the same with or without a trap hook.

Without a hook the machine clears the pending tick and runs the trap
mechanism; with one, it clears the tick and hands the trap to the hook.  A
hook that just runs the mechanism (what a test harness watching traps
does) must therefore leave the machine exactly as no hook does.  On vtx,
where an interrupt in guest mode saves the guest's state, the two once
disagreed on the saved pending tick (found by `popek verify`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from popek.model.machine import Machine
from popek.spec import profiles
from popek.spec.asm import assemble

GUEST = (Path(__file__).parent / "vtx_timer_guest.s").read_text()


def _pass_through(machine: Machine, cause: int, info: int) -> None:
    machine.trap(cause, info)


@pytest.mark.parametrize("steps", [50, 137, 400])
def test_a_pass_through_hook_changes_nothing(steps: int) -> None:
    profile = profiles.get("vtx")
    image = assemble(GUEST, profile)
    plain, hooked = Machine(profile, 1024), Machine(profile, 1024)
    plain.load(image)
    hooked.load(image)
    assert plain.run(steps).steps == hooked.run(steps, on_trap=_pass_through).steps
    assert plain.S == hooked.S
    assert plain.M[:1024] == hooked.M[:1024]
