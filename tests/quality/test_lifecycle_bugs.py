"""`popek check` catches every planted lifecycle bug (planted_bugs.LIFECYCLE_BUGS)
at its default budget: the capability section it runs after the campaigns,
with its default number of interleavings on pg.  Shrinking is left out here
(it only shortens the failing sequence; whether the bug is found is decided
by the generated interleavings, the same with or without it); the CLI test
in tests/lifecycle shows a shrunk sequence."""

from __future__ import annotations

import pytest

from planted_bugs import LIFECYCLE_BUGS
from popek.commands.check import capabilities_section


@pytest.mark.campaign
@pytest.mark.parametrize("cls", LIFECYCLE_BUGS, ids=lambda c: c.name)
def test_planted_lifecycle_bug_is_found(cls, capsys):
    assert capabilities_section(cls, ["pg"], shrink=False) is False, f"{cls.name}: {cls.__doc__.strip()}"
    out = capsys.readouterr().out
    assert "on pg: FAILED" in out
    print(out.splitlines()[-1])


@pytest.mark.campaign
def test_the_design_they_fork_passes(capsys):
    """The same check on trap-and-emulate itself passes: what fails above is the bug."""
    from popek.model.vmms.trap_and_emulate import TrapAndEmulate

    assert capabilities_section(TrapAndEmulate, ["pg"], examples=15, shrink=False) is True
    assert "15 interleavings with guest runs passed" in capsys.readouterr().out
