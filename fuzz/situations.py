"""Situation coverage: what a generated guest made the machine do, beyond
instruction x mode.

ISA coverage (`popek.fuzz.isa_coverage`) says which instruction ran in which
mode.  A VMM also goes wrong in *situations*: the same code under two
relocation bases, a tick pending when interrupts come back on, a page-table
entry rewritten between two uses, an R that reaches past storage.  This
module is the one place that names them (`catalogue`), each with a line on
why a VMM can get it wrong, and detects them on the *bare* reference run of
a case, so what is reached does not depend on the VMM under test.

Detection rides on the bare run that ISA coverage already makes
(`isa_coverage.run_observed`, which runs the machine with its ``census``
on, one instruction at a time).  Nothing is added to the machine's loop:
for the length of that run, `observe` wraps a few of the machine's own
per-instance routines (and its fetch cache's), and restores them afterwards:

* ``cache.fill``, the decode-cache miss (once per instruction address and
  translation context, and again after a store invalidates it): which
  code ran under which base, page-table entry and mode, and whether the
  words fetched still hold what the image loaded there;
* ``_trap``, the P&G trap mechanism: each trap's cause and mode, its info
  (the faulting address), and the R the new PSW loads;
* the per-opcode operations (``cache.ops``) of the instructions that
  touch storage through translation, write IE or R, or are sensitive (the
  ``system`` family): the virtual addresses they access (compiled from
  the spec's own ``load``/``store`` calls, `_access_function`), the
  page-table entries those accesses use, an unmasking with a tick pending,
  a tick that becomes pending on a sensitive instruction, an R loaded at or
  past memsize.

The rest of the instructions run exactly as before.  Per case, the facts
seen are reduced to the set of situation names reached
(`Observation.reached`); `IsaCoverage` counts, per situation, how many
cases reached it.  What detection cannot see is said in docs/fuzzing.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable

from popek.model import codegen
from popek.spec import state as st
from popek.spec.profiles import Profile
from popek.spec.sem import Sem
from popek.spec.trace import run_definition, trace

from .families import shape

# -- the catalogue ----------------------------------------------------------
DEFAULT_MEMSIZE = 0x400  # the storage size and run length most guests have:
DEFAULT_STEPS = 400  # situations "small", "large", "short", "long" are relative to them
MODES = {st.SUPERVISOR: "supervisor", st.USER: "user"}
# causes taken only in vtx guest mode, which generated guests never enter
GUEST_ONLY_CAUSES = (st.Cause.VMEXIT, st.Cause.NPF)
PTE_FIELDS = ("present", "write", "user", "frame")


@dataclass(frozen=True)
class Situation:
    name: str
    why: str  # one line: what a VMM can get wrong there


def _fixed() -> list[Situation]:
    S = Situation
    return [
        S("code-under-two-bases",
          "the same supervisor code run under two relocation bases: translated or decoded code "
          "cached by address must be keyed on R (jump targets and saved PCs are virtual)"),
        S("code-under-two-mappings",
          "the same supervisor code fetched through two different page-table entries (or tables): "
          "code caches and shadow entries keyed by virtual page go stale"),
        S("first-page",
          "a guest load or store at a virtual address in the first page of the address space, "
          "where the trap mechanism keeps its PSW words"),
        S("top-page",
          "a guest access (load, store, stack or fetch) at an address in the top page of the "
          "address space: address arithmetic that wraps or clips goes wrong there"),
        S("base-at-memsize",
          "R loaded with base equal to memsize: no word of the region exists, every access must trap"),
        S("base-beyond-memsize",
          "R loaded with base past memsize: composing it with the VMM's own offset must not "
          "reach host words"),
        S("end-at-memsize",
          "R loaded with base > 0 and base + bound exactly memsize: the region ends at the last word"),
        S("end-beyond-memsize",
          "R loaded with base + bound past memsize: legal, the storage check traps, and a VMM "
          "running it directly must clip the real bound to the allocation"),
        *[S(f"pte-{f}-changed",
            f"the {f} field of a page-table entry changed between two translations through it: "
            "shadow or nested tables must follow the guest's rewrite at once") for f in PTE_FIELDS],
        S("self-modifying-code",
          "an instruction fetched from words a store changed after the image was loaded: "
          "translators and decode caches must notice the store"),
        S("tick-at-slice-end",
          "a timer tick due (pending with interrupts on) at the end of a run(n) slice: the VMM "
          "must deliver it first thing in the next run(), not lose or repeat it"),
        S("tick-after-sensitive",
          "the timer expires on the step that retires a sensitive instruction (one the VMM emulates): "
          "the emulation must count that step and raise the tick"),
        S("storage-small", "guest storage smaller than the usual 1024 words"),
        S("storage-not-power-of-two", "guest storage that is not a power of two: no mask trick works"),
        S("storage-large", "guest storage larger than the usual 1024 words"),
        S("run-short", "a step budget shorter than the usual 400"),
        S("run-long", "a bare run past 400 steps: state a VMM accumulates over a long run (slices, caches)"),
    ]  # fmt: skip


@lru_cache(maxsize=None)
def unmaskers(profile: Profile) -> tuple[str, ...]:
    """Instructions that can set IE, read off the spec: their effects write
    IE with something other than the constant 0.  Those that also enter
    vtx guest mode (``vmrun``: IE comes from a VMCS) are left out:
    generated guests never set one up."""
    out = []
    for insn in sorted(profile.insns, key=lambda i: i.name):
        fx = trace(insn, profile.arch)
        w = fx.field_writes.get(st.IE)
        if w is None or (w.op == "const" and w.args[0] == 0) or st.GUEST in fx.field_writes:
            continue
        out.append(insn.name)
    return tuple(out)


@lru_cache(maxsize=None)
def trap_pairs(profile: Profile) -> tuple[tuple[st.Cause, str], ...]:
    """(cause, mode) pairs a trap can be taken with on this profile: the
    causes the spec's instructions, fetch, decode and timer can raise,
    from both modes, except PRIVILEGED from supervisor mode (privileged
    means: traps in user mode) and the vtx guest-mode-only causes."""
    causes = {st.Cause.MEMORY, st.Cause.ILLEGAL}  # fetch (bounds, storage) and undecodable words
    if "paging" in profile.features:
        causes.add(st.Cause.PAGE)
    for insn in profile.insns:
        fx = trace(insn, profile.arch)
        causes.update(st.Cause(c) for _cond, c, _info in fx.traps)
        if st.TIMER in fx.field_writes:
            causes.add(st.Cause.TIMER)
    pairs = []
    for cause in sorted(causes - set(GUEST_ONLY_CAUSES)):
        for mode in ("supervisor", "user"):
            if cause == st.Cause.PRIVILEGED and mode == "supervisor":
                continue
            pairs.append((cause, mode))
    return tuple(pairs)


def trap_name(cause: int, mode: str) -> str:
    return f"trap-{st.Cause(cause).name.lower()}-from-{mode}"


@lru_cache(maxsize=None)
def catalogue(profile: Profile) -> tuple[Situation, ...]:
    """Every situation of ``profile``, in the order reports list them."""
    out = _fixed()
    for name in unmaskers(profile):
        out.append(Situation(
            f"unmask-pending-by-{name}",
            f"`{name}` turns interrupts on while a timer tick is pending: the tick is taken before "
            "the next instruction, and an emulated unmask must deliver it there",
        ))  # fmt: skip
    for cause, mode in trap_pairs(profile):
        out.append(Situation(
            trap_name(cause, mode),
            f"a {cause.name.lower()} trap taken from {mode} mode: reflected with the right cause, "
            "info, saved PSW and R",
        ))  # fmt: skip
    return tuple(out)


def names(profile: Profile) -> list[str]:
    return [s.name for s in catalogue(profile)]


# -- per-opcode access functions, from the spec ------------------------------
class _AccessSem(Sem):
    """A `Sem` that also notes the virtual addresses a definition loads or
    stores through translation (``load``, ``store``, and so push and pop)."""

    def __init__(self, arch):
        super().__init__(arch)
        self.accesses: list = []

    def load(self, vaddr):
        self.accesses.append(vaddr)
        return super().load(vaddr)

    def store(self, vaddr, value):
        self.accesses.append(vaddr)
        return super().store(vaddr, value)


@lru_cache(maxsize=None)
def _access_maker(insn, arch: st.Arch) -> Callable | None:
    """``make(S, M, MS) -> accesses(rd, rs, imm) -> tuple of virtual
    addresses``: what ``insn`` reads or writes through translation, from the
    pre-state (None: it accesses none)."""
    s = _AccessSem(arch)
    run_definition(insn, s)
    if not s.accesses:
        return None
    em = codegen.Emitter(arch, codegen.state_binder({"rd": "rd", "rs": "rs", "imm": "imm"}), "a")
    for e in s.accesses:
        em.count(e)
    parts = [em.expr(e) for e in s.accesses]
    body = em.lines + [f"return ({', '.join(parts)},)"]
    return codegen.compile_function(f"accesses_{insn.name}", "rd, rs, imm", body, "S, M, MS")


# -- one case's observation ---------------------------------------------------
class Observation:
    """Facts seen on one case's bare run (across its chunks)."""

    def __init__(self, machine):
        self.machine = machine
        arch = machine.arch
        self.memsize = machine.memsize
        self.mask = arch.mask
        self.pb = arch.page_bits
        self.page = arch.page_size
        self.top = (1 << arch.word) - arch.page_size
        self.frame_mask = arch.mask & ~(arch.page_size - 1)
        self.orig = machine.M[: machine.memsize]  # storage as loaded
        self.budget = 0  # steps asked for, over the chunks
        self.ran = 0  # steps run
        self.chunks = 0
        self.due_at_end = False  # a tick due when the last chunk ended
        self.end_state: list[int] | None = None
        self.reached: set[str] = set()
        self.code_bases: dict[int, int] = {}  # supervisor linear pc -> first base seen
        self.code_ptes: dict[int, int] = {}  # supervisor linear pc -> first (ptbr, pte) seen
        self.pte_last: dict[int, int] = {}  # pte address -> value at its last use

    # -- facts --------------------------------------------------------------
    def pte_use(self, addr: int) -> int:
        """A translation read the entry at physical ``addr``: its value, and
        which fields changed since its last use."""
        value = self.machine.M[addr] if addr < self.memsize else 0
        last = self.pte_last.get(addr)
        if last is not None and last != value:
            diff = last ^ value
            if diff & st.PTE_PRESENT:
                self.reached.add("pte-present-changed")
            if diff & st.PTE_WRITE:
                self.reached.add("pte-write-changed")
            if diff & st.PTE_USER:
                self.reached.add("pte-user-changed")
            if diff & self.frame_mask:
                self.reached.add("pte-frame-changed")
        self.pte_last[addr] = value
        return value

    def fetched(self, S, pc: int, phys: int) -> None:
        """A decode-cache miss at virtual ``pc`` (physical ``phys``)."""
        base = S[st.BASE]
        linear = (base + pc) & self.mask
        ptbr = S[st.PTBR]
        pte = None
        if ptbr:
            pte = (ptbr, self.pte_use((ptbr + (linear >> self.pb)) & self.mask))
        if S[st.MODE]:
            first = self.code_bases.setdefault(linear, base)
            if first != base:
                self.reached.add("code-under-two-bases")
            if pte is not None:
                first = self.code_ptes.setdefault(linear, pte)
                if first != pte:
                    self.reached.add("code-under-two-mappings")
        orig = self.orig
        if phys + 1 < self.memsize and (
            self.machine.M[phys] != orig[phys] or self.machine.M[phys + 1] != orig[phys + 1]
        ):
            self.reached.add("self-modifying-code")

    def accessed(self, S, vaddrs: tuple) -> None:
        """An instruction is about to load or store at ``vaddrs`` (virtual)."""
        ptbr = S[st.PTBR]
        for v in vaddrs:
            if v < self.page:
                self.reached.add("first-page")
            elif v >= self.top:
                self.reached.add("top-page")
            if ptbr:
                linear = (S[st.BASE] + v) & self.mask
                self.pte_use((ptbr + (linear >> self.pb)) & self.mask)

    def r_loaded(self, S) -> None:
        base, bound, memsize = S[st.BASE], S[st.BOUND], self.memsize
        if base == memsize:
            self.reached.add("base-at-memsize")
        elif base > memsize:
            self.reached.add("base-beyond-memsize")
        end = base + bound
        if base and end == memsize:
            self.reached.add("end-at-memsize")
        elif end > memsize:
            self.reached.add("end-beyond-memsize")

    def trapped(self, cause: int, info: int, mode: int) -> None:
        self.reached.add(trap_name(cause, MODES[mode]))
        if cause in (st.Cause.MEMORY, st.Cause.PAGE) and info >= self.top:
            self.reached.add("top-page")

    # -- chunks ---------------------------------------------------------------
    def continues(self, machine) -> bool:
        """Is ``machine`` where this case's last chunk left it?"""
        return machine is self.machine and self.end_state == machine.S

    def chunk_done(self, steps_asked: int, steps_run: int) -> None:
        S = self.machine.S
        if self.due_at_end:  # the previous chunk ended with a tick due, and the run went on
            self.reached.add("tick-at-slice-end")
        self.due_at_end = bool(S[st.PEND] and S[st.IE] and not S[st.HALTED])
        self.budget += steps_asked
        self.ran += steps_run
        self.chunks += 1
        self.end_state = list(S)

    def situations(self) -> set[str]:
        """The situations this case reached (see `catalogue`)."""
        out = set(self.reached)
        if self.memsize < DEFAULT_MEMSIZE:
            out.add("storage-small")
        elif self.memsize > DEFAULT_MEMSIZE:
            out.add("storage-large")
        if self.memsize & (self.memsize - 1):
            out.add("storage-not-power-of-two")
        if self.budget < DEFAULT_STEPS:
            out.add("run-short")
        if self.ran > DEFAULT_STEPS:
            out.add("run-long")
        return out


# -- watching a machine --------------------------------------------------------
@lru_cache(maxsize=None)
def _opcode_plan(profile: Profile) -> dict[int, tuple]:
    """opcode -> (name, access maker or None, writes IE (unmasker), writes R,
    sensitive) for the opcodes worth watching."""
    plan = {}
    unmask = set(unmaskers(profile))
    for insn in profile.insns:
        fx = trace(insn, profile.arch)
        acc = _access_maker(insn, profile.arch)
        writes_r = st.BASE in fx.field_writes or st.BOUND in fx.field_writes
        sensitive = shape(insn, profile.arch).family == "system"
        ie = insn.name in unmask
        if acc or writes_r or sensitive or ie:
            plan[insn.opcode] = (insn.name, acc, ie, writes_r, sensitive)
    return plan


class _Watch:
    """The machine's routines wrapped for one run; `observe` installs it."""

    def __init__(self, machine):
        self.machine = machine
        self.obs: Observation | None = None  # wrapped operations left in cached lines check this
        S = machine.S
        M = machine.M
        self.real_fill = machine.cache.fill
        self.real_trap = machine._trap
        self.real_ops: dict[int, Callable | None] = {}
        self.ops: dict[int, Callable] = {}
        for opcode, (name, acc, ie, writes_r, sensitive) in _opcode_plan(machine.profile).items():
            real = machine.cache.op(machine.profile.by_opcode[opcode])
            self.real_ops[opcode] = real
            access = acc(S, M, machine.memsize) if acc else None
            self.ops[opcode] = self._wrap(real, name, access, ie, writes_r, sensitive)

        watch = self

        def fill(pc):
            line = watch.real_fill(pc)
            obs = watch.obs
            if obs is not None and line is not None and type(line) is not tuple:
                obs.fetched(S, pc, line.phys)
            return line

        def trap(cause, info):
            obs = watch.obs
            if obs is not None:
                obs.trapped(cause, info, S[st.MODE])
            watch.real_trap(cause, info)
            if obs is not None:
                obs.r_loaded(S)

        self.fill, self.trap = fill, trap

    def _wrap(self, real, name: str, access, ie: bool, writes_r: bool, sensitive: bool):
        S, watch = self.machine.S, self
        IE, PEND, TIMER = st.IE, st.PEND, st.TIMER
        unmasked = f"unmask-pending-by-{name}"

        def op(rd, rs, imm):
            obs = watch.obs
            if obs is None:
                return real(rd, rs, imm)
            if access is not None:
                obs.accessed(S, access(rd, rs, imm))
            ie_before = S[IE]
            r = real(rd, rs, imm)
            if r is None:  # retired
                if ie and not ie_before and S[IE] and (S[PEND] or S[TIMER] == 1):
                    obs.reached.add(unmasked)
                if writes_r:
                    obs.r_loaded(S)
                if sensitive and S[TIMER] == 1:  # this step's tick makes it pending
                    obs.reached.add("tick-after-sensitive")
            return r

        return op

    def install(self, obs: Observation) -> None:
        m = self.machine
        self.obs = obs
        m.cache.fill = self.fill
        m._trap = self.trap
        m.cache.ops.update(self.ops)

    def remove(self) -> None:
        m = self.machine
        self.obs = None
        m.cache.__dict__.pop("fill", None)
        m._trap = self.real_trap
        m.cache.ops.update(self.real_ops)


def _watch_for(machine) -> _Watch:
    w = machine.__dict__.get("_situation_watch")
    if w is None or w.machine is not machine:
        w = machine.__dict__["_situation_watch"] = _Watch(machine)
    return w


class observe:
    """Context manager: ``machine`` runs one chunk of ``obs``'s case with
    its routines watched (they are put back on exit)."""

    def __init__(self, machine, obs: Observation):
        self.watch = _watch_for(machine)
        self.obs = obs

    def __enter__(self):
        self.watch.install(self.obs)
        return self.obs

    def __exit__(self, *exc):
        self.watch.remove()
        return False


def observation_for(holder, machine) -> Observation:
    """The observation a chunk run on ``machine`` belongs to, kept on
    ``holder`` (an `IsaCoverage`): the one its last chunk left, if the
    machine is where that chunk ended; else a new case (the previous one's
    situations are counted first, through ``holder.settle()``)."""
    obs = holder._pending
    if obs is not None and obs.continues(machine):
        return obs
    holder.settle()
    obs = holder._pending = Observation(machine)
    return obs


def shares(counts: dict[str, int], cases: int, profile: Profile) -> dict[str, float]:
    """Share of ``cases`` reaching each situation of the catalogue."""
    return {n: (counts.get(n, 0) / cases if cases else 0.0) for n in names(profile)}


def unreached(counts: dict[str, int], profile: Profile) -> list[str]:
    return [n for n in names(profile) if not counts.get(n)]


def summary_line(counts: dict[str, int], cases: int, profile: Profile) -> str:
    """One line for a campaign summary."""
    all_names = names(profile)
    got = len(all_names) - len(unreached(counts, profile))
    line = f"situations: {got} of {len(all_names)} reached ({got / len(all_names):.0%}) in {cases} cases"
    missing = unreached(counts, profile)
    if missing:
        line += "; NOT reached: " + ", ".join(missing)
    return line


def to_json(counts: dict[str, int], cases: int, profile: Profile | None = None) -> dict:
    doc: dict = {"cases": cases, "reached": dict(sorted(counts.items()))}
    if profile is not None:
        doc["unreached"] = unreached(counts, profile)
        doc["fraction"] = round(1 - len(doc["unreached"]) / len(names(profile)), 4)
    return doc


def merge_json(into: dict[str, int], doc: dict | None) -> int:
    """Add a status's ``situations`` counts to ``into``; returns its cases."""
    if not doc:
        return 0
    for k, v in doc.get("reached", {}).items():
        into[k] = into.get(k, 0) + v
    return doc.get("cases", 0)


__all__: Iterable[str] = (
    "Situation", "catalogue", "names", "unmaskers", "trap_pairs", "Observation", "observe",
    "reached", "shares", "unreached", "summary_line",
)  # fmt: skip
