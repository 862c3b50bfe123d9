"""Profiles: named variants of the instruction set.

A profile is a table of instructions (by opcode) plus machine features.  The
three classic profiles differ only in which system instructions trap in user
mode.  A new profile is a few lines: derive it from an existing one, adding,
replacing or removing instructions, and register it::

    from popek.spec import instructions as I, profiles

    silent_pg = profiles.PG.derive(
        "pg-silent-popf", "pg, but popf is x86's",
        replace=[I.popf],   # the unprivileged, silent definition
    )
    profiles.register(silent_pg)

See docs/isa.md for the instruction table of every profile.
"""

from __future__ import annotations

import copyreg
import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Mapping

from . import instructions as I, vtx
from .instructions import Insn, privileged
from .state import ARCH, Arch

# Every profile has these; none of them touches a resource.
COMMON: tuple[Insn, ...] = (
    I.nop, I.mov, I.li, I.add, I.sub, I.and_, I.or_, I.xor, I.shl, I.shr,
    I.cmp, I.addi, I.cmpi, I.ld, I.st, I.push, I.pop,
    I.jmp, I.jz, I.jnz, I.jc, I.jnc, I.jlt, I.jge, I.jr, I.call, I.ret, I.sys,
)  # fmt: skip

# Privileged in every profile.
SYSTEM: tuple[Insn, ...] = (
    I.rti, I.ei, I.di, I.wrr, I.lptb, I.stimer, I.out, I.halt,
)  # fmt: skip

# The x86-style family: flag push/pop and reads of mode and R.  `pg` makes
# them privileged; `x86` leaves them as they are.
X86_STYLE: tuple[Insn, ...] = (I.pushf, I.popf, I.rdmode, I.rdbase, I.rdbound)


class ProfileError(ValueError):
    """A profile whose table is inconsistent."""


# What popek itself assembles on every profile: the trap mechanism's return
# (rti) and the stop (halt), and what the generated guests' kernel, trap
# handler and the plug-in conformance workloads (popek.conformance) are made
# of.  A profile without one of these cannot run popek's own guests, so
# `register` refuses it, naming what is missing, rather than letting the
# first command that uses it fail deep in the assembler.
REQUIRED: tuple[str, ...] = (
    "rti", "halt", "li", "ld", "st", "addi", "cmpi", "jz", "jnz", "jmp", "push", "sys", "out", "stimer",
)  # fmt: skip


@dataclass(frozen=True)
class Profile:
    name: str
    summary: str
    insns: tuple[Insn, ...]
    arch: Arch = ARCH
    features: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        seen_op: dict[int, str] = {}
        seen_name: set[str] = set()
        for insn in self.insns:
            if not isinstance(insn, Insn):
                raise ProfileError(f"profile {self.name!r}: {insn!r} is not an Insn")
            if insn.opcode in seen_op:
                raise ProfileError(
                    f"profile {self.name!r}: opcode {insn.opcode:#x} used by both "
                    f"{seen_op[insn.opcode]!r} and {insn.name!r}"
                )
            if insn.name in seen_name:
                raise ProfileError(f"profile {self.name!r}: two instructions named {insn.name!r}")
            if not 0 < insn.opcode < (1 << (self.arch.word - 8)):
                raise ProfileError(f"profile {self.name!r}: opcode {insn.opcode:#x} out of range")
            seen_op[insn.opcode] = insn.name
            seen_name.add(insn.name)

    @cached_property
    def by_opcode(self) -> Mapping[int, Insn]:
        return {i.opcode: i for i in self.insns}

    @cached_property
    def by_name(self) -> Mapping[str, Insn]:
        return {i.name: i for i in self.insns}

    def __getitem__(self, name: str) -> Insn:
        return self.by_name[name]

    def derive(
        self,
        name: str,
        summary: str,
        *,
        add: Iterable[Insn] = (),
        replace: Iterable[Insn] = (),
        remove: Iterable[str] = (),
        features: Iterable[str] = (),
    ) -> Profile:
        """A new profile: this one's table with instructions added, replaced
        (matched by name) or removed, and extra features."""
        table = {i.name: i for i in self.insns}
        for old in remove:
            if old not in table:
                raise ProfileError(f"derive {name!r}: {self.name!r} has no {old!r} to remove")
            del table[old]
        for new in replace:
            if new.name not in table:
                raise ProfileError(f"derive {name!r}: {self.name!r} has no {new.name!r} to replace")
            table[new.name] = new
        for new in add:
            if new.name in table:
                raise ProfileError(f"derive {name!r}: {new.name!r} already exists; use replace=")
            table[new.name] = new
        return Profile(name, summary, tuple(table.values()), self.arch, self.features | set(features))


PG = Profile(
    "pg",
    "every sensitive instruction is privileged (Theorem 1 holds)",
    COMMON + tuple(privileged(i) for i in SYSTEM + X86_STYLE),
    features=frozenset({"paging"}),
)
HYBRID = PG.derive(
    "hybrid",
    "pg plus jru, an unprivileged jump-to-user (PDP-10 JRST 1): Theorem 3 only",
    add=[I.jru],
)
X86 = PG.derive(
    "x86",
    "pushf/popf and reads of mode and R are unprivileged; popf silently keeps IE in user mode",
    replace=X86_STYLE,
)

_REGISTRY: dict[str, Profile] = {}


def register(profile: Profile) -> Profile:
    """Make ``profile`` known by its name, once it has what popek needs (`REQUIRED`)."""
    if not isinstance(profile, Profile):
        raise ProfileError(f"not a Profile: {profile!r}")
    missing = [n for n in REQUIRED if n not in profile.by_name]
    if missing:
        raise ProfileError(
            f"profile {profile.name!r} lacks {', '.join(missing)}: popek needs "
            f"{', '.join(REQUIRED)} to trap and return (rti), stop (halt) and run its guests"
        )
    _REGISTRY[profile.name] = profile
    return profile


def get(name: str) -> Profile:
    try:
        return _REGISTRY[name]
    except KeyError:
        from .suggest import did_you_mean

        raise ProfileError(f"unknown profile {name!r}; {did_you_mean(name, _REGISTRY, 'profiles')}") from None


def all_profiles() -> list[Profile]:
    return list(_REGISTRY.values())


# x86 plus the virtualization extension (spec/vtx.py): its exit controls
# make x86's instructions exit in guest mode, and it adds vmrun.
VTX = dataclasses.replace(
    X86.derive(
        "vtx",
        "x86 plus guest mode with VM exits chosen in a VMCS, and nested paging",
        replace=[vtx.exiting(bit, X86[name]) for name, bit in vtx.EXIT_CONTROL.items()],
        add=[vtx.vmrun],
        features={"vtx", "nested-paging"},
    ),
    arch=vtx.VTX_ARCH,
)

for _p in (PG, HYBRID, X86, VTX):
    register(_p)
SHIPPED: tuple[Profile, ...] = (PG, HYBRID, X86, VTX)


def insn_reference(insn: Insn) -> tuple[str, str] | None:
    """(profile, name) of the shipped row that is ``insn`` itself, if any."""
    for p in SHIPPED:
        if p.by_name.get(insn.name) is insn:
            return p.name, insn.name
    return None


def shipped_insn(profile: str, name: str) -> Insn:
    """The row `insn_reference` named."""
    return {p.name: p for p in SHIPPED}[profile].by_name[name]


def _pickled_insn(insn: Insn) -> tuple:
    """A shipped profile's row pickles by name (its definition is often a
    closure), so that a profile derived from shipped rows travels between
    processes: a plug-in's registered profile reaches the parent.  Any
    other row pickles as a plain dataclass."""
    ref = insn_reference(insn)
    return (shipped_insn, ref) if ref else object.__reduce_ex__(insn, 2)


copyreg.pickle(Insn, _pickled_insn)
