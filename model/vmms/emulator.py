"""The full emulator: every guest instruction interpreted in software.

The lecture's "machine emulation" (Bochs, QEMU without acceleration): the
guest never runs on the host processor.  The virtual CPU applies the spec's
semantics to the guest's state, with the guest's storage in its host
allocation, so the design is faithful on every profile by construction
(whatever the profile's instructions do, the virtual CPU does), and never
efficient: no guest instruction runs directly.
"""

from __future__ import annotations

from typing import ClassVar, Mapping

from popek.vmm import Support

from .dirty_log import WriteProtectLog

_WHY = "every instruction is interpreted with the spec's own semantics; none runs directly"


class Emulator(WriteProtectLog):  # its dirty log: pre-copy migration
    name: ClassVar[str] = "emulator"
    summary: ClassVar[str] = "full emulator: interprets every guest instruction"
    supports: ClassVar[Mapping[str, Support]] = {
        p: Support(faithful=True, efficient=False, reason=_WHY) for p in ("pg", "hybrid", "x86", "vtx")
    }

    def interpret(self, budget: int) -> int:
        """Run the virtual CPU freely (its compiled blocks included): with no
        direct execution to return to, there is nothing to stop for."""
        n = self.vcpu.run(budget).steps
        self.counts.emulated += n
        self.vcpu_ran_freely()
        return n
