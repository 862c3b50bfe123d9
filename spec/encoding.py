"""Binary encoding: every instruction is two words.

Word 0 holds the opcode above bit 8, then ``rd`` in bits 7-4 and ``rs`` in
bits 3-0; word 1 is the immediate.  Fields an instruction does not use must
be zero, and registers must exist, or the word pair is illegal.  Opcode 0 is
never assigned, so zeroed storage traps as an illegal instruction.
"""

from __future__ import annotations

from typing import NamedTuple

from .instructions import Insn
from .profiles import Profile


class Decoded(NamedTuple):
    insn: Insn
    rd: int
    rs: int
    imm: int


class EncodingError(ValueError):
    pass


def encode(profile: Profile, insn: Insn, rd: int = 0, rs: int = 0, imm: int = 0) -> tuple[int, int]:
    arch = profile.arch
    for name, value in (("rd", rd), ("rs", rs)):
        if name not in insn.fields and value:
            raise EncodingError(f"{insn.name} takes no {name}")
        if not 0 <= value < arch.nregs:
            raise EncodingError(f"{insn.name}: no register r{value}")
    if "imm" not in insn.fields and imm:
        raise EncodingError(f"{insn.name} takes no immediate")
    return (insn.opcode << 8) | (rd << 4) | rs, imm & arch.mask


def decode(profile: Profile, w0: int, w1: int) -> Decoded | None:
    """The instruction a word pair encodes, or None when it is illegal."""
    insn = profile.by_opcode.get(w0 >> 8)
    if insn is None:
        return None
    rd, rs = (w0 >> 4) & 0xF, w0 & 0xF
    fields = insn.fields
    nregs = profile.arch.nregs
    if ("rd" in fields and rd >= nregs) or ("rd" not in fields and rd):
        return None
    if ("rs" in fields and rs >= nregs) or ("rs" not in fields and rs):
        return None
    if "imm" not in fields and w1:
        return None
    return Decoded(insn, rd, rs, w1)
