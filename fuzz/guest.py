"""A generated guest: a small operating system and its user program.

`GuestCase` is what the strategies draw and what Hypothesis shrinks: lists
of instructions in three sections plus a few switches.  `GuestCase.image`
lays it out in guest-physical storage:

========  =================================================================
0..5      old-PSW area, written by every trap and read by ``rti``
8..11     new PSW: the trap handler when the case has one, else the
          kernel's final ``halt`` (a trap with no handler stops the machine)
12        the handler's trap counter (bounds how often traps are served)
0x010     kernel code, run in supervisor mode from reset, then, with a user
          program, copies the user PSW (kept at 0x2f0) into the old-PSW area
          and enters it by ``rti``; else ``halt``
0x0c0     trap handler: its own instructions, then a fixed epilogue that
          counts the trap (halting at the limit), skips the trapping
          instruction unless the cause is the timer, and returns by ``rti``
0x100     user region: R = (0x100, bound); code at virtual 0, data and
          stack above virtual 0x80
0x200     kernel data; kernel stack below 0x2c0
0x300     page table (identity map, random permissions) when paging exists
========  =================================================================

Jumps in generated code go *forward* only (an instruction stores how many
instructions to skip), so straight-line code terminates; traps return past
the trapping instruction and the trap counter bounds the rest.  The step
budget is the backstop for what a generated ``jr``, ``ret`` or ``rti`` does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

from popek.spec import state as st
from popek.spec.encoding import encode
from popek.spec.image import Image
from popek.spec.profiles import Profile
from popek.spec.sem import ILEN

from .families import JUMP, shape

KERNEL = 0x010
HANDLER = 0x0C0
USER_BASE = 0x100
USER_SIZE = 0x100
USER_DATA = 0x080  # virtual, inside the user region
KDATA = 0x200
KSTACK = 0x2C0
PTABLE = 0x300
USER_PSW = 0x2F0  # the user program's initial PSW (psw word, pc, base, bound)
TRAP_COUNT = 12
# Where the layout's sections are: the pages a case's accesses fall in.
LAYOUT_ADDRESSES = (0, KERNEL, KERNEL + 0x40, KERNEL + 0x80, HANDLER, USER_BASE, USER_BASE + USER_DATA,
                    KDATA, KSTACK - 1)  # fmt: skip
MIN_MEMSIZE = 0x400  # the usual size
# The smallest storage the layout fits in (the page table of 13 entries ends
# at 0x30d); strategies draw it as a small size that is no power of two.
SMALL_MEMSIZE = 0x340

# Room for each section, in instructions (the terminator included).
KERNEL_ROOM = (HANDLER - KERNEL) // ILEN
HANDLER_ROOM = (USER_BASE - HANDLER) // ILEN
USER_ROOM = USER_DATA // ILEN
EPILOGUE_LEN = 17  # at most


END_MARK = 0xE1D  # the last word of a storage that ends inside a page (`GuestCase.image`)
# The name of a generated word that no instruction decodes (its first word
# is ``imm``, its second 0): the undefined-opcode trap a VMM must reflect as
# such (`popek.fuzz.families.undefined_words`).
UNDEFINED = "<undefined>"


class Op(NamedTuple):
    """One generated instruction.  For an instruction whose immediate is a
    jump target, ``skip`` says how many following instructions it jumps over
    (the target is resolved at layout, always forward)."""

    name: str
    rd: int = 0
    rs: int = 0
    imm: int = 0
    skip: int | None = None


@dataclass(frozen=True)
class GuestCase:
    profile: str
    kernel: tuple[Op, ...]
    handler: tuple[Op, ...] | None = None  # None: no trap handler installed
    user: tuple[Op, ...] | None = None  # None: no user program / user PSW
    user_ie: bool = False
    user_bound: int = USER_SIZE
    trap_limit: int = 6
    # with a user program: the timer the kernel starts before entering it,
    # and the handler re-arms after each tick (0: no timer)
    timer: int = 0
    kdata: tuple[int, ...] = ()
    page_perms: tuple[int, ...] | None = None  # per page; None: no page table
    memsize: int = MIN_MEMSIZE
    steps: int = 400
    # how the run under the VMM is split into run() calls (sums to steps)
    chunks: tuple[int, ...] = field(default=())

    # -- size ---------------------------------------------------------------
    @property
    def instructions(self) -> int:
        """Instructions in the image: the counterexample's length."""
        return len(self.image_code())

    def image_code(self) -> list[int]:
        return sorted(self.image().code)

    # -- layout ---------------------------------------------------------------
    def image(self, profile: Profile | None = None) -> Image:
        """The case laid out in storage (see the module docstring).  Built
        once per case and profile: callers must not change it."""
        from popek.spec import profiles

        prof = profile or profiles.get(self.profile)
        cached = self.__dict__.get("_image")
        if cached is not None and cached[0] is prof:
            return cached[1]
        image = self._layout(prof)
        object.__setattr__(self, "_image", (prof, image))
        return image

    def _layout(self, prof: Profile) -> Image:
        words: dict[int, int] = {}
        code: set[int] = set()
        symbols = {"kernel": KERNEL}
        mask = prof.arch.mask

        def place(section: str, base: int, vbase: int, ops: tuple[Op, ...], tail: list[Op]) -> None:
            everything = list(ops) + tail
            end_index = len(ops)  # jumps never leave the generated part
            for k, op in enumerate(everything):
                addr = base + ILEN * k
                if op.name == UNDEFINED:
                    words[addr], words[addr + 1] = op.imm & mask, 0
                    code.add(addr)
                    continue
                insn = prof.by_name[op.name]
                imm = op.imm
                if op.skip is not None and shape(insn, prof.arch).imm_role == JUMP:
                    target = min(k + 1 + op.skip, max(end_index, k + 1))
                    imm = vbase + ILEN * target
                w0, w1 = encode(prof, insn, op.rd, op.rs, imm & mask)
                words[addr], words[addr + 1] = w0, w1
                code.add(addr)
            symbols[section] = vbase

        halt = [Op("halt")] if "halt" in prof.by_name else []
        kernel = self.kernel[: KERNEL_ROOM - 1]
        # with a user program the kernel ends by entering it (rti loads the
        # user PSW placed in the old-PSW area), otherwise by halting
        enter = _enter_user(prof, self.timer, self.user_stack) if self.user is not None else halt
        place("kernel", KERNEL, KERNEL, kernel, enter)
        # With no handler, a trap enters the kernel's final halt: the machine
        # stops instead of trapping forever through an empty new PSW.
        new_psw = (1 << st.PSW_MODE_BIT, KERNEL + ILEN * len(kernel), 0, self.memsize)
        if self.handler is not None:
            body = self.handler[: HANDLER_ROOM - EPILOGUE_LEN]
            tail = _epilogue(prof, len(body), self.trap_limit, self.timer if self.user is not None else 0)
            place("handler", HANDLER, HANDLER, body, tail)
            new_psw = (1 << st.PSW_MODE_BIT, HANDLER, 0, self.memsize)
        if halt:
            for addr, word in zip(range(st.NEW_PSW, st.NEW_BOUND + 1), new_psw):
                words[addr] = word
        if self.user is not None:
            place("user", USER_BASE, 0, self.user[: USER_ROOM - 1], halt)
            psw = int(self.user_ie) << st.PSW_IE_BIT  # user mode: mode bit clear
            for k, word in enumerate((psw, 0, USER_BASE, self.user_bound)):
                words[USER_PSW + k] = word
        for k, w in enumerate(self.kdata):
            words[KDATA + k] = w & mask
        if self.memsize % prof.arch.page_size:
            # storage ends inside a page: its last word holds a mark, which a
            # VMM that loads, maps or reports storage a whole page at a time
            # loses (a zero there would look the same either way)
            words[self.memsize - 1] = END_MARK & mask
        if self.page_perms is not None:
            page = prof.arch.page_size
            for k, perm in enumerate(self.page_perms):
                words[PTABLE + k] = (k * page) | (perm & (page - 1))
        return Image(words, KERNEL, symbols, code=code)

    @property
    def user_stack(self) -> int:
        """The user program's initial sp: the top of its region, which is
        its bound or the end of storage, whichever comes first (a program
        whose bound reaches past storage pops from past its end)."""
        return min(self.user_bound, self.memsize - USER_BASE)

    # -- storage ------------------------------------------------------------
    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("kernel", "handler", "user"):
            if d[k] is not None:
                d[k] = [list(op) for op in d[k]]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "GuestCase":
        d = dict(d)
        for k in ("kernel", "handler", "user"):
            if d.get(k) is not None:
                d[k] = tuple(Op(*op) for op in d[k])
        for k in ("kdata", "chunks"):
            d[k] = tuple(d.get(k, ()))
        if d.get("page_perms") is not None:
            d["page_perms"] = tuple(d["page_perms"])
        return cls(**d)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]


def _enter_user(prof: Profile, timer: int, stack: int) -> list[Op]:
    """Start the timer (if the case has one), point sp at the user stack,
    copy the user PSW kept at USER_PSW into the old-PSW area, then ``rti``: how a P&G kernel starts a
    user program (the area is overwritten by every trap, so the kernel
    cannot rely on what a loader left there)."""
    zero, tmp = 6, 5
    ops = [Op("li", tmp, 0, timer), Op("stimer", 0, tmp)] if timer else []
    ops.append(Op("li", st.SP, 0, stack))  # the user stack: the top of its region
    ops.append(Op("li", zero, 0, 0))
    for k in range(4):
        ops += [Op("ld", tmp, zero, USER_PSW + k), Op("st", zero, tmp, st.OLD_PSW + k)]
    return ops + [Op("rti")]


def _epilogue(prof: Profile, body_len: int, limit: int, timer: int) -> list[Op]:
    """The fixed tail of the handler (see the module docstring).  Uses the
    common instructions every profile has; registers r5 and r6 are scratch."""
    here = HANDLER + ILEN * body_len
    rearm = [Op("li", 5, 0, timer), Op("stimer", 0, 5)] if timer else []
    n = len(rearm)  # the halt is at 13, or 16 with the re-arm

    def at(k: int) -> int:
        return here + ILEN * k

    timer_cause, zero, tmp = int(st.Cause.TIMER), 6, 5
    tick = at(13) if rearm else at(12)
    ops = [
        Op("li", zero, 0, 0),
        Op("ld", tmp, zero, TRAP_COUNT),
        Op("addi", tmp, 0, 1),
        Op("st", zero, tmp, TRAP_COUNT),
        Op("cmpi", tmp, 0, limit),
        Op("jz", 0, 0, at(13 + n + (1 if rearm else 0))),  # the final halt
        Op("ld", tmp, zero, st.OLD_CAUSE),
        Op("cmpi", tmp, 0, timer_cause),
        Op("jz", 0, 0, tick),
        Op("ld", tmp, zero, st.OLD_PC),  # a synchronous trap: skip the instruction
        Op("addi", tmp, 0, ILEN),
        Op("st", zero, tmp, st.OLD_PC),
        Op("rti"),
        *rearm,  # a tick re-arms the timer (a time slice) and returns
        *([Op("rti")] if rearm else []),
        Op("halt"),
    ]
    assert len(ops) <= EPILOGUE_LEN
    return ops
