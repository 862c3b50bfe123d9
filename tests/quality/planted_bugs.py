"""Deliberately broken VMMs: each one small, plausible bug in a built-in design.

The harness is only as good as the bugs it finds.  Every class here is a
built-in design with one mistake of the kind people make when writing a
VMM; `BUGS` lists each with the profile it is fuzzed on and the
requirement it breaks.  ``test_quality.py`` asserts that a default-budget
campaign finds every one.
"""

from __future__ import annotations

from dataclasses import dataclass

from popek.model.vmms import paravirt
from popek.model.vmms.base import LIVE_SLOTS, SoftwareVMM
from popek.model.vmms.binary_translation import BinaryTranslationVMM
from popek.model.vmms.emulator import Emulator
from popek.model.vmms.hybrid import HybridVMM
from popek.model.vmms.paravirt import ParavirtVMM
from popek.model.vmms.shadow import ShadowPagingVMM
from popek.model.vmms.trap_and_emulate import TrapAndEmulate
from popek.spec import state as st
from popek.spec.encoding import decode
from popek.spec.sem import ILEN
from popek.vmm import Support

PLANTED = {p: Support(True, True, "planted bug: should be found") for p in ("pg", "hybrid", "x86", "vtx")}
# A trap-and-emulate fork declares what trap-and-emulate does: efficient with the guest's paging off.
PLANTED_TE = {
    p: Support(True, True, "planted bug: should be found", direct_paged=False) for p in ("pg", "hybrid", "x86", "vtx")
}


def next_insn(vmm: SoftwareVMM) -> str | None:
    """The name of the instruction the virtual CPU is about to run."""
    v = vmm.vcpu
    if v.S[st.PEND] and v.S[st.IE]:
        return None
    p0, p1, _ = v.cache.fetch()
    if p0 is None:
        return None
    d = decode(v.profile, v.M[p0], v.M[p1])
    return d.insn.name if d else None


class _EmulateHook:
    """Mixin: ``after_emulate(name)`` runs after each emulated instruction."""

    def emulate_step(self) -> int:
        if self.vcpu_stale:
            self.vcpu.flush()
            self.mark_vcpu_current()
        name = next_insn(self)
        before = list(self.vcpu.S)
        n = super().emulate_step()
        if n:
            self.after_emulate(name, before)
        return n

    def after_emulate(self, name: str | None, before: list[int]) -> None:
        pass


# -- emulation bugs ----------------------------------------------------------
class RtiForgetsFlags(_EmulateHook, TrapAndEmulate):
    """Emulated rti restores mode, PC, R and IE but forgets the arithmetic flags."""

    name = "bug-rti-forgets-flags"
    supports = PLANTED

    def after_emulate(self, name, before):
        if name == "rti":
            self.vcpu.S[st.FLAGS] = before[st.FLAGS]


class PushfShowsRealIE(_EmulateHook, TrapAndEmulate):
    """IE virtualized for popf, but emulated pushf pushes the real IE (always on)."""

    name = "bug-pushf-real-ie"
    supports = PLANTED

    def after_emulate(self, name, before):
        if name == "pushf":
            v = self.vcpu
            sp = v.S[st.SP]
            # the word just pushed, through the guest's own translation
            phys = (v.S[st.BASE] + sp) & 0xFFFF
            if v.S[st.PTBR] == 0 and sp < v.S[st.BOUND] and phys < v.memsize:
                v.M[phys] = v.M[phys] | (1 << st.PSW_IE_BIT)


class OutDropped(_EmulateHook, TrapAndEmulate):
    """The output of an emulated `out` is dropped."""

    name = "bug-out-dropped"
    supports = PLANTED

    def after_emulate(self, name, before):
        if name == "out" and self.vcpu.out:
            self.vcpu.out.pop()


class RtiKeepsIE(_EmulateHook, TrapAndEmulate):
    """Emulated rti restores mode, PC and R but leaves the interrupt flag."""

    name = "bug-rti-keeps-ie"
    supports = PLANTED

    def after_emulate(self, name, before):
        if name == "rti":
            self.vcpu.S[st.IE] = before[st.IE]


class WrrKeepsBound(_EmulateHook, TrapAndEmulate):
    """Emulated wrr loads the new base but keeps the old bound."""

    name = "bug-wrr-bound-not-set"
    supports = PLANTED

    def after_emulate(self, name, before):
        if name == "wrr":
            self.vcpu.S[st.BOUND] = before[st.BOUND]


# -- trap reflection bugs ----------------------------------------------------
class SyscallSavesNextPC(TrapAndEmulate):
    """A reflected system call saves the PC of the *next* instruction."""

    name = "bug-syscall-saved-pc"
    supports = PLANTED

    def reflect(self, cause, info):
        super().reflect(cause, info)
        if cause == st.Cause.SYSCALL:
            v = self.vcpu
            v.M[st.OLD_PC] = (v.M[st.OLD_PC] + 2) & 0xFFFF


class MemoryFaultAsPageFault(TrapAndEmulate):
    """A reflected bounds violation is reported with the page-fault cause."""

    name = "bug-wrong-cause"
    supports = PLANTED

    def reflect(self, cause, info):
        if cause == st.Cause.MEMORY:
            cause = st.Cause.PAGE
        super().reflect(cause, info)


class FaultInfoLost(TrapAndEmulate):
    """A reflected trap's info word (fault address, syscall number) is dropped."""

    name = "bug-trap-info-lost"
    supports = PLANTED

    def reflect(self, cause, info):
        super().reflect(cause, 0)


class EmulatesUserPrivileged(TrapAndEmulate):
    """Emulates a privileged instruction even in virtual user mode, as if the
    guest were its kernel (forgets to reflect it to the guest's handler)."""

    name = "bug-emulates-user-privileged"
    supports = PLANTED

    def handle_host_trap(self, cause, info):
        v = self.vcpu
        if cause == st.Cause.PRIVILEGED and v.S[st.MODE] == st.USER:
            v.S[st.MODE] = st.SUPERVISOR
            self.emulate_step()
            if v.S[st.MODE] == st.SUPERVISOR:  # the instruction did not change it
                v.S[st.MODE] = st.USER
            return
        super().handle_host_trap(cause, info)


# -- timer bugs --------------------------------------------------------------
class TimerOffByOne(TrapAndEmulate):
    """The host timer is programmed one instruction late."""

    name = "bug-timer-off-by-one"
    supports = PLANTED

    def push(self):
        super().push()
        if self.host.S[st.TIMER]:
            self.host.S[st.TIMER] += 1


class MaskedTickLost(TrapAndEmulate):
    """A timer expiry while the guest has interrupts off is dropped, not left pending."""

    name = "bug-masked-tick-lost"
    supports = PLANTED

    def handle_host_trap(self, cause, info):
        super().handle_host_trap(cause, info)
        if cause == st.Cause.TIMER and not self.vcpu.S[st.IE]:
            self.vcpu.S[st.PEND] = 0


# -- memory / safety bugs -------------------------------------------------------
class RNotComposed(TrapAndEmulate):
    """The real R is the guest's virtual R, not composed with the allocation."""

    name = "bug-r-not-composed"
    supports = PLANTED

    def real_r(self):
        S = self.vcpu.S
        return S[st.BASE], S[st.BOUND]


class BoundNotClipped(TrapAndEmulate):
    """The real bound is the guest's bound, not clipped to the allocation."""

    name = "bug-bound-not-clipped"
    supports = PLANTED

    def real_r(self):
        base, _ = super().real_r()
        return base, self.vcpu.S[st.BOUND]


# -- accounting ---------------------------------------------------------------
class ReflectCountedDirect(TrapAndEmulate):
    """A reflected trap is counted as a direct step as well as an emulated one."""

    name = "bug-counts-reflect-twice"
    supports = PLANTED

    def reflect(self, cause, info):
        super().reflect(cause, info)
        self.counts.direct += 1


class EmulatorCountsDirect(Emulator):
    """The full emulator books its interpreted steps as direct ones: the
    totals still add up, but it claims an efficiency it does not have."""

    name = "bug-emulator-counts-direct"
    supports = PLANTED

    def interpret(self, budget: int) -> int:
        n = super().interpret(budget)
        self.counts.emulated -= n
        self.counts.direct += n
        return n


# -- the hybrid design ------------------------------------------------------------
class HybridForgetsModeCheck(HybridVMM):
    """The hybrid VMM's test for direct execution checks paging but forgets
    the virtual mode, so virtual-supervisor code runs directly too."""

    name = "bug-hybrid-no-mode-check"
    supports = PLANTED

    def direct_allowed(self):
        return self.vcpu.S[st.PTBR] == 0


# -- binary translation, shadow paging, paravirtualization --------------------------
class StaleTranslation(BinaryTranslationVMM):
    """The translator write-protects the pages it translated from, but on a
    guest write it forgets to drop the translations made from that page: a
    kernel that patches its own code goes on running the old code."""

    name = "bug-bt-stale-translation"
    supports = PLANTED

    def on_guest_write(self, frame: int) -> None:
        ShadowPagingVMM.on_guest_write(self, frame)  # the shadow tables' part only


class StaleShadowEntry(BinaryTranslationVMM):
    """A guest write to its own page table is noticed, but the shadow entries
    built from the old entry are kept: the guest's remapping never reaches
    the host."""

    name = "bug-shadow-not-invalidated"
    supports = PLANTED

    def on_guest_write(self, frame: int) -> None:
        if self.is_table_page(frame):
            return
        super().on_guest_write(frame)


class PassTrustsTheGuest(ParavirtVMM):
    """The paravirtualizing pass rewrites every sensitive instruction but skips
    the check that the guest can never notice (Xen's trust in its ported
    kernels, applied to guests nobody ported)."""

    name = "bug-pv-pass-trusts-guest"
    supports = PLANTED

    def rewrite(self, image, memsize):
        return paravirt.patch(image, paravirt.find_sites(image, self.host.profile))


class HypercallNotRearmed(ParavirtVMM):
    """After serving a hypercall the VMM leaves the original instruction in
    place, so its next run is on the host, directly, in real user mode."""

    name = "bug-pv-hypercall-not-rearmed"
    supports = PLANTED

    def rearm(self, p0: int, p1: int, k: int) -> None:
        pass


# -- efficiency bugs: faithful, but P&G's efficiency lost ----------------------
class InterpretsTheKernel(TrapAndEmulate):
    """Runs the guest directly only in virtual user mode (the mode test of the
    hybrid design, kept by mistake): every innocuous kernel instruction is
    interpreted.  Faithful; not efficient, though it declares it is."""

    name = "planted-interprets-the-kernel"
    supports = PLANTED

    def direct_allowed(self) -> bool:
        return self.vcpu.S[st.MODE] == st.USER and super().direct_allowed()


# -- safety bugs: faithful, but the guest reaches what it was not given --------
class ScratchPastAllocation(_EmulateHook, TrapAndEmulate):
    """When an emulated `rti` takes the guest into user mode, the VMM keeps
    the guest's kernel stack pointer in a scratch word it believes its own:
    the word right after the guest's storage, which is neither the guest's
    nor reserved.  Faithful (the guest never sees the word); unsafe."""

    name = "planted-scratch-past-allocation"
    supports = PLANTED_TE

    def after_emulate(self, name, before):
        if name == "rti" and self.vcpu.S[st.MODE] == st.USER:
            self.host.write(self.allocation().stop, before[st.SP])


class BoundReachesReserved(TrapAndEmulate):
    """The VMM keeps its bookkeeping in the page right after the guest's
    storage (reserved) and clips the real bound one word too late: guest
    code on the host can address the first reserved word (reading it, and
    writing it, unseen by a canary check that leaves reserved words out)."""

    name = "planted-bound-reaches-reserved"
    supports = PLANTED_TE

    def reserved(self):
        a = self.allocation()
        return [*super().reserved(), range(a.stop, a.stop + 64)] if self.layout else []

    def real_r(self):
        base, bound = super().real_r()
        lay = self.layout
        return base, (bound + 1 if base + bound == lay.guest_offset + lay.memsize else bound)


# -- efficiency bugs judged per instruction, from the host's record ------------
class InterpretsLoads(TrapAndEmulate):
    """A fork of trap-and-emulate that interprets every `ld` (its author
    wanted to watch the guest's loads): the direct run stops before each
    one, and the virtual CPU runs it.  Faithful; `ld` never runs directly."""

    name = "planted-interprets-loads"
    supports = PLANTED_TE

    def direct_allowed(self) -> bool:
        return super().direct_allowed() and next_insn(self) != "ld"

    def run_direct(self, budget: int, **kw) -> int:
        return super().run_direct(1, **kw)  # one at a time: the next one may be a load


class TrapsBookedDirect(TrapAndEmulate):
    """Books the privileged instructions it emulates as direct steps
    (they "ran on the host until they trapped"): the totals add up, the
    claimed efficiency is more than the host's record allows."""

    name = "planted-traps-booked-direct"
    supports = PLANTED_TE

    _booking = False

    def handle_host_trap(self, cause, info):
        self._booking = cause == st.Cause.PRIVILEGED
        try:
            super().handle_host_trap(cause, info)
        finally:
            self._booking = False

    def emulate_step(self) -> int:
        n = super().emulate_step()
        if self._booking:  # `run_direct` then counts the step among the host's, as direct
            self.counts.emulated -= n
            self.traps_this_run -= n
        return n


# -- bugs that live in situations the generator used to miss -------------------
# (issue 11, item 4: `popek.fuzz.situations`; each names the situation it needs)
class PopfUnmaskDropsTick(_EmulateHook, TrapAndEmulate):
    """unmask-pending-by-popf: when an emulated `popf` turns interrupts back
    on, the VMM re-arms the host timer for the guest's next tick and drops
    the one already pending (its author thought of `ei`, which the guest
    kernel uses, and of the host delivering ticks, not of a tick that fell
    due while interrupts were off)."""

    name = "planted-popf-unmask-drops-tick"
    supports = PLANTED_TE

    def after_emulate(self, name, before):
        S = self.vcpu.S
        if name == "popf" and not before[st.IE] and S[st.IE] and S[st.PEND]:
            S[st.PEND] = 0


class SliceEndTickLost(TrapAndEmulate):
    """tick-at-slice-end: bringing the guest back from the host copies its
    registers, flags, PC and timer, but not the host's pending tick; the
    host takes a tick at its next instruction, so one is pending only when
    the timer ran out on the last instruction of a `run(n)` slice (or
    together with another trap), and that one is lost."""

    name = "planted-slice-end-tick-lost"
    supports = PLANTED_TE

    def pull(self):
        H, V = self.host.S, self.vcpu.S
        for i in LIVE_SLOTS:
            V[i] = H[i]
        H[st.PEND] = 0


class RoomWrapsPastMemsize(TrapAndEmulate):
    """base-beyond-memsize: the real bound is clipped to the room left in
    the allocation, computed in the machine's 16-bit arithmetic
    (``(memsize - base) & 0xFFFF``), and the case of a base at or past
    memsize was dropped as "the subtraction gives 0 there": beyond memsize
    it wraps to a large room, and the guest reaches past its allocation."""

    name = "planted-room-wraps-past-memsize"
    supports = PLANTED_TE

    def real_r(self):
        S, lay = self.vcpu.S, self.layout
        b, l = S[st.BASE], S[st.BOUND]
        return lay.guest_offset + b, min(l, (lay.memsize - b) & self.host.arch.mask)


class AssumesMemsize1024(TrapAndEmulate):
    """storage-small/-large/-not-power-of-two: the real bound is clipped to
    a guest of 1024 words (the size every guest had when it was written),
    not to the guest's own memsize: a smaller guest reaches past its
    allocation, a larger one faults where it should not."""

    name = "planted-assumes-memsize-1024"
    supports = PLANTED_TE

    GUEST_WORDS = 0x400

    def real_r(self):
        S, lay = self.vcpu.S, self.layout
        b, l = S[st.BASE], S[st.BOUND]
        if b >= self.GUEST_WORDS:
            return lay.guest_offset, 0
        return lay.guest_offset + b, min(l, self.GUEST_WORDS - b)


class TopPageBackdoor(TrapAndEmulate):
    """top-page: a backdoor for guest tools (VMware's has an I/O port):
    an access to the top page of the address space, which no guest storage
    reaches, is a request to the VMM, answered by skipping the instruction
    instead of reflecting the fault; the check forgets to ask whether the
    guest meant it (it is taken for every guest, in every mode)."""

    name = "planted-top-page-backdoor"
    supports = PLANTED_TE

    def handle_host_trap(self, cause, info):
        top = self.host.arch.mask & ~(self.host.arch.page_size - 1)
        if cause == st.Cause.MEMORY and info >= top:
            v = self.vcpu
            v.S[st.PC] = (v.S[st.PC] + ILEN) & self.host.arch.mask
            self.counts.emulated += 1
            self.counts.extra["backdoor"] += 1
            return
        super().handle_host_trap(cause, info)


class NewPswReadAtLoad(TrapAndEmulate):
    """first-page: the VMM reads the guest's new PSW (words 8-11, in the
    first page) once, when the guest is loaded, and reflects every trap
    through that copy: a kernel that installs its handler later (or moves
    it) has its traps delivered to the old one."""

    name = "planted-new-psw-read-at-load"
    supports = PLANTED_TE

    def load(self, image, *, memsize):
        super().load(image, memsize=memsize)
        self._new_psw = [self.vcpu.M[a] for a in range(st.NEW_PSW, st.NEW_PSW + 4)]

    def reflect(self, cause, info):
        M = self.vcpu.M
        current = [M[a] for a in range(st.NEW_PSW, st.NEW_PSW + 4)]
        for k, w in enumerate(self._new_psw):
            M[st.NEW_PSW + k] = w
        super().reflect(cause, info)
        for k, w in enumerate(current):  # (the guest's words stay as it wrote them)
            M[st.NEW_PSW + k] = w


class ShadowChecksFrameOnly(BinaryTranslationVMM):
    """pte-present/write/user-changed: after a guest write to its page
    table, the shadow entries are checked against the entries their walk
    read, but only the frame numbers are compared: an entry whose
    permissions changed (made read-only, supervisor-only, or not present)
    keeps its old shadow entry."""

    name = "planted-shadow-checks-frame-only"
    supports = PLANTED

    def _drop_changed(self) -> None:
        W, perms = self.window, st.PTE_PRESENT | st.PTE_WRITE | st.PTE_USER
        for word, (reads, values, *_) in list(self._sources.items()):
            if reads and any((W[a] ^ v) & ~perms for a, v in zip(reads, values)):
                self._drop_entry(word)


# The kinds of finding a campaign can report (`popek.fuzz.execute`), and the
# requirement each breaks (`popek.fuzz.campaign_config.requirement_of`: a crash or a
# broken contract counts against fidelity).
KINDS = ("fidelity", "safety", "contract", "crash", "efficiency")


@dataclass(frozen=True)
class Bug:
    cls: type
    profile: str
    # The kinds of finding the bug really produces: a campaign's first finding
    # must be one of them.  Most bugs break one requirement; some break two
    # (an R not composed with the allocation lets guest code reach host word
    # 0, which is a safety finding, and the guest sees other storage: fidelity),
    # and whichever the first failing case shows first is reported.  A bug is
    # never listed under a kind it does not break.
    breaks: tuple[str, ...]

    def __post_init__(self) -> None:
        if isinstance(self.breaks, str):
            object.__setattr__(self, "breaks", (self.breaks,))
        unknown = set(self.breaks) - set(KINDS)
        if unknown or not self.breaks:
            raise ValueError(f"{self.cls.__name__}: breaks={self.breaks!r}, expected some of {KINDS}")

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self.breaks)


BUGS = [
    Bug(RtiForgetsFlags, "pg", "fidelity"),
    Bug(PushfShowsRealIE, "pg", "fidelity"),
    Bug(OutDropped, "pg", "fidelity"),
    Bug(RtiKeepsIE, "pg", "fidelity"),
    Bug(WrrKeepsBound, "pg", "fidelity"),
    Bug(SyscallSavesNextPC, "pg", "fidelity"),
    Bug(MemoryFaultAsPageFault, "pg", "fidelity"),
    Bug(FaultInfoLost, "pg", "fidelity"),
    Bug(EmulatesUserPrivileged, "pg", "fidelity"),
    Bug(TimerOffByOne, "pg", "fidelity"),
    Bug(MaskedTickLost, "pg", "fidelity"),
    # guest code on the host reaches host word 0 (safety), and the guest's own
    # addresses name other words than on its machine (fidelity)
    Bug(RNotComposed, "pg", ("safety", "fidelity")),
    Bug(BoundNotClipped, "pg", ("fidelity", "safety")),
    Bug(ReflectCountedDirect, "pg", "contract"),
    Bug(EmulatorCountsDirect, "pg", "contract"),
    Bug(HybridForgetsModeCheck, "hybrid", "fidelity"),
    Bug(StaleTranslation, "x86", "fidelity"),
    Bug(StaleShadowEntry, "pg", "fidelity"),
    Bug(PassTrustsTheGuest, "x86", "fidelity"),
    Bug(HypercallNotRearmed, "x86", "fidelity"),
    Bug(ScratchPastAllocation, "pg", "safety"),
    Bug(BoundReachesReserved, "pg", "safety"),
    Bug(TrapsBookedDirect, "pg", "contract"),
    Bug(PopfUnmaskDropsTick, "pg", "fidelity"),
    Bug(SliceEndTickLost, "pg", "fidelity"),
    # reaches past the allocation (safety), and past memsize where the guest's machine faults (fidelity)
    Bug(RoomWrapsPastMemsize, "pg", ("safety", "fidelity")),
    Bug(AssumesMemsize1024, "pg", ("fidelity", "safety")),
    Bug(TopPageBackdoor, "pg", "fidelity"),
    Bug(NewPswReadAtLoad, "pg", "fidelity"),
    Bug(ShadowChecksFrameOnly, "pg", "fidelity"),
]


# -- lifecycle bugs: found by `popek check`'s capability checks (issue 12) --------
# A fidelity campaign never suspends, restores or migrates a guest, so these
# are listed apart (`LIFECYCLE_BUGS`) and caught by the state machine that
# `popek check` runs for each declared capability (`popek.fuzz.stateful`).
class RestoreKeepsTimer(TrapAndEmulate):
    """restore() puts back registers, PC, mode, R and storage, but leaves the
    virtual timer running as it stood (its author thought of the timer as
    the host's, not the guest's)."""

    name = "planted-restore-keeps-timer"
    supports = PLANTED_TE

    def restore(self, snap) -> None:
        timer = self.vcpu.S[st.TIMER] if self.vcpu is not None else 0
        super().restore(snap)
        self.vcpu.S[st.TIMER] = timer


class FinalCopySkipsLastRound(TrapAndEmulate):
    """Stop-and-copy sends the pages written since the last round's log was
    read, and forgets the pages that last round found dirty (they were
    'already in the log')."""

    name = "planted-final-copy-skips-last-round"
    supports = PLANTED_TE

    def final_copy(self, last_round, since):
        return set(since)


class LogMissesEmulatedWrites(TrapAndEmulate):
    """The dirty log is the host's write faults only: storage the VMM writes
    while it emulates an instruction or delivers a trap (the old PSW) is
    never logged, so a page only the VMM wrote is not sent again."""

    name = "planted-log-misses-emulated-writes"
    supports = PLANTED_TE

    def collected_pages(self):
        return set(self.faulted)


class MigrateDoesNothing(TrapAndEmulate):
    """Declares migration; migrate_to() reports a stop-and-copy of nothing
    and moves nothing (the guest goes on running on the source)."""

    name = "planted-migrate-does-nothing"
    supports = PLANTED_TE

    def migrate_to(self, target, link):
        from popek.model.migration import MigrationReport

        return MigrationReport(0, [0], 0, self.guest_memsize(), self.host.arch.page_size, 0, 0, 0, "stop-and-copy")


LIFECYCLE_BUGS = [RestoreKeepsTimer, FinalCopySkipsLastRound, LogMissesEmulatedWrites, MigrateDoesNothing]
