"""One emulated step may write two protected pages (on vtx, ``vmrun`` saves
15 consecutive words and a guest-mode trap 17, with 64-word pages).  The
shadow layer reports each page to paravirt in turn; paravirt forgot the
step's words after the first, so a hypercall the same step wrote on the
second page stayed a hypercall and the guest saw its index in place of the
original instruction's word."""

from __future__ import annotations

from popek.model.vmms.paravirt import HYPERCALL
from popek.spec.asm import assemble
from popek.spec.profiles import get

from advanced_guests import vmm_for

GUEST = """
start:  halt
        .org 60
a:      rdmode r1
        .org 66
b:      rdmode r2
"""


def test_a_step_that_writes_two_protected_pages_is_acted_on_in_both() -> None:
    img = assemble(GUEST, get("x86"))
    a, b = img.symbols["a"], img.symbols["b"]
    pb = get("x86").arch.page_bits
    assert a >> pb != b >> pb
    vmm = vmm_for("paravirt", img, "x86")
    assert {a, b} <= set(vmm.sites) and vmm.window[b] == HYPERCALL
    # one step's writes, as after_vcpu finds them: both words of `a`, the first of `b`
    vmm.window[a], vmm.window[a + 1], vmm.window[b] = 0x1111, 0x2222, 0x3333
    vmm.after_vcpu()
    assert a not in vmm.sites and b not in vmm.sites
    memory = vmm.guest_state().memory
    assert memory[a : a + 2] == (0x1111, 0x2222)
    assert memory[b : b + 2] == (0x3333, img.words.get(b + 1, 0))  # not the hypercall's index
