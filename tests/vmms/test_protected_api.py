"""SoftwareVMM's protected API, and the deprecation path of the old
private names a plug-in may have used (issue 17, item 5)."""

from __future__ import annotations

import warnings

import pytest

from popek.model.machine import Machine
from popek.spec.profiles import get
from popek.model.vmms.emulator import Emulator
from popek.model.vmms.trap_and_emulate import TrapAndEmulate


def test_the_old_private_names_still_work_and_warn() -> None:
    p = get("pg")
    vmm = TrapAndEmulate(Machine(p, 1 << p.arch.word))
    with pytest.warns(DeprecationWarning):
        assert vmm._counts is vmm.counts
    with pytest.warns(DeprecationWarning):
        vmm._vcpu_stale = True
    assert vmm.vcpu_stale
    vmm.mark_vcpu_current()
    with pytest.warns(DeprecationWarning):
        assert vmm._vcpu_stale is False


def test_an_old_hook_override_is_called_and_warned_about() -> None:
    with pytest.warns(DeprecationWarning, match="_restore_extra"):

        class Old(Emulator):
            def _restore_extra(self, extra):
                self.restored = extra

    assert Old.restore_extra is Old.__dict__["_restore_extra"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        class New(Emulator):  # the new names: no warning
            def restore_extra(self, extra):
                pass

