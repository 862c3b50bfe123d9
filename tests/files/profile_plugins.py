"""Plug-ins that register profiles when imported (tests/files/test_profiles_known.py).

``good`` registers ``pg-files-plugin``, a derived profile with everything popek
needs, and a VMM for it; ``bad`` (imported by name) registers one without
``rti``, which `popek.spec.profiles.register` refuses.
"""

from __future__ import annotations

from popek.model.vmms.trap_and_emulate import TrapAndEmulate
from popek.spec import profiles
from popek.vmm import Support

NAME = "pg-files-plugin"
if NAME not in {p.name for p in profiles.all_profiles()}:
    profiles.register(profiles.PG.derive(NAME, "pg registered by a plug-in"))


class PluginVMM(TrapAndEmulate):
    name = "plugin-vmm"
    supports = {NAME: Support(True, True, "pg under another name", direct_modes={"user", "supervisor"})}
