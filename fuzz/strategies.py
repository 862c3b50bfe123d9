"""Hypothesis strategies for guests, derived from a profile's instruction table.

``from_profile(profile)`` draws a `popek.fuzz.guest.GuestCase`: a kernel
that may install a trap handler, enter user mode through ``rti`` (or any
instruction the profile has for it), program the timer, toggle interrupts,
write R and the page-table base, with a user program and a handler that
serves system calls and timer interrupts.  Which instructions exist, which
immediates make sense for them (jump target, address, trap info, value) and
which family each belongs to all come from the spec (``popek.fuzz.families``).

Each case first draws which instruction *families* it uses (swarm testing:
leaving features out of a case makes rare interactions among the rest
likelier), then its sections.  Everything shrinks toward fewer sections,
fewer instructions and smaller numbers, so a counterexample is short.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from hypothesis import strategies as hs
from hypothesis.errors import InvalidArgument

from popek.spec import profiles as _profiles
from popek.spec import state as st
from popek.spec.bits import inputs, load_addresses, reads_at, slot_of, walk
from popek.spec.profiles import Profile
from popek.spec.sem import ILEN

from . import guest as g
from .families import ADDRESS, FAMILIES, INFO, JUMP, UNDEFINED_FAMILY, VALUE, Shape, by_family, undefined_words

DEFAULT_STEPS = 400
MAX_STEPS = 100_000


def _profile(profile: Profile | str) -> Profile:
    if isinstance(profile, Profile):
        return profile
    if isinstance(profile, str):
        try:
            return _profiles.get(profile)
        except ValueError as e:
            raise InvalidArgument(str(e)) from None
    raise InvalidArgument(f"profile must be a Profile or a profile name, got {profile!r}")


def _int_arg(name: str, value: object, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{name}={value!r} must be an int")
    if not lo <= value <= hi:
        raise InvalidArgument(f"{name}={value!r} must be between {lo} and {hi}")
    return value


def interesting_values(profile: Profile, memsize: int) -> list[int]:
    """Immediates worth loading: PSW bits, the layout's addresses, edges."""
    mask = profile.arch.mask
    word = profile.arch.word
    vals = [0, 1, 2, 3, 4, 5, 7, 8, 15, 16, 31, 32, 48, 0x30]
    vals += [1 << st.PSW_IE_BIT, 1 << st.PSW_MODE_BIT, st.FLAG_C | st.FLAG_Z]
    vals += [g.KSTACK, g.KDATA, g.PTABLE, g.USER_BASE, g.USER_SIZE, g.HANDLER, g.USER_DATA]
    vals += [memsize, memsize - 1, 1 << (word - 1), (1 << (word - 1)) - 1, mask, mask - 1]
    return sorted(set(v & mask for v in vals), key=vals.index)


def prime_values(profile: Profile) -> list[int]:
    """Values a register is loaded with right before a sensitive
    instruction reads it (or pushed right before one pops it): all ones,
    the sign bit, 0xFFFF, the flag masks (N|V, all four, V alone) and a PSW
    with IE and V.  A VMM that emulates the instruction sees exactly these
    values; drawn at random, a register seldom holds one when it counts."""
    mask, word = profile.arch.mask, profile.arch.word
    flags = st.FLAG_N | st.FLAG_Z | st.FLAG_C | st.FLAG_V
    vals = [mask, 1 << (word - 1), 0xFFFF, st.FLAG_N | st.FLAG_V, flags, st.FLAG_V,
            (1 << st.PSW_IE_BIT) | st.FLAG_V, mask - 1]  # fmt: skip
    return sorted(set(v & mask for v in vals), key=vals.index)


PRIME_ONE_IN = 2  # how often a sensitive instruction's operand is primed


def _reads_stack(profile: Profile, name: str) -> bool:
    """Does instruction ``name`` read storage at sp (it pops its operand)?"""
    from popek.spec.trace import trace

    fx = trace(profile.by_name[name], profile.arch)
    exprs = list(fx.field_writes.values()) + list(fx.outputs) + [v for _r, v in fx.reg_writes]
    exprs += [v for _a, v in fx.mem_writes]
    return any(reads_at(x, "reg", st.SP) for x in walk(load_addresses(exprs)))


def _moves_the_guest(profile: Profile, name: str) -> bool:
    """Does ``name`` change how addresses translate or which mode runs (R,
    the page-table base, guest mode)?  Its operand is not primed: all ones
    as a table base or a bound sends the guest's next fetches astray, and
    the cases that do are cases of nothing else (binary translation then
    emulates most of its guest: 30% of `call` ran directly on pg, against
    71% without)."""
    from popek.spec.trace import trace

    moved = {st.BASE, st.BOUND, st.PTBR, st.MODE, st.GUEST, st.NPTBR, st.VMCS}
    return bool(moved & set(trace(profile.by_name[name], profile.arch).field_writes))


def kernel_addresses(profile: Profile, memsize: int) -> list[int]:
    """Address offsets for loads and stores in supervisor mode (R = all storage):
    the layout's data, the trap words, page-table entries, code words of the
    kernel and the handler (self-modifying code, which a translator or a
    rewriting pass must notice), and the edges.  Every entry dilutes the
    others: a pool twice as long found the planted unclipped-bound bug ten
    times slower."""
    mask = profile.arch.mask
    return [
        g.KDATA, g.KDATA + 1, g.KSTACK - 1, g.TRAP_COUNT,
        st.OLD_PSW, st.OLD_PC, st.OLD_BASE, st.OLD_BOUND, st.OLD_CAUSE, st.OLD_INFO,
        st.NEW_PSW, st.NEW_PC, st.NEW_BOUND,
        g.PTABLE, g.PTABLE + 4, g.USER_BASE + g.USER_DATA, g.KERNEL, g.KERNEL + 4, g.HANDLER, g.HANDLER + 2,
        memsize - 1, memsize, mask,
    ]  # fmt: skip


def user_addresses(profile: Profile, memsize: int) -> list[int]:
    """Address offsets in user mode (virtual, R = the user region): its data,
    the last word inside the default bound and the first past it, and the
    last word of storage and the first past it (which only a bound reaching
    beyond storage lets through to the storage check, see `user_bounds`)."""
    mask = profile.arch.mask
    end = memsize - g.USER_BASE  # the first user address past the end of storage
    return [g.USER_DATA, g.USER_DATA + 1, g.USER_SIZE - 1, 0, 2, g.USER_SIZE, end - 1, end, mask]


def user_bounds(profile: Profile, memsize: int) -> list[int]:
    """Bounds for the user program's R other than the default `guest.USER_SIZE`:
    one that ends exactly at the end of storage, one a word past it, and
    none at all (the largest word).  A bound past the end of storage is
    legal; the storage check then traps instead of the bounds check, and a
    VMM that runs the program directly must clip the real bound to the
    guest's allocation or the program reads and writes past it."""
    end = memsize - g.USER_BASE
    return [end, end + 1, profile.arch.mask]


# Storage sizes and run lengths a case may have besides the ones asked for
# (``vary``): a small one and one that is not a power of two (both at least
# the layout's `guest.SMALL_MEMSIZE`), a large one; shorter and longer runs.
# The one past 1024 is not a whole number of pages either (23 3/4 pages of
# 64 words): storage that ends inside a page is legal, and a VMM that
# thinks in pages (copies, maps or reports storage a page at a time) must
# still stop at the last word.
OTHER_MEMSIZES = (0x340, 0x5F0, 0x1000)
OTHER_STEPS = (1 / 4, 2)  # times the step budget asked for


class _Pools:
    """The operand pools that depend on the storage size."""

    def __init__(self, profile: Profile, memsize: int):
        self.values = interesting_values(profile, memsize)
        self.kaddr = kernel_addresses(profile, memsize)
        self.uaddr = user_addresses(profile, memsize)
        self.ubounds = user_bounds(profile, memsize)


class _Plan:
    """Everything a draw needs, computed once per strategy."""

    def __init__(self, profile: Profile, families: Sequence[str], memsize: int, exclude: frozenset[str],
                 vary: bool = False, steps: int = DEFAULT_STEPS, default_families: bool = False):  # fmt: skip
        self.profile = profile
        groups = {f: tuple(s for s in v if s.insn.name not in exclude) for f, v in by_family(profile).items()}
        self.families = tuple(f for f in families if groups[f])
        self.groups = {f: groups[f] for f in self.families}
        self.nregs = profile.arch.nregs
        self.memsizes = (memsize,) + (tuple(m for m in OTHER_MEMSIZES if m != memsize) if vary else ())
        self.pools = {m: _Pools(profile, m) for m in self.memsizes}
        self.steps = (steps,)
        if vary:
            other = sorted({max(1, min(MAX_STEPS, int(steps * k))) for k in OTHER_STEPS} - {steps})
            self.steps += tuple(other)
        self.mask = profile.arch.mask
        self.paging = "paging" in profile.features
        needed = ("li", "ld", "st", "addi", "cmpi", "jz", "rti", "halt")
        self.can_handle = all(n in profile.by_name for n in needed)
        # scenarios that use an excluded instruction are left out with it
        # a sensitive instruction's operand primed with a `prime_values` value
        # (``li rs`` before one that reads rs; ``li; push`` before one that pops)
        self.primes = prime_values(profile)
        have = profile.by_name
        self.prime_reg = {
            s.insn.name for s in self.groups.get("system", ())
            if "rs" in s.insn.fields and not _moves_the_guest(profile, s.insn.name)
        } if "li" in have else set()  # fmt: skip
        self.prime_stack = {
            s.insn.name for s in self.groups.get("system", ())
            if not s.insn.fields and _reads_stack(profile, s.insn.name)
        } if {"li", "push"} <= set(have) else set()  # fmt: skip
        # words no instruction decodes: one more family, in the default swarm only
        if default_families and vary and undefined_words(profile):
            self.families += (UNDEFINED_FAMILY,)
            self.groups[UNDEFINED_FAMILY] = (_UNDEFINED,)
        self.undefined = undefined_words(profile)
        self.long_loop = vary and all(n in have for n in ("li", "call", "pop", "addi", "cmpi", "jz", "jr"))
        self.scenarios = tuple(
            (name, build) for name, build in (_scenarios(profile, exclude) if self.can_handle else ())
            if not {op.name for op in build(memsize)} & exclude
        )
        # one more scenario, drawn rather than fixed (`USER_SYSTEM`); the
        # system group has the excluded instructions left out already
        if self.can_handle and self.groups.get("system"):
            self.scenarios += ((USER_SYSTEM, None),) * USER_SYSTEM_WEIGHT


_UNDEFINED = object()  # the undefined family's one "shape": a word that does not decode


@hs.composite
def _op(
    draw, plan: _Plan, shapes: Sequence[Shape], user: bool, regs: Sequence[int], pools: _Pools
) -> tuple[g.Op, ...]:
    """One drawn instruction, with (sometimes) what primes its operand before it."""
    s = draw(hs.sampled_from(shapes))
    if s is _UNDEFINED:
        return (g.Op(g.UNDEFINED, 0, 0, draw(hs.sampled_from(plan.undefined))),)
    op = draw(_plain_op(plan, s, user, regs, pools))
    name = s.insn.name
    if name in plan.prime_reg and not draw(hs.integers(0, PRIME_ONE_IN - 1)):
        return (g.Op("li", op.rs, 0, draw(hs.sampled_from(plan.primes))), op)
    if name in plan.prime_stack and not draw(hs.integers(0, PRIME_ONE_IN - 1)):
        r = draw(hs.sampled_from(regs))
        return (g.Op("li", r, 0, draw(hs.sampled_from(plan.primes))), g.Op("push", 0, r), op)
    return (op,)


@hs.composite
def _plain_op(draw, plan: _Plan, s: Shape, user: bool, regs: Sequence[int], pools: _Pools) -> g.Op:
    fields = s.insn.fields
    reg = hs.sampled_from(regs)
    rd = draw(reg) if "rd" in fields else 0
    rs = draw(reg) if "rs" in fields else 0
    imm, skip = 0, None
    if s.imm_role == JUMP:
        skip = draw(hs.integers(0, 4))
    elif s.imm_role == ADDRESS:
        pool = pools.uaddr if user else pools.kaddr
        imm = draw(hs.sampled_from(pool) | hs.integers(0, plan.mask))
    elif s.imm_role == INFO:
        imm = draw(hs.integers(0, 7))
    elif s.imm_role == VALUE:
        imm = draw(hs.sampled_from(pools.values) | hs.integers(0, plan.mask))
    return g.Op(s.insn.name, rd, rs, imm, skip)


def _ie_source(profile: Profile, name: str) -> str | None:
    """Where instruction ``name`` takes the IE it sets from, read off its
    traced IE write: ``"none"`` (a constant), ``"stack"`` (a word popped at
    sp), ``"old-psw"`` (the PSW a trap saved); None if none of these."""
    from popek.spec.trace import trace

    e = trace(profile.by_name[name], profile.arch).field_writes.get(st.IE)
    if e is None:
        return None
    if e.op == "const":
        return "none"
    nodes = list(walk([e]))
    if any(reads_at(x, "mem", st.OLD_PSW) for x in nodes):
        return "old-psw"
    if any(reads_at(x, "reg", st.SP) for x in nodes):
        return "stack"
    return None


def _mode_reader(profile: Profile, exclude: frozenset[str] = frozenset()) -> str | None:
    """An instruction whose only effect is to copy the processor mode into
    a register (``rd``), read off its trace; None if the profile has none
    (or it is excluded)."""
    from popek.spec.trace import trace

    for name, insn in profile.by_name.items():
        if name in exclude or insn.fields[:1] != ("rd",):
            continue
        fx = trace(insn, profile.arch)
        if fx.mem_writes or fx.outputs or set(fx.field_writes) - {st.PC} or len(fx.reg_writes) != 1:
            continue
        if any(slot_of(n) == st.MODE for n in inputs([fx.reg_writes[0][1]])):
            return name
    return None


def _scenarios(profile: Profile, exclude: frozenset[str] = frozenset()) -> tuple[tuple[str, object], ...]:
    """Short fixed kernel sequences that each put the machine in a situation
    of `popek.fuzz.situations` that random code seldom reaches: ``(name,
    build)``, ``build(memsize) -> ops``.  Only those the profile has the
    instructions for (a campaign's ``exclude``d instructions are not
    written as data either)."""
    have = profile.by_name
    r5, r6, page = REMAP_REG, PAGING_REG, profile.arch.page_size
    out: list[tuple[str, object]] = []

    def ok(*names: str) -> bool:
        return all(n in have for n in names)

    if ok("wrr"):
        # the same code under two bases: `wrr` to base 2 makes the next fetch
        # skip an instruction; the last `wrr` then runs under base 2 and,
        # as it sets base 0 again, once more under base 0
        def rebase(memsize: int) -> list[g.Op]:
            return [g.Op("li", r6, 0, 2), g.Op("li", r5, 0, memsize - 2), g.Op("wrr", r6, r5),
                    g.Op("li", r6, 0, 0x5EED),  # skipped: runs only if the new base is ignored
                    g.Op("li", r6, 0, 0), g.Op("li", r5, 0, memsize), g.Op("wrr", r6, r5)]  # fmt: skip

        out.append(("rebase", rebase))

        # R at and past the end of storage: the next fetch traps
        def edge_r(memsize: int, k: int = 0) -> list[g.Op]:
            base = (memsize, memsize + page)[k]
            return [g.Op("li", r6, 0, base), g.Op("li", r5, 0, page), g.Op("wrr", r6, r5)]

        out.append(("base-at-memsize", edge_r))
        out.append(("base-past-memsize", lambda memsize: edge_r(memsize, 1)))
    if ok("sys") and "paging" in profile.features:
        # the handler's code under two page-table entries: trap, re-protect
        # the handler's page (same frame, no user bit), trap again
        hpage = g.HANDLER // page

        def reprotect(memsize: int) -> list[g.Op]:
            return [g.Op("sys", 0, 0, 0), g.Op("li", r6, 0, g.PTABLE + hpage),
                    g.Op("li", r5, 0, hpage * page | st.PTE_PRESENT | st.PTE_WRITE),
                    g.Op("st", r6, r5, 0), g.Op("sys", 0, 0, 0)]  # fmt: skip

        out.append(("reprotect-handler", reprotect))
        if ok("ld"):
            # a data page unmapped between two loads (the second faults)
            dpage = g.KDATA // page

            def unmap(memsize: int) -> list[g.Op]:
                touch = [g.Op("li", r6, 0, g.KDATA), g.Op("ld", r5, r6, 0)]
                return touch + [g.Op("li", r6, 0, g.PTABLE + dpage), g.Op("li", r5, 0, dpage * page),
                                g.Op("st", r6, r5, 0)] + touch  # fmt: skip

            out.append(("unmap-data", unmap))
    if ok("lptb", "ld", "st") and "paging" in profile.features:
        # paging on, then off, then on again, touching one page each time:
        # its entry is first moved to another frame and read through, so a
        # VMM that keeps what it derived from the table (shadow entries,
        # cached translations) after paging goes off reads and writes the
        # other frame; the write made with paging off then shows through
        # the table again
        xpage = g.KDATA // page
        word = g.KDATA + 1

        def paging_off(memsize: int) -> list[g.Op]:
            touch = [g.Op("li", r6, 0, word), g.Op("ld", r5, r6, 0)]
            return [g.Op("li", r6, 0, g.PTABLE + xpage), g.Op("li", r5, 0, (xpage + 1) * page | 7),
                    g.Op("st", r6, r5, 0), *touch,
                    g.Op("li", r6, 0, 0), g.Op("lptb", 0, r6),  # paging off
                    g.Op("li", r6, 0, word), g.Op("li", r5, 0, PAGING_OFF_MARK), g.Op("st", r6, r5, 0),
                    g.Op("ld", r5, r6, 0),
                    g.Op("li", r6, 0, g.PTABLE), g.Op("lptb", 0, r6), *touch]  # fmt: skip

        out.append(("paging-off", paging_off))
    if ok("call", "pop", "mov", "nop"):
        # self-modifying code: store a `mov` over the `nop` two instructions on
        from popek.spec.encoding import encode

        mov = encode(profile, have["mov"], r5, r6, 0)[0]

        def smc(memsize: int) -> list[g.Op]:
            return [g.Op("li", st.SP, 0, g.KSTACK), g.Op("call", 0, 0, 0, 0), g.Op("pop", r5),
                    g.Op("li", r6, 0, mov), g.Op("st", r5, r6, 6), g.Op("nop")]  # fmt: skip

        out.append(("self-modify", smc))
        if ok("sys"):
            # code that already ran, patched and run again: the handler's
            # first instruction becomes one that reads the mode into r4
            # (`rdmode r4`), or `li r4` (its immediate kept) on a profile
            # without one.  A read of the mode, because a stale copy of the
            # old code is then seen however the VMM runs it: as the old
            # instruction, or, where the VMM's host decodes storage anew but
            # was told the old code needed no VMM, as the new one run
            # directly in real user mode, reading the wrong mode
            patch = _mode_reader(profile, exclude)
            words = encode(profile, have[patch or "li"], 4, 0, 0)
            second = [] if patch is None else [g.Op("st", r5, r5, g.HANDLER + 1)]  # its second word: 0
            if patch is not None and words[1]:
                second = [g.Op("li", r6, 0, words[1]), g.Op("st", r5, r6, g.HANDLER + 1)]

            def patch_handler(memsize: int) -> list[g.Op]:
                return [g.Op("sys", 0, 0, 0), g.Op("li", r5, 0, 0), g.Op("li", r6, 0, words[0]),
                        g.Op("st", r5, r6, g.HANDLER), *second, g.Op("sys", 0, 0, 0)]  # fmt: skip

            out.append(("patch-handler", patch_handler))
    if ok("sys", "ld"):
        # the user program starts with a system call and a load from its
        # data page (a page fault when paging is on and the page is not the user's)
        def user_traps(memsize: int) -> list[g.Op]:
            return [g.Op("sys", 0, 0, 0), g.Op("ld", r5, r6, g.USER_DATA)]

        out += [("user-traps", user_traps)] * 2  # twice as likely: user programs are often not reached
    if ok("stimer", "ei"):
        # a tick falls due with interrupts on after TICK_AT_CUT instructions;
        # placed first in the kernel, with a run() slice ending right then
        def tick_at_cut(memsize: int) -> list[g.Op]:
            return [g.Op("ei"), g.Op("li", r5, 0, TICK_AT_CUT), g.Op("stimer", 0, r5)]

        out += [("tick-at-cut", tick_at_cut)] * 2  # twice as likely: it needs a split run
    if ok("stimer", "di"):
        # a tick made pending with interrupts off, then each instruction that
        # can turn them on does, from wherever it takes IE
        from . import situations

        tick = [g.Op("di"), g.Op("li", r5, 0, 1), g.Op("stimer", 0, r5)]
        ie_psw = (1 << st.PSW_MODE_BIT) | (1 << st.PSW_IE_BIT)
        for name in situations.unmaskers(profile):
            source = _ie_source(profile, name)
            if source == "none":
                ops = tick + [g.Op(name)]
                out.append((f"unmask-{name}", lambda memsize, ops=ops: ops))
            elif source == "stack" and ok("push"):
                ops = [g.Op("li", st.SP, 0, g.KSTACK)] + tick + [
                    g.Op("li", r5, 0, 1 << st.PSW_IE_BIT), g.Op("push", 0, r5), g.Op(name)]
                out.append((f"unmask-{name}", lambda memsize, ops=ops: ops))
            elif source == "old-psw" and ok("call", "pop"):
                def via_old_psw(memsize: int, name=name) -> list[g.Op]:
                    # the saved PSW: supervisor, IE on, returning past `name`
                    # (its address from `call` to the next instruction)
                    return [g.Op("li", st.SP, 0, g.KSTACK), *tick, g.Op("li", r6, 0, 0),
                            g.Op("li", r5, 0, ie_psw), g.Op("st", r6, r5, st.OLD_PSW),
                            g.Op("call", 0, 0, 0, 0), g.Op("pop", r5), g.Op("addi", r5, 0, 14),
                            g.Op("st", r6, r5, st.OLD_PC), g.Op("st", r6, r6, st.OLD_BASE),
                            g.Op("li", r5, 0, memsize), g.Op("st", r6, r5, st.OLD_BOUND),
                            g.Op(name)]  # fmt: skip

                out.append((f"unmask-{name}", via_old_psw))
    return tuple(out)


TICK_AT_CUT = 2  # the timer the tick-at-cut scenario sets
# The drawn scenario: the user program starts with an instruction of the
# system family.  Theorem 1 is about these (a sensitive instruction that
# does not trap in user mode), and a user program drawn from every family
# seldom runs one before it traps or halts.  USER_SYSTEM_WEIGHT times as
# likely as a fixed scenario: only the few that do not trap in user mode
# show anything.
USER_SYSTEM = "user-system"
USER_SYSTEM_WEIGHT = 3
# Long runs: 1 case in 2**LONG_FLIPS (with ``vary`` and split runs) is a kernel
# loop of innocuous instructions run for LONG_STEPS steps, the last
# LONG_TAIL of them in a run() slice of their own.  A VMM that turns slow
# after a while passes on short runs; the efficiency ledger judges the last
# slice of a run that starts at LATE_FROM steps or later on its own
# (`popek.fuzz.efficiency.DirectLedger.add_late`).
LONG_FLIPS = 7  # 1 case in 2**7 = 128
LONG_STEPS = 3000
LONG_TAIL = 1000
LATE_FROM = 1000
PAGING_OFF_MARK = 0x0BAD  # what the paging-off scenario stores with paging off
PAGING_REG = 6  # the register a kernel that turns paging on first loads PTBR from
REMAP_REG = 5  # and the one it writes a page-table entry from

# Where a drawn instruction goes: 0-1 kernel, 2 handler, 3-5 user program.
KERNEL, HANDLER, USER = 0, 2, 3
SECTION_TAGS = 5


def _long_loop(mask: int) -> tuple[g.Op, ...]:
    """A kernel loop of innocuous instructions that outlasts `LONG_STEPS`:
    ``call`` to the next instruction and ``pop`` give the loop's address
    (code is placed wherever the kernel puts it), then decrement, compare,
    leave when zero, ``jr`` back."""
    r5, r6 = REMAP_REG, PAGING_REG
    count = LONG_STEPS // 4 + 1  # four instructions an iteration
    return (g.Op("li", st.SP, 0, g.KSTACK), g.Op("li", r5, 0, count), g.Op("call", 0, 0, 0, 0),
            g.Op("pop", r6), g.Op("addi", r6, 0, 2 * ILEN),  # r6: the loop's first instruction
            g.Op("addi", r5, 0, mask), g.Op("cmpi", r5, 0, 0), g.Op("jz", 0, 0, 0, 1), g.Op("jr", 0, r6))  # fmt: skip


@hs.composite
def _tagged_op(draw, plan: _Plan, shapes: Sequence[Shape], regs: Sequence[int], pools: _Pools):
    tag = draw(hs.integers(0, SECTION_TAGS))
    return [(tag, op) for op in draw(_op(plan, shapes, tag >= USER, regs, pools))]


def _draw_sections(draw, plan: _Plan, shapes, regs, max_size: int, pools: _Pools) -> list[tuple[int, g.Op]]:
    """All generated instructions as one list, each tagged with its section.

    One list, not three: when shrinking removes the user program or the
    handler, their instructions fall into the kernel instead of vanishing,
    so a bug first seen in a handler can shrink to two kernel instructions.
    Lists, not a drawn count, because Hypothesis's shrinker deletes list
    elements anywhere; a list of short runs, because one flat list averages
    only a handful of elements."""
    run = hs.lists(_tagged_op(plan, shapes, regs, pools), max_size=8)
    runs = draw(hs.lists(run, max_size=max(1, max_size // 4)))
    return [t for r in runs for ops in r for t in ops]


def _with_remaps(draw, plan: _Plan, section: tuple[g.Op, ...], pages: int) -> tuple[g.Op, ...]:
    """``section`` with a few page-table entries rewritten at drawn places:
    what an operating system does when it unmaps, protects or moves a page,
    and what a VMM's shadow or nested tables must follow at once.  Each
    rewrite stores a word into the page (so the VMM maps it, and the frame
    is marked), writes the page's entry, and loads the word back (the new
    mapping must hold: another frame reads another value, a missing one
    faults); two scratch registers carry the addresses and values."""
    page = plan.profile.arch.page_size
    used = sorted({a // page for a in g.LAYOUT_ADDRESSES if a // page < pages})
    remaps = draw(hs.lists(hs.tuples(
        hs.integers(0, len(section)), hs.sampled_from(used), hs.integers(0, page - 1),
        hs.integers(0, pages - 1), hs.sampled_from([7, 3, 5, 1, 0, 0]),
    ), min_size=1, max_size=2))  # fmt: skip
    out = list(section)
    for at, entry, offset, frame, perm in sorted(remaps, reverse=True):
        word = entry * page + offset
        mark = [g.Op("li", PAGING_REG, 0, word), g.Op("st", PAGING_REG, PAGING_REG, 0)]
        touch = [g.Op("li", PAGING_REG, 0, word), g.Op("ld", REMAP_REG, PAGING_REG, 0)]
        out[at:at] = mark + [
            g.Op("li", PAGING_REG, 0, g.PTABLE + entry),
            g.Op("li", REMAP_REG, 0, frame * page | perm),
            g.Op("st", PAGING_REG, REMAP_REG, 0),  # st rs, imm(rd): storage[r6] <- r5
        ] + touch
    return tuple(out)


@hs.composite
def _guests(
    draw,
    plan: _Plan,
    max_instructions: int,
    os_scaffold: bool,
    split_runs: bool,
) -> g.GuestCase:
    # a long run (`LONG_FLIPS`), decided first: drawn last, after a case's
    # many choices, it was seldom reached (no long run in a campaign's 1,000
    # cases); coin flips, as Hypothesis seldom draws the top of a wide range
    long_run = split_runs and plan.long_loop and all(draw(hs.booleans()) for _ in range(LONG_FLIPS))
    # swarm: which families this case may use (shrinks toward fewer)
    chosen = [f for f in plan.families if not draw(hs.booleans())]
    if not chosen:
        chosen = list(plan.families)
    # words that decode as nothing trap, and the handler runs for each:
    # in 1 case in 4 rather than 1 in 2, so that they do not cost a
    # campaign a third more guest steps
    if UNDEFINED_FAMILY in chosen and len(chosen) > 1 and draw(hs.booleans()):
        chosen.remove(UNDEFINED_FAMILY)
    shapes = [s for f in chosen for s in plan.groups[f]]
    # swarm over registers too: a case that uses few registers passes values
    # from one instruction to the next far more often (li then stimer, wrr,
    # ld ...); shrinks toward r0 alone
    regs = draw(hs.lists(hs.integers(0, plan.nregs - 1), min_size=1, max_size=4, unique=True))
    # storage size and run length: usually the ones asked for; 1 case in 6
    # gets another size and 1 in 4 another length (shrinks to the usual)
    memsize, steps = plan.memsizes[0], plan.steps[0]
    if len(plan.memsizes) > 1 and draw(hs.integers(0, 5)) == 5:
        memsize = draw(hs.sampled_from(plan.memsizes[1:]))
    if len(plan.steps) > 1 and draw(hs.integers(0, 3)) == 3:
        steps = draw(hs.sampled_from(plan.steps[1:]))
    pools = plan.pools[memsize]
    # How much operating system the case has: 0 bare kernel code, 1-2 a trap
    # handler too, 3-7 a handler and a user program.  Likelier than not, and
    # shrinks to 0.  The sections are lists, so shrinking this leaves the
    # kernel's instructions as they were.
    level = draw(hs.integers(0, 7)) if os_scaffold and plan.can_handle else 0
    tagged = _draw_sections(draw, plan, shapes, regs, 2 * max_instructions, pools)

    def home(tag: int) -> int:
        """Absent sections fold into the kernel."""
        if (tag >= USER and level < 3) or (tag >= HANDLER and level == 0):
            return KERNEL
        return tag

    def section(lo: int, hi: int, limit: int) -> tuple[g.Op, ...]:
        return tuple(op for tag, op in tagged if lo <= home(tag) <= hi)[:limit]

    # a kernel that starts a user program is kept short, so that it reaches
    # the user program more often than it halts or jumps away first
    kernel_room = max_instructions // (4 if level >= 3 else 1)
    kernel = section(KERNEL, HANDLER - 1, kernel_room)
    # most kernels start by pointing sp at their stack (else the first push
    # faults); one instruction that shrinking removes when it does not matter
    if draw(hs.integers(0, 3)):
        kernel = ((g.Op("li", st.SP, 0, g.KSTACK),) + kernel)[: max(kernel_room, 1)]
    # 2 cases in 3 run one fixed scenario (`_scenarios`) early in the
    # kernel (within its first three instructions), which gets the room for
    # it up to max_instructions; a ``user-`` scenario starts the user program instead
    scenario, room, cut, user_ops = None, kernel_room, None, ()
    if plan.scenarios and draw(hs.integers(0, 2)):
        scenario, build = draw(hs.sampled_from(plan.scenarios))
        if scenario == USER_SYSTEM:  # drawn (with its primed operand, sometimes)
            ops = draw(_op(plan, plan.groups["system"], True, regs, pools))
        else:
            ops = tuple(build(memsize))
        if scenario.startswith("user-"):
            user_ops, ops = ops, ()
        at = 0 if scenario == "tick-at-cut" else draw(hs.integers(0, min(2, len(kernel))))
        room = max(kernel_room, min(max_instructions, kernel_room + len(ops)))
        kernel = (kernel[:at] + ops + kernel[at:])[:room]
        if scenario == "tick-at-cut":  # a run() slice ends as the tick falls due
            cut = len(ops) - 1 + TICK_AT_CUT
    handler = user = None
    user_ie, trap_limit, page_perms, kdata, timer = False, 6, None, (), 0
    user_bound = g.USER_SIZE
    if level:
        handler = section(HANDLER, HANDLER, max(0, max_instructions // 4))
        trap_limit = draw(hs.integers(4, 40))
        if level >= 3:
            user = (user_ops + section(USER, SECTION_TAGS, max_instructions))[:max_instructions]
            user_ie = draw(hs.booleans())
            timer = draw(hs.integers(0, 40))
            # half the user programs get a bound other than their region's
            # size (shrinks to the default)
            if draw(hs.booleans()):
                user_bound = draw(hs.sampled_from(pools.ubounds))
    # the scenario that re-protects the handler's page needs paging on
    paged = scenario in ("reprotect-handler", "user-traps", "unmap-data", "paging-off")
    if os_scaffold and (paged or draw(hs.booleans())):
        kdata = tuple(draw(hs.lists(hs.sampled_from(pools.values), max_size=4)))
        if plan.paging:
            perm = hs.sampled_from([7, 3, 5, 1, 0])
            page_perms = tuple(draw(hs.lists(perm, min_size=memsize // plan.profile.arch.page_size,
                                             max_size=memsize // plan.profile.arch.page_size)))
    # with a page table laid out, sometimes (1 in 4) turn paging on first, so that what the
    # case does to page-table entries reaches a VMM's shadow or nested tables
    if page_perms is not None and "lptb" in plan.profile.by_name and (paged or not draw(hs.integers(0, 3))):
        on = (g.Op("li", PAGING_REG, 0, g.PTABLE), g.Op("lptb", 0, PAGING_REG))
        # (a scenario that turned paging on keeps its page table as it is)
        remapped = kernel if paged else _with_remaps(draw, plan, kernel, len(page_perms))
        if scenario is not None:  # what was added keeps its room, within max_instructions
            room = max(room, min(max_instructions, room + len(on) + len(remapped) - len(kernel)))
        kernel = (on + remapped)[: max(room, len(on))]
        # a kernel that turns paging on maps its own code, stack and table
        # (and, for the user-traps scenario, the user program's code)
        page = plan.profile.arch.page_size
        own = {a // page for a in (*range(g.KERNEL, g.USER_BASE, page), g.KSTACK - 1, g.PTABLE)}
        if scenario == "user-traps":
            own.add(g.USER_BASE // page)
        page_perms = tuple(7 if k in own else perm for k, perm in enumerate(page_perms))
        if handler is not None and not paged:
            handler = _with_remaps(draw, plan, handler, len(page_perms))[: max(0, max_instructions // 4)]
    chunks: tuple[int, ...] = ()
    if long_run:
        # a long run (shrinks away from it): the loop first, the rest after it
        kernel = (_long_loop(plan.mask) + kernel)[: g.KERNEL_ROOM - 1]
        return g.GuestCase(
            plan.profile.name, kernel, handler, user, user_ie=user_ie, user_bound=user_bound,
            trap_limit=trap_limit, timer=timer, kdata=kdata, page_perms=page_perms,
            memsize=memsize, steps=LONG_STEPS, chunks=(LONG_STEPS - LONG_TAIL, LONG_TAIL),
        )  # fmt: skip
    # Checkpoints: the run under the VMM is split into several run() calls and
    # compared at each boundary, which also catches differences that a later
    # instruction would overwrite before the end (a register read then reused).
    if split_runs and steps > 1 and draw(hs.integers(0, 3)):
        cuts = sorted(set(draw(hs.lists(hs.integers(1, steps - 1), max_size=8))))
        # 1 in 8 also has a stretch of short slices (every 1-3 steps), so
        # that timer ticks fall due at the end of a run() slice
        if draw(hs.integers(0, 7)) == 7:
            start, every = draw(hs.integers(1, steps - 1)), draw(hs.integers(1, 3))
            cuts = sorted(set(cuts) | set(range(start, min(start + 48, steps), every)))
        if cut is not None and cut < steps:
            cuts = sorted(set(cuts) | {cut})
        bounds = [0, *cuts, steps]
        chunks = tuple(b - a for a, b in zip(bounds, bounds[1:]))
    return g.GuestCase(
        plan.profile.name, kernel, handler, user, user_ie=user_ie, user_bound=user_bound,
        trap_limit=trap_limit, timer=timer, kdata=kdata, page_perms=page_perms,
        memsize=memsize, steps=steps, chunks=chunks,
    )  # fmt: skip


def from_profile(
    profile: Profile | str,
    *,
    max_instructions: int = 24,
    families: Iterable[str] | None = None,
    steps: int = DEFAULT_STEPS,
    memsize: int = g.MIN_MEMSIZE,
    os_scaffold: bool = True,
    split_runs: bool = True,
    exclude: Iterable[str] = (),
    vary: bool = True,
) -> hs.SearchStrategy[g.GuestCase]:
    """Guests for ``profile`` (a `Profile` or a registered name).

    ``max_instructions``: most generated instructions per section (kernel,
    user; the handler gets a quarter).  ``families``: which instruction
    families cases may draw from (default all; see
    ``popek.fuzz.families.FAMILIES``).  ``steps``: the step budget each case
    runs for.  ``memsize``: guest storage in words.  ``os_scaffold``: allow
    the trap handler, user program and page table (off: bare kernel code
    only).  ``split_runs``: let a case split the run under the VMM into
    several ``run()`` calls.  ``exclude``: instruction names never to
    draw (a campaign excludes the culprit of each finding, to find the next
    distinct one); the scaffolding still uses what it needs.  ``vary``: let
    some cases have another storage size (`OTHER_MEMSIZES`) and another
    run length (`OTHER_STEPS` times ``steps``) than the ones given, so that
    sizes and lengths a VMM must handle are tried (off: every case has
    exactly ``memsize`` and ``steps``).
    """
    prof = _profile(profile)
    _int_arg("max_instructions", max_instructions, 0, g.KERNEL_ROOM - 1)
    _int_arg("steps", steps, 1, MAX_STEPS)
    _int_arg("memsize", memsize, g.SMALL_MEMSIZE, 1 << prof.arch.word)
    if memsize % prof.arch.page_size:
        raise InvalidArgument(f"memsize={memsize} must be a multiple of the page size ({prof.arch.page_size})")
    fams = tuple(FAMILIES if families is None else families)
    unknown = set(fams) - set(FAMILIES)
    if unknown or not fams:
        raise InvalidArgument(f"families={fams!r}: choose a non-empty subset of {FAMILIES}")
    for name, flag in (("os_scaffold", os_scaffold), ("split_runs", split_runs), ("vary", vary)):
        if not isinstance(flag, bool):
            raise InvalidArgument(f"{name}={flag!r} must be a bool")
    excluded = frozenset(exclude)
    unknown_names = excluded - set(prof.by_name)
    if unknown_names:
        raise InvalidArgument(f"exclude={sorted(unknown_names)}: not instructions of {prof.name!r}")
    plan = _Plan(prof, fams, memsize, excluded, vary, steps, default_families=families is None)
    if not plan.families:
        raise InvalidArgument(f"profile {prof.name!r} has no instructions in families {fams!r}")
    strategy = _guests(plan, max_instructions, os_scaffold, split_runs)
    args = [repr(prof.name)]
    defaults = dict(max_instructions=24, families=None, steps=DEFAULT_STEPS,
                    memsize=g.MIN_MEMSIZE, os_scaffold=True, split_runs=True, exclude=(), vary=True)  # fmt: skip
    given = dict(max_instructions=max_instructions, families=None if families is None else fams,
                 steps=steps, memsize=memsize, os_scaffold=os_scaffold, split_runs=split_runs,
                 exclude=tuple(sorted(excluded)), vary=vary)  # fmt: skip
    args += [f"{k}={v!r}" for k, v in given.items() if v != defaults[k]]
    return _Named(strategy, f"from_profile({', '.join(args)})")


class _Named(hs.SearchStrategy):
    """A strategy that draws from another and prints as the call that built it."""

    def __init__(self, inner: hs.SearchStrategy, text: str):
        super().__init__()
        self._inner = inner
        self._text = text

    def do_draw(self, data):
        return data.draw(self._inner)

    def __repr__(self) -> str:
        return self._text
