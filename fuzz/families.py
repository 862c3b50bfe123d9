"""Instruction families and operand roles, read off the spec's traced effects.

The guest generator never names an instruction it draws: it asks the spec
what each instruction *does* (``popek.spec.trace.trace``) and groups them by
that.  A profile added later (or a user's own) is fuzzed without any change
here.

Families (an instruction is in exactly one, the first that fits):

``system``   touches a resource: writes or reads mode, R, IE, PTBR, the timer,
             the halt latch, or the output port (rti, ei, popf, rdmode, ...).
``trap``     always traps (the system call).
``control``  may change PC other than to the next instruction.
``memory``   reads or writes storage (loads, stores, stack).
``alu``      everything else (moves, arithmetic, compares).

Operand roles say what kind of value fits an immediate, so that generated
programs reach deep states instead of trapping at once: a jump target, a
storage address offset, a trap's info word, or a plain value.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from popek.spec import state as st
from popek.spec.bits import Expr, inputs, load_addresses, slot_of
from popek.spec.footprint import always_traps, falls_through, footprint
from popek.spec.instructions import Insn
from popek.spec.profiles import Profile
from popek.spec.trace import trace

FAMILIES = ("alu", "memory", "control", "trap", "system")

# immediate roles
JUMP, ADDRESS, INFO, VALUE = "jump", "address", "info", "value"


@dataclass(frozen=True)
class Shape:
    """What the generator needs to know about one instruction."""

    insn: Insn
    family: str
    imm_role: str | None  # None: no immediate


@lru_cache(maxsize=None)
def shape(insn: Insn, arch: st.Arch = st.ARCH) -> Shape:
    fx = trace(insn, arch)
    exprs: list[Expr] = list(fx.field_writes.values()) + list(fx.outputs)
    exprs += [x for pair in fx.reg_writes for x in pair]
    exprs += [x for pair in fx.mem_writes for x in pair]
    # mode is read by every definition that checks privilege or translates an
    # address; what counts is a resource reaching a written value other than
    # by choosing a storage address (translation reads R and PTBR; that is
    # not revealing them).
    values = list(fx.field_writes.values()) + list(fx.outputs)
    values += [v for _r, v in fx.reg_writes] + [v for _a, v in fx.mem_writes]
    value_reads = inputs(values, into=lambda x: x.op != "mem")
    reads_resource = any(slot_of(name) in st.RESOURCES for name in value_reads)
    writes_resource = footprint(fx).resources
    pc = fx.field_writes.get(st.PC)
    jumps = not falls_through(fx)
    touches_memory = bool(fx.mem_writes) or bool(load_addresses(exprs))
    if writes_resource or fx.outputs or reads_resource:
        family = "system"
    elif always_traps(fx):
        family = "trap"
    elif jumps:
        family = "control"
    elif touches_memory:
        family = "memory"
    else:
        family = "alu"

    role = None
    if "imm" in insn.fields:
        if pc is not None and "imm" in inputs([pc]) and jumps:
            role = JUMP
        elif "imm" in inputs(load_addresses(exprs) + [a for a, _v in fx.mem_writes]):
            role = ADDRESS
        elif "imm" in inputs(i for _c, _k, i in fx.traps) and "imm" not in inputs(exprs):
            role = INFO
        else:
            role = VALUE
    return Shape(insn, family, role)


@lru_cache(maxsize=None)
def by_family(profile: Profile) -> dict[str, tuple[Shape, ...]]:
    """The profile's instructions grouped by family (every family present, maybe empty)."""
    groups: dict[str, list[Shape]] = {f: [] for f in FAMILIES}
    for insn in sorted(profile.insns, key=lambda i: i.opcode):
        s = shape(insn, profile.arch)
        groups[s.family].append(s)
    return {f: tuple(v) for f, v in groups.items()}


# Words that decode as no instruction: not a family of the spec's, so not
# in `FAMILIES`; the generator draws them as one more (`strategies`).
UNDEFINED_FAMILY = "undefined"


@lru_cache(maxsize=None)
def undefined_words(profile: Profile) -> tuple[int, ...]:
    """First words whose opcode the profile does not assign (besides 0,
    which zeroed storage already holds): the lowest, one from the middle
    and the highest free opcode.  Running one must raise the
    undefined-instruction trap, and a VMM must reflect it as that cause:
    a word no guest compiler emits is still one a guest can run."""
    opcodes = 1 << (profile.arch.word - 8)
    free = [o for o in range(1, opcodes) if o not in profile.by_opcode]
    picks = sorted({free[0], free[len(free) // 2], free[-1]}) if free else []
    return tuple(o << 8 for o in picks)
