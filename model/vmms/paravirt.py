"""Paravirtualization: the guest is rewritten to call the VMM, then runs directly.

Xen's answer to x86: a guest kernel that does not execute its sensitive
instructions but asks the hypervisor for them (*hypercalls*).  Here the
rewriting is a pass over the guest's image (`rewrite`), so any guest
written for the bare machine can be paravirtualized, and fidelity is judged
between the *original* guest on bare hardware and the rewritten one under
`ParavirtVMM`.

**The pass.**  Every instruction of the image (the addresses the assembler
marked as code, ``Image.code``) that needs the VMM (`sensitive.needs_vmm`,
read off the spec's effects) is replaced, in place and at the same size, by
a hypercall: the word pair ``(HYPERCALL, k)``, where ``HYPERCALL`` is a
word no profile decodes (opcode 0xFE with register field 12) and ``k``
indexes the VMM's table of original instructions.  The index, not the
address, names the call, so a hypercall still works where the guest has
copied it.

**Refusals.**  The pass refuses, with `RewriteError`, a guest it cannot
rewrite without changing what the guest sees:

* an image without a code map (data and code cannot be told apart);
* an instruction overlapping another, or a code word that does not decode;
* an instruction whose immediate names a rewritten word and that reads or
  writes storage (code that reads its own instructions would read the
  hypercall; code that writes them is fine, but cannot be told apart from
  code that reads them);
* a direct jump into data (code the pass has not seen).

**The VMM.**  The rewritten guest runs directly on the host in real user
mode in *both* virtual modes (Xen's deprivileged kernel), through shadow
page tables (`shadow`).  A hypercall traps ILLEGAL on the host; the VMM
checks the words at the trapping PC and serves the call by emulating the
original instruction on the virtual CPU (the spec's semantics: nothing is
written twice).  Privileged instructions the pass did not see still trap and
are emulated, as in trap-and-emulate.

**The guest's view.**  `guest_state` shows guest storage with every
hypercall pair that is still in storage where the pass (or the guest, by
copying) put one, on an instruction boundary the pass knew of, replaced by
the original instruction's words: the guest never sees its rewritten code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

from popek.spec.encoding import decode
from popek.spec.image import Image
from popek.spec.profiles import Profile
from popek.spec.sem import ILEN
from popek.spec.state import Cause
from popek.vmm import GuestState, Support

from .sensitive import footprint, needs_vmm
from .shadow import ShadowPagingVMM

HYPERCALL = (0xFE << 8) | (12 << 4)  # illegal in every profile with fewer than 13 registers


class RewriteError(ValueError):
    """A guest the paravirtualizing pass cannot rewrite safely."""


@dataclass(frozen=True)
class Rewritten:
    image: Image  # the guest with hypercalls in place of its sensitive instructions
    calls: tuple[tuple[int, int], ...]  # hypercall k -> the original instruction's two words
    sites: frozenset[int]  # addresses of the rewritten instructions


def rewrite(image: Image, profile: Profile) -> Rewritten:
    """Replace each sensitive instruction of ``image`` by a hypercall."""
    if image.words and not image.code:
        raise RewriteError("the image has no code map: instructions cannot be told from data")
    words = dict(image.words)
    code = sorted(image.code)
    arch = profile.arch
    seen: set[int] = set()
    decoded = {}
    for addr in code:
        if addr in seen or addr + 1 in seen:
            raise RewriteError(f"instruction at {addr:#06x} overlaps another one")
        seen.update((addr, addr + 1))
        d = decode(profile, words.get(addr, 0), words.get(addr + 1, 0))
        if d is None:
            raise RewriteError(f"the code word at {addr:#06x} does not decode on {profile.name}")
        decoded[addr] = d
    sites = frozenset(a for a, d in decoded.items() if needs_vmm(d.insn, arch))
    patched = {a + k for a in sites for k in range(ILEN)}
    for addr, d in decoded.items():
        fp = footprint(d.insn, arch)
        if fp.memory and "imm" in d.insn.fields and d.imm in patched:
            raise RewriteError(
                f"{d.insn.name} at {addr:#06x} reads or writes {d.imm:#06x}, a word of a "
                "rewritten instruction: code that reads its own instructions cannot be "
                "paravirtualized"
            )
        if fp.jump_to_imm and d.imm in words and d.imm not in image.code:
            raise RewriteError(f"{d.insn.name} at {addr:#06x} jumps to {d.imm:#06x}, which is data")
    calls = []
    for k, addr in enumerate(sorted(sites)):
        calls.append((words.get(addr, 0), words.get(addr + 1, 0)))
        words[addr], words[addr + 1] = HYPERCALL, k
    out = Image(words, image.entry, dict(image.symbols), dict(image.lines), set(image.code))
    return Rewritten(out, tuple(calls), sites)


_WHY = "sensitive instructions are rewritten to hypercalls; the rest runs directly"


class ParavirtVMM(ShadowPagingVMM):
    name: ClassVar[str] = "paravirt"
    summary: ClassVar[str] = "guest rewritten so its sensitive instructions are hypercalls; runs directly"
    supports: ClassVar[Mapping[str, Support]] = {
        p: Support(True, True, _WHY) for p in ("pg", "hybrid", "x86", "vtx")
    }

    def load(self, image: Image, *, memsize: int) -> None:
        """Rewrite the guest (raising `RewriteError` if unsafe), then load it."""
        self.rewritten = rewrite(image, self.host.profile)
        super().load(self.rewritten.image, memsize=memsize)

    def direct_allowed(self) -> bool:
        return True

    def handle_host_trap(self, cause: int, info: int) -> None:
        if cause == Cause.ILLEGAL and self._hypercall_at(info) is not None:
            self._serve(info)
            return
        super().handle_host_trap(cause, info)

    def _hypercall_at(self, pc: int) -> int | None:
        """The hypercall number at guest-virtual ``pc``, if a hypercall is there."""
        p0, p1 = self.guest_translate(pc), self.guest_translate(pc + 1)
        if p0 is None or p1 is None:
            return None
        w0, k = self.window[p0], self.window[p1]
        return k if w0 == HYPERCALL and k < len(self.rewritten.calls) else None

    def _serve(self, pc: int) -> None:
        """Run the original instruction of the hypercall at ``pc`` on the
        virtual CPU: put its words back for one step, then the hypercall."""
        k = self._hypercall_at(pc)
        p0, p1 = self.guest_translate(pc), self.guest_translate(pc + 1)
        w0, w1 = self.rewritten.calls[k]
        M = self.window
        M[p0], M[p1] = w0, w1
        self.vcpu.flush()
        self._vcpu_stale = False
        self._counts.extra["hypercalls"] += 1
        self.emulate_step()
        if (M[p0], M[p1]) == (w0, w1):  # the step did not overwrite its own words
            M[p0], M[p1] = HYPERCALL, k
        self.window.dirty.clear()
        self.vcpu.flush()

    def guest_state(self) -> GuestState:
        state = super().guest_state()
        memory = list(state.memory)
        calls = self.rewritten.calls
        for addr in self.rewritten.image.code:
            if addr + 1 < len(memory) and memory[addr] == HYPERCALL and memory[addr + 1] < len(calls):
                memory[addr], memory[addr + 1] = calls[memory[addr + 1]]
        return GuestState(state.regs, tuple(memory), state.out)
