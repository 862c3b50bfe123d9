"""Trap-and-emulate: the classic VMM of Popek and Goldberg's Theorem 1.

The guest runs directly on the host in real *user* mode, whatever its
virtual mode, with the real R composed from its allocation and its virtual
R.  Every privileged instruction therefore traps to the VMM, which emulates
it (one step of the virtual CPU) when the guest is in virtual supervisor
mode, and reflects it to the guest's own handler otherwise; the guest's
system calls, memory faults and illegal instructions are reflected; the
host timer mirrors the virtual one, so the virtual interrupt arrives at the
same guest instruction as on bare hardware.  See `base` for the mechanics.

Theorem 1's condition is what makes this work: it is faithful exactly when
every sensitive instruction is privileged.  Where the profile breaks the
condition, the design breaks too, by running the guest directly and with no
special case here:

- ``hybrid``: ``jru`` (jump and enter user mode) is unprivileged, so a
  guest kernel's ``jru`` runs on the host as a plain jump (the host is
  already in user mode); the guest's virtual mode stays supervisor, and the
  "user" program that follows can run the kernel's privileged instructions.
- ``x86``/``vtx``: ``popf`` in real user mode silently keeps the interrupt
  flag, ``pushf`` shows the real one (always on), ``rdmode`` reads user
  mode and ``rdbase``/``rdbound`` read the composed R.

Paging: while the guest's page-table base is non-zero the guest is
interpreted (every step counted as emulated).  Shadow paging, which lets a
paged guest run directly, belongs to another design.
"""

from __future__ import annotations

from typing import ClassVar, Mapping

from popek.spec.state import PTBR
from popek.vmm import VIRTUAL_MODES as _BOTH
from popek.vmm import Support

from .dirty_log import WriteProtectLog
from .multi_guest import MultiGuest


class TrapAndEmulate(MultiGuest, WriteProtectLog):  # several guests; its dirty log: pre-copy migration
    name: ClassVar[str] = "trap-and-emulate"
    summary: ClassVar[str] = "guest runs in real user mode; privileged instructions trap and are emulated"
    # a paged guest is interpreted (see the module docstring): efficient with paging off
    supports: ClassVar[Mapping[str, Support]] = {
        "pg": Support(True, True, "every sensitive instruction is privileged (Theorem 1)", _BOTH, False),
        "hybrid": Support(False, True, "jru is sensitive but unprivileged: runs as a plain jump", _BOTH, False),
        "x86": Support(False, True, "popf/pushf/rdmode/rdbase/rdbound are sensitive but run directly", _BOTH, False),
        "vtx": Support(False, True, "as x86: the VT-x extension is not used by this design", _BOTH, False),
    }
    # several guests, each in its own allocation (model/vmms/multi_guest.py)
    capabilities: ClassVar[frozenset[str]] = WriteProtectLog.capabilities | {"multi-guest"}

    def direct_allowed(self) -> bool:
        return self.vcpu.S[PTBR] == 0  # a paged guest is interpreted (no shadow tables yet)
