"""A design that cannot host a guest says so: `GuestRefused`, reported as a
refusal (one line), not as a crash of the plug-in."""

from __future__ import annotations

from pathlib import Path

import pytest

from popek import guard
from popek.cli import main
from popek.model.machine import Machine
from popek.model.vmms.paravirt import ParavirtVMM
from popek.program_files import load_program
from popek.spec import profiles
from popek.vmm import GuestRefused

SMC = str(Path(__file__).parents[1] / "guests" / "smc.s")


def test_guard_lets_a_refusal_through() -> None:
    profile = profiles.get("pg")
    vmm = ParavirtVMM(Machine(profile, 1 << 16))
    image = load_program(SMC, profile)
    with pytest.raises(GuestRefused, match="reads its own instructions"):
        guard.call("paravirt", "load", vmm.load, image, memsize=4096)


def test_run_reports_the_refusal(capsys: pytest.CaptureFixture) -> None:
    code = main(["run", SMC, "--profile", "pg", "--vmm", "paravirt"])
    err = capsys.readouterr().err
    assert code == 2
    assert "VMM 'paravirt' refuses this guest" in err and "Traceback" not in err
