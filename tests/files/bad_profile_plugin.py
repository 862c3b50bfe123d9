"""A plug-in whose derived profile lacks rti: its import must fail with a
one-line error naming what is missing (tests/files/test_profiles_known.py)."""

from __future__ import annotations

from popek.model.vmms.trap_and_emulate import TrapAndEmulate
from popek.spec import profiles
from popek.vmm import Support

profiles.register(profiles.PG.derive("pg-no-rti", "pg without rti", remove=["rti"]))


class NoRtiVMM(TrapAndEmulate):
    name = "no-rti"
    supports = {"pg-no-rti": Support(True, True, "lacks rti", direct_modes={"user", "supervisor"})}
