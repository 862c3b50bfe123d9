"""Fixtures shared by the whole suite.  Keep this small: helpers that only
one test folder needs live beside those tests."""

from __future__ import annotations

from typing import Callable

import pytest

from popek.model.machine import Machine
from popek.spec.asm import assemble
from popek.spec.profiles import Profile, all_profiles, get


@pytest.fixture(params=[p.name for p in all_profiles()])
def profile(request: pytest.FixtureRequest) -> Profile:
    """Every registered profile in turn."""
    return get(request.param)


@pytest.fixture
def machine_from_asm() -> Callable[..., Machine]:
    """Build a machine with an assembled program loaded (supervisor mode, at its entry)."""

    def build(text: str, profile: Profile | str = "pg", memsize: int = 4096) -> Machine:
        p = get(profile) if isinstance(profile, str) else profile
        m = Machine(p, memsize)
        m.load(assemble(text, p, file="<test>"))
        return m

    return build
