"""The hybrid VMM of Popek and Goldberg's Theorem 3.

Every instruction the guest runs in *virtual supervisor* mode is
interpreted on the virtual CPU; code in *virtual user* mode runs directly
on the host (in real user mode, R composed, as in trap-and-emulate).  So an
instruction needs to trap only when it is sensitive *in user mode*: the
PDP-10's ``JRST 1`` (our ``jru``), sensitive only in supervisor mode, is
interpreted there and harmless in user mode.  The design is faithful when
the user-sensitive instructions are privileged (``pg``, ``hybrid``); on
``x86`` a user program's ``pushf``, ``popf``, ``rdmode``, ``rdbase`` and
``rdbound`` still run directly and see the real resources.

As in trap-and-emulate, a guest with paging on is interpreted throughout.
"""

from __future__ import annotations

from typing import ClassVar, Mapping

from popek.spec.state import MODE, PTBR, USER
from popek.vmm import Support

_USER = frozenset({"user"})

from .dirty_log import WriteProtectLog


class HybridVMM(WriteProtectLog):  # its dirty log: pre-copy migration
    name: ClassVar[str] = "hybrid"
    summary: ClassVar[str] = "interprets virtual-supervisor code, runs virtual-user code directly"
    # Theorem 3's VMM: efficient for the guest's user code (paging off), its kernel interpreted
    supports: ClassVar[Mapping[str, Support]] = {
        "pg": Support(True, True, "user-sensitive instructions are privileged; kernel code is interpreted",
                      _USER, False),
        "hybrid": Support(True, True, "jru is sensitive only in supervisor mode, where it is interpreted",
                          _USER, False),
        "x86": Support(False, True, "user-mode pushf/popf/rdmode/rdbase/rdbound run directly", _USER, False),
        "vtx": Support(False, True, "as x86: the VT-x extension is not used by this design", _USER, False),
    }  # fmt: skip

    def direct_allowed(self) -> bool:
        S = self.vcpu.S
        return S[MODE] == USER and S[PTBR] == 0
