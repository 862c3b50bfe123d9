"""The two-word encoding: every legal instruction decodes back to itself, and
every word pair that breaks a rule of the encoding decodes as illegal."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from popek.spec.encoding import EncodingError, decode, encode
from popek.spec.profiles import all_profiles, get

PROFILES = [p.name for p in all_profiles()]
ALL = [(p.name, i.name) for p in all_profiles() for i in p.insns]


@pytest.mark.parametrize("profile_name, insn_name", ALL)
@settings(max_examples=15, deadline=None)
@given(data=hs.data())
def test_decode_inverts_encode(profile_name: str, insn_name: str, data: hs.DataObject) -> None:
    profile = get(profile_name)
    insn = profile[insn_name]
    nregs, mask = profile.arch.nregs, profile.arch.mask
    rd = data.draw(hs.integers(0, nregs - 1)) if "rd" in insn.fields else 0
    rs = data.draw(hs.integers(0, nregs - 1)) if "rs" in insn.fields else 0
    imm = data.draw(hs.integers(0, mask)) if "imm" in insn.fields else 0
    w0, w1 = encode(profile, insn, rd, rs, imm)
    assert 0 <= w0 <= mask and 0 <= w1 <= mask
    d = decode(profile, w0, w1)
    assert d is not None and (d.insn, d.rd, d.rs, d.imm) == (insn, rd, rs, imm)


@pytest.mark.parametrize("profile_name, insn_name", ALL)
def test_unused_fields_and_missing_registers_decode_as_illegal(profile_name: str, insn_name: str) -> None:
    profile = get(profile_name)
    insn = profile[insn_name]
    nregs = profile.arch.nregs
    w0, _ = encode(profile, insn)
    for shift, name in ((4, "rd"), (0, "rs")):
        for value in range(1, 16):
            d = decode(profile, w0 | (value << shift), 0)
            legal = name in insn.fields and value < nregs
            assert (d is not None) == legal, (name, value)
    assert (decode(profile, w0, 1) is not None) == ("imm" in insn.fields)


@pytest.mark.parametrize("profile_name", PROFILES)
def test_unassigned_opcodes_and_opcode_zero_are_illegal(profile_name: str) -> None:
    profile = get(profile_name)
    assert 0 not in profile.by_opcode  # zeroed storage must trap
    for opcode in range(1 << (profile.arch.word - 8)):
        if opcode not in profile.by_opcode:
            assert decode(profile, opcode << 8, 0) is None, hex(opcode)


@pytest.mark.parametrize("profile_name", PROFILES)
def test_encode_refuses_fields_the_instruction_does_not_have(profile_name: str) -> None:
    profile = get(profile_name)
    for insn in profile.insns:
        for field, kwargs in (("rd", {"rd": 1}), ("rs", {"rs": 1}), ("imm", {"imm": 1})):
            if field not in insn.fields:
                with pytest.raises(EncodingError):
                    encode(profile, insn, **kwargs)
        for field in ("rd", "rs"):
            if field in insn.fields:
                with pytest.raises(EncodingError, match="no register r8"):
                    encode(profile, insn, **{field: profile.arch.nregs})
