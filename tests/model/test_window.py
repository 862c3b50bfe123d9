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


# A handler whose first block stores to the page it runs from (its trap
# counter at word 12 shares page 0 with the code): the store must end the
# block even though the write, coming through the window, has already
# dropped the machine's decodes.  Found by `popek fuzz --vmm emulator`.
SELF_WRITING_HANDLER = """
        .org 8
        .word 0x20, 0xc0, 0, 0x400
        .org 0x10
start:  li r0, 15
        shl r0, r0
        addi r0, 0x400
        li sp, 0x100
        li r6, 0
        ld r5, 0x2f0(r6)
        st r5, 0(r6)
        ld r5, 0x2f1(r6)
        st r5, 1(r6)
        ld r5, 0x2f2(r6)
        st r5, 2(r6)
        ld r5, 0x2f3(r6)
        st r5, 3(r6)
        rti
        .org 0xc0
        addi r0, 0x122
        st r0, 0x1fe0(r0)
        li r6, 0
        ld r5, 12(r6)
        addi r5, 1
        st r5, 12(r6)
        cmpi r5, 4
        jz 222
        ld r5, 4(r6)
        cmpi r5, 5
        jz 220
        ld r5, 1(r6)
        addi r5, 2
        st r5, 1(r6)
        rti
        halt
        .org 0x100
        halt
        .org 0x2f0
        .word 0, 0, 0x100, 0x100
"""


def test_windowed_machine_runs_like_a_plain_one() -> None:
    image = assemble(SELF_WRITING_HANDLER, P)
    plain = Machine(P, 1024)
    plain.load(image)
    host = Machine(P, 1 << 16)
    windowed = Machine(P, 1024, storage=Window(host, OFFSET, 1024))
    windowed.load(image)
    assert plain.run(400) == windowed.run(400)
    assert plain.S == windowed.S
    assert plain.M[:1024] == windowed.M[:1024]
