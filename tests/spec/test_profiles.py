"""Profiles: the three classic ones differ as docs/design.md says, and a derived
profile is checked for consistency when it is built."""

from __future__ import annotations

import pytest

from popek.model.machine import Machine
from popek.spec import instructions as I
from popek.spec import state as st
from popek.spec.asm import assemble
from popek.spec.instructions import Insn
from popek.spec.profiles import PG, ProfileError, get, register


def test_classic_profiles_differ_only_where_designed() -> None:
    pg, hybrid, x86 = get("pg"), get("hybrid"), get("x86")
    assert set(hybrid.by_name) - set(pg.by_name) == {"jru"}
    assert set(x86.by_name) == set(pg.by_name)
    differ = {n for n in pg.by_name if pg[n] is not x86[n]}
    assert differ == {"pushf", "popf", "rdmode", "rdbase", "rdbound"}
    assert all(pg[n] is hybrid[n] for n in pg.by_name)


def test_derive_adds_replaces_and_removes() -> None:
    silent = PG.derive("pg-silent-popf", "pg, but popf is x86's", replace=[I.popf], remove=["halt"])
    assert silent["popf"] is I.popf and "halt" not in silent.by_name
    assert silent.features == PG.features
    # the derived table runs: user-mode popf keeps IE and does not trap
    m = Machine(silent, 1024)
    m.load(assemble("start: li r1, 0x1f\npush r1\npopf\n", silent))
    m.S[st.SP], m.S[st.MODE] = 0x300, st.USER
    m.flush()
    m.run(3)
    assert (m.S[st.FLAGS], m.S[st.IE], m.M[st.OLD_CAUSE]) == (0xF, 0, 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"remove": ["frob"]}, "has no 'frob' to remove"),
        ({"replace": [Insn("frob", 0x70, "", I.nop.run, "")]}, "has no 'frob' to replace"),
        ({"add": [I.nop]}, "'nop' already exists; use replace="),
        ({"add": [Insn("nop2", I.nop.opcode, "", I.nop.run, "")]}, "opcode 0xf used by both"),
        ({"add": [Insn("zero", 0, "", I.nop.run, "")]}, "opcode 0x0 out of range"),
        ({"add": [Insn("huge", 0x100, "", I.nop.run, "")]}, "opcode 0x100 out of range"),
    ],
)
def test_inconsistent_profiles_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ProfileError, match=message.replace("(", r"\(")):
        PG.derive("bad", "inconsistent", **kwargs)


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(ProfileError, match="unknown profile 'nope'; known profiles: .*pg"):
        get("nope")
    with pytest.raises(ProfileError, match="not a Profile"):
        register("pg")  # type: ignore[arg-type]
