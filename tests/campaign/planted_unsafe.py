"""A VMM with one safety bug on a rare path, for the verdict tests.

Trap-and-emulate, faithful on ``pg`` as declared, except that reflecting a
system call made in virtual user mode also bumps a counter it keeps one
word past the guest's allocation (an off-by-one: ``alloc.stop`` instead of
``alloc.stop - 1``).  The guest cannot see that word, so every fidelity
check passes; only the safety watch (the canary around the allocation) can
tell.
"""

from __future__ import annotations

from popek.model.vmms.trap_and_emulate import TrapAndEmulate
from popek.spec import state as st


class WritesPastAllocation(TrapAndEmulate):
    """Reflecting a user-mode `sys` writes one word past the allocation."""

    name = "planted-writes-past-allocation"

    def reflect(self, cause: int, info: int) -> None:
        v = self.vcpu
        if cause == st.Cause.SYSCALL and v.S[st.MODE] == st.USER:
            past = self.allocation().stop
            self.host.M[past] = (self.host.M[past] + 1) & v.profile.arch.mask
        super().reflect(cause, info)
