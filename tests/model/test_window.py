"""A machine over a window onto host storage never runs stale code, however
the host words under it are written: through the window, by `host.write`,
or by code running on the host itself."""

from __future__ import annotations

import pytest

from popek.model.machine import Machine
from popek.model.window import Window
from popek.spec import profiles
from popek.spec.asm import assemble

P = profiles.PG
OFFSET = 0x1000
LOOP = "start: li r1, 1\n add r2, r1\n jmp start\n"
PATCH_AT = 17  # the immediate of `li r1, 1`


def _warm_vcpu() -> tuple[Machine, Machine]:
    host = Machine(P, 1 << 16)
    # the host's own program (used by the "host code" case) patches the guest
    host.load(assemble(f"start: li r3, 5\n st r3, {OFFSET + PATCH_AT}(r0)\n halt\n", P))
    vcpu = Machine(P, 1024, storage=Window(host, OFFSET, 1024))
    vcpu.load(assemble(LOOP, P))
    vcpu.run(30)  # hot: decoded and compiled
    return host, vcpu


@pytest.mark.parametrize("how", ["window", "host.write", "host code"])
def test_rewritten_code_is_seen(how: str) -> None:
    host, vcpu = _warm_vcpu()
    if how == "window":
        vcpu.M[PATCH_AT] = 5
    elif how == "host.write":
        host.write(OFFSET + PATCH_AT, 5)
    else:  # a store executed by the host machine
        assert host.run(10).halted
    vcpu.S[2] = 0
    vcpu.S[8] = 16  # back to `start`
    vcpu.run(3)  # li, add, jmp
    assert vcpu.S[1] == 5
    assert vcpu.S[2] == 5
