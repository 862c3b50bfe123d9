"""Deliberately broken multi-guest VMMs: each one plausible slip in placing,
switching or preempting several guests.  ``tests/multi_guest`` shows each
is caught by `popek.fuzz.multi_guest`, as the kind of finding it is."""

from __future__ import annotations

from popek.model.vmms.trap_and_emulate import TrapAndEmulate
from popek.spec.state import IE
from popek.vmm import GuestRun

from planted_bugs import PLANTED_TE


class OverlappingAllocations(TrapAndEmulate):
    """Places each further guest one word early: its word 0 is the previous
    guest's last word (an off-by-one in the allocator)."""

    name = "planted-overlapping-allocations"
    supports = PLANTED_TE

    def free_offset(self, memsize: int) -> int:
        at = super().free_offset(memsize)
        return at - 1 if self.slots else at


class SwitchKeepsVCPU(TrapAndEmulate):
    """Switching guests changes which allocation is reported but keeps the
    virtual CPU of the guest that ran before."""

    name = "planted-switch-keeps-vcpu"
    supports = PLANTED_TE

    def select_guest(self, gid: int) -> None:
        vcpu = self.vcpu
        super().select_guest(gid)
        if vcpu is not None:
            self.vcpu = vcpu


class MaskedGuestNotPreempted(TrapAndEmulate):
    """Preempts a guest only through its own timer interrupt: a guest with
    interrupts masked keeps the CPU past its slice (the run is reported as
    the slice it was given, the rest goes unaccounted)."""

    name = "planted-masked-guest-not-preempted"
    supports = PLANTED_TE

    def run(self, steps: int) -> GuestRun:
        r = super().run(steps)
        if steps and not self.vcpu.S[IE] and not r.halted:
            super().run(10 * steps)  # keeps going; not reported
        return GuestRun(r.steps, r.halted)
