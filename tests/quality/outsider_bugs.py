"""Buggy plug-ins written the way an outsider writes one: against the public
contract (`popek.vmm`, `popek.model.vmms.base.SoftwareVMM` and its hooks,
docs/writing-a-vmm.md), each with one bug popek's default `popek check`
once missed (an outside audit found them; see test_outsiders.py).

Unlike `planted_bugs`, these are not forks of popek's own designs: each is
a trap-and-emulate policy (or shadow paging) built from the documented
hooks, as a plug-in author would write it, and each is checked through the
command line, `popek check outsider_bugs:Class`, at the default budget.
Each declares only ``pg``, so that one check is one campaign.
"""

from __future__ import annotations

from typing import ClassVar, Mapping

from popek.model.vmms.base import SoftwareVMM
from popek.model.vmms.shadow import ShadowPagingVMM
from popek.spec import state as st
from popek.spec.encoding import decode
from popek.spec.state import Cause
from popek.vmm import GuestState, Support

BOTH = frozenset({"user", "supervisor"})
# A trap-and-emulate policy: faithful on pg, efficient in both virtual modes with paging off.
TE_PG = {"pg": Support(True, True, "outsider plug-in: every sensitive instruction is privileged", BOTH, False)}


class OutsiderTE(SoftwareVMM):
    """Trap-and-emulate from the documented hooks: the guest runs directly
    while its paging is off; the base class emulates privileged
    instructions in virtual supervisor mode and reflects everything else."""

    name: ClassVar[str] = "outsider-te"
    summary: ClassVar[str] = "an outsider's trap-and-emulate (correct: the others fork it)"
    supports: ClassVar[Mapping[str, Support]] = TE_PG

    def direct_allowed(self) -> bool:
        return self.vcpu.S[st.PTBR] == 0

    def next_words(self) -> tuple[int, int] | None:
        """The two words at the guest's PC (paging off: guest-physical
        base + pc), or None when they are not in storage."""
        v = self.vcpu
        a = (v.S[st.BASE] + v.S[st.PC]) & v.arch.mask
        if v.S[st.PTBR] or a + 1 >= v.memsize:
            return None
        return v.M[a], v.M[a + 1]

    def next_insn(self) -> str | None:
        words = self.next_words()
        d = decode(self.vcpu.profile, *words) if words else None
        return d.insn.name if d else None


class OutPortAllOnesDropped(OutsiderTE):
    """`out` of the word 0xFFFF is dropped: the VMM's port layer uses
    0xFFFF as its "no output" sentinel."""

    name = "outsider-out-ffff-dropped"

    def emulate_step(self) -> int:
        out = self.vcpu.out
        before = len(out)
        n = super().emulate_step()
        if len(out) > before and out[-1] == 0xFFFF:
            out.pop()
        return n


class PopfLosesOverflow(OutsiderTE):
    """Emulated `popf` rebuilds the flags from N, Z and C only: the V
    flag popped is lost."""

    name = "outsider-popf-loses-v"

    def emulate_step(self) -> int:
        popf = self.next_insn() == "popf"
        n = super().emulate_step()
        if popf:
            self.vcpu.S[st.FLAGS] &= ~st.FLAG_V
        return n


class UndefinedAsPrivileged(OutsiderTE):
    """In the guest's kernel, an opcode past the profile's table is
    reflected as a privileged-instruction trap, not as ILLEGAL: the VMM
    takes opcodes beyond the table for privileged extensions of a later
    machine, which its guest kernel may not use."""

    name = "outsider-undefined-as-privileged"

    def handle_host_trap(self, cause: int, info: int) -> None:
        words = self.next_words()
        past = words is not None and (words[0] >> 8) > max(self.vcpu.profile.by_opcode)
        if cause == Cause.ILLEGAL and past and self.vcpu.S[st.MODE] == st.SUPERVISOR:
            self.reflect(Cause.PRIVILEGED, info)
            return
        super().handle_host_trap(cause, info)


class StateRoundedToPages(OutsiderTE):
    """`guest_state()` copies guest storage a whole page at a time: the
    words of a last, partial page read as 0."""

    name = "outsider-state-rounded-to-pages"

    def guest_state(self) -> GuestState:
        s = super().guest_state()
        page = self.host.arch.page_size
        whole = len(s.memory) // page * page
        return GuestState(s.regs, s.memory[:whole] + (0,) * (len(s.memory) - whole), s.out)


class InterpretsUserMode(OutsiderTE):
    """Runs only virtual supervisor mode directly and interprets the
    user program, while declaring both modes efficient."""

    name = "outsider-interprets-user-mode"

    def direct_allowed(self) -> bool:
        return super().direct_allowed() and self.vcpu.S[st.MODE] == st.SUPERVISOR


class SlowsDownAfterAWhile(OutsiderTE):
    """Interprets everything once the guest has run 2,000 steps (a
    "fallback to the interpreter" switch that a counter trips)."""

    name = "outsider-slows-down-after-2000-steps"
    AFTER: ClassVar[int] = 2000

    def direct_allowed(self) -> bool:
        c = self.counts
        return super().direct_allowed() and c.direct + c.emulated < self.AFTER


class ShadowKeptWhenPagingOff(ShadowPagingVMM):
    """Shadow paging that rebuilds its shadow tables only when the guest
    loads a *new, non-zero* page-table base: turning paging off (base 0)
    keeps the entries built under the guest's table."""

    name = "outsider-shadow-kept-when-paging-off"
    summary = "shadow paging; the guest always runs directly"
    capabilities = SoftwareVMM.capabilities  # no live migration
    supports: ClassVar[Mapping[str, Support]] = {
        "pg": Support(True, True, "outsider plug-in: shadow paging, every sensitive instruction privileged", BOTH)
    }

    def direct_allowed(self) -> bool:
        return True

    def push(self) -> None:
        if self.vcpu.S[st.PTBR] == 0:
            self._shadow_ptbr = 0  # the bug: base 0 is not a new table
        super().push()


class MisspeltProfile(OutsiderTE):
    """Correct, but declares a profile nobody registers ("x68" for "x86"):
    `popek check` must say so rather than check the rest in silence."""

    name = "outsider-misspelt-profile"
    supports: ClassVar[Mapping[str, Support]] = {
        **TE_PG, "x68": Support(False, True, "outsider plug-in: a typo", BOTH, False)
    }
