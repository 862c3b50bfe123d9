"""Paravirtualization: the guest is rewritten to call the VMM, then runs directly.

Xen's answer to x86: a guest kernel that does not execute its sensitive
instructions but asks the hypervisor for them (*hypercalls*).  Here the
rewriting is a pass over the guest's image (`rewrite`), so any guest
written for the bare machine can be paravirtualized, and fidelity is judged
between the *original* guest on bare hardware and the rewritten one under
`ParavirtVMM`.

**The pass.**  Every instruction of the image (the addresses the assembler
marked as code, ``Image.code``) that needs the VMM (`may_be_sensitive.needs_vmm`,
read off the spec's effects) is replaced, in place and at the same size, by
a hypercall: the word pair ``(HYPERCALL, k)``, where ``HYPERCALL`` is a
word no profile decodes (opcode 0xFE with register field 12) and ``k``
indexes the VMM's table of original instructions.  The index, not the
address, names the call, so a hypercall still works where the guest has
copied it.

**Refusals.**  The pass refuses, with `RewriteError`, a guest that could
ever notice the rewriting: one that, in some run from reset, may read a
rewritten word as data (code that reads its own instructions), run part of
a hypercall, or run, where the pass saw none, a sensitive instruction that
would not trap in user mode (code made at run time, or data jumped into).
Which runs are possible is bounded on the safe side by an abstract
interpretation of the spec's effects (`analysis.reach`); where it cannot bound them,
the pass refuses too.  Also refused: an image without a code map, and
overlapping or undecodable code.

**The VMM.**  The rewritten guest runs directly on the host in real user
mode in *both* virtual modes (Xen's deprivileged kernel), through shadow
page tables (`shadow`).  A hypercall traps ILLEGAL on the host; the VMM
checks the words at the trapping PC and serves the call by emulating the
original instruction on the virtual CPU (the spec's semantics: nothing is
written twice).  Privileged instructions the pass did not see still trap and
are emulated, as in trap-and-emulate.

Pages holding hypercalls are write-protected (in the shadow tables): a guest
that overwrites a hypercall, wholly or one word of it, gets what it wrote
(with the original in the word it did not write), rewritten again if that
needs the VMM.

**The guest's view.**  `guest_state` shows guest storage with every live
hypercall replaced by the original instruction's words: the guest's final
storage is compared as if it had never been rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

from popek.spec.encoding import decode
from popek.spec.image import Image
from popek.spec.profiles import Profile
from popek.spec.sem import ILEN
from popek.spec.state import HALTED, IE, PC, PEND, Cause
from popek.vmm import GuestRefused, GuestState, Support

from ..analysis import intervals as iv
from ..analysis.may_be_sensitive import needs_vmm
from ..analysis.reach import analyse, traps_in_user_mode
from .shadow import ShadowPagingVMM

HYPERCALL = (0xFE << 8) | (12 << 4)  # illegal in every profile with fewer than 13 registers


class RewriteError(GuestRefused):
    """A guest the paravirtualizing pass cannot rewrite safely."""


@dataclass(frozen=True)
class Rewritten:
    image: Image  # the guest with hypercalls in place of its sensitive instructions
    calls: tuple[tuple[int, int], ...]  # hypercall k -> the original instruction's two words
    sites: frozenset[int]  # addresses of the rewritten instructions


def rewrite(image: Image, profile: Profile, memsize: int) -> Rewritten:
    """Replace each sensitive instruction of ``image`` by a hypercall, or
    refuse (`RewriteError`) if the guest could ever notice."""
    sites = find_sites(image, profile)
    check_unnoticeable(image, profile, memsize, sites)
    return patch(image, sites)


def find_sites(image: Image, profile: Profile) -> dict[int, str]:
    """The code addresses whose instructions need the VMM, with their names."""
    if image.words and not image.code:
        raise RewriteError("the image has no code map: instructions cannot be told from data")
    seen: set[int] = set()
    sites = {}
    for addr in sorted(image.code):
        if addr in seen or addr + 1 in seen:
            raise RewriteError(f"instruction at {addr:#06x} overlaps another one")
        seen.update((addr, addr + 1))
        d = decode(profile, image.words.get(addr, 0), image.words.get(addr + 1, 0))
        if d is None:
            raise RewriteError(f"the code word at {addr:#06x} does not decode on {profile.name}")
        if needs_vmm(d.insn, profile.arch):
            sites[addr] = d.insn.name
    return sites


def patch(image: Image, sites: Mapping[int, str]) -> Rewritten:
    """``image`` with a hypercall at each site (no questions asked)."""
    words = dict(image.words)
    calls = []
    for k, addr in enumerate(sorted(sites)):
        calls.append((words.get(addr, 0), words.get(addr + 1, 0)))
        words[addr], words[addr + 1] = HYPERCALL, k
    out = Image(words, image.entry, dict(image.symbols), dict(image.lines), set(image.code))
    return Rewritten(out, tuple(calls), frozenset(sites))


# Verdicts of `check_unnoticeable` on guests seen before: a campaign draws the
# same guest again and again (about 3 in 10 of generated guests repeat one).
_VERDICTS: dict[tuple, tuple[Profile, str | None]] = {}
MAX_VERDICTS = 1024


def check_unnoticeable(image: Image, profile: Profile, memsize: int, sites: Mapping[int, str]) -> None:
    """Refuse a guest that, in some run from reset, could read a word the pass
    changes, run part of a hypercall, or run a sensitive instruction the pass
    has not rewritten (made or reached at run time) that would not trap.

    The analysis depends on the image's words and entry, the profile and
    ``memsize`` only (and the sites on those and the code map): its verdict
    on a guest seen before is kept and given again."""
    key = (id(profile), memsize, image.entry, tuple(sorted(image.words.items())), tuple(sorted(sites.items())))
    kept = _VERDICTS.get(key)
    if kept is not None and kept[0] is profile:
        why = kept[1]
    else:
        try:
            _check(image, profile, memsize, sites)
            why = None
        except RewriteError as e:
            why = str(e)
        if len(_VERDICTS) >= MAX_VERDICTS:  # long campaigns: forget, do not grow
            _VERDICTS.clear()
        _VERDICTS[key] = (profile, why)
    if why is not None:
        raise RewriteError(why)


def _check(image: Image, profile: Profile, memsize: int, sites: Mapping[int, str]) -> None:
    reach = analyse(image, profile, memsize)
    if reach.gave_up:
        raise RewriteError(f"the pass cannot bound what the guest may read or run: {reach.gave_up}")
    patched = {a + k: a for a in sites for k in range(ILEN)}
    spans = iv.make((a, a) for a in patched)
    for pc, reads in sorted(reach.reads.items()):
        if iv.overlaps(reads, spans):
            hit = min(a for a in patched if iv.contains(reads, a))
            site = patched[hit]
            raise RewriteError(
                f"the step at pc {pc:#06x} may read {hit:#06x}, a word of the `{sites[site]}` "
                f"at {site:#06x} that the pass rewrites: code that reads its own instructions "
                "cannot be paravirtualized"
            )
    for pc, (p0, p1) in sorted(reach.fetches.items()):
        for word, offset in ((p0, 0), (p1, 1)):
            if not iv.overlaps(word, spans):
                continue
            for a in patched:
                if iv.contains(word, a) and a - offset not in sites:
                    raise RewriteError(
                        f"the instruction at pc {pc:#06x} may overlap the `{sites[patched[a]]}` at "
                        f"{patched[a]:#06x} without starting where it starts"
                    )
    for (pc, insn), where in sorted(reach.runs.items(), key=lambda r: r[0][0]):
        if not needs_vmm(insn, profile.arch) or traps_in_user_mode(insn, profile):
            continue
        if any(a not in sites for a in iv.members(where)):
            raise RewriteError(
                f"the guest may run `{insn.name}` at pc {pc:#06x}, where the pass saw no such "
                "instruction (code made or reached at run time): it would run unrewritten"
            )


_WHY_NOT_EFFICIENT = (
    "sensitive instructions are rewritten to hypercalls; stores to a page holding one are emulated"
)


class ParavirtVMM(ShadowPagingVMM):
    name: ClassVar[str] = "paravirt"
    summary: ClassVar[str] = "guest rewritten so its sensitive instructions are hypercalls; runs directly"
    # Not efficient in P&G's sense: a store to a page holding a hypercall
    # faults (the page is write-protected) and is emulated, and a kernel
    # whose code shares a page with the words it stores to (the trap area,
    # its stack) does that most of the time: `st` ran directly in 13-31% of
    # its executions in generated guests (popek verify).
    supports: ClassVar[Mapping[str, Support]] = {
        p: Support(True, False, _WHY_NOT_EFFICIENT) for p in ("pg", "hybrid", "x86", "vtx")
    }

    def load(self, image: Image, *, memsize: int) -> None:
        """Rewrite the guest (raising `RewriteError` if unsafe), then load it."""
        self.rewritten = self.rewrite(image, memsize)
        self.calls = list(self.rewritten.calls)
        self.sites = {a: k for k, a in enumerate(sorted(self.rewritten.sites))}
        self._serving = False
        self._pending: set[int] = set()
        self._pending_words: set[int] = set()  # what a served step wrote there
        super().load(self.rewritten.image, memsize=memsize)

    def save_extra(self) -> object:
        """The hypercall table goes with the guest (a fresh instance restoring
        it has not rewritten this guest)."""
        return (tuple(self.calls), tuple(self.sites.items()), super().save_extra())

    def restore_extra(self, extra: object) -> None:
        calls, sites, rest = extra
        self.calls, self.sites = list(calls), dict(sites)
        self._serving, self._pending, self._pending_words = False, set(), set()
        super().restore_extra(rest)

    def rewrite(self, image: Image, memsize: int) -> Rewritten:
        return rewrite(image, self.host.profile, memsize)

    def direct_allowed(self) -> bool:
        return True

    def protected_by_design(self) -> set[int]:
        """Pages holding hypercalls: a guest write there must keep them right."""
        pb = self.host.arch.page_bits
        return {(a + d) >> pb for a in self.sites for d in range(ILEN)}

    def handle_host_trap(self, cause: int, info: int) -> None:
        if cause == Cause.ILLEGAL and self._hypercall_at(info) is not None:
            self._serve(info)
            return
        super().handle_host_trap(cause, info)

    def interpret(self, budget: int) -> int:
        """Step the virtual CPU (a due interrupt, or a vtx guest in its own
        guest mode), serving the hypercalls it reaches."""
        done = 0
        while done < budget and not self.runs_directly():
            S = self.vcpu.S
            if S[HALTED]:
                break
            if not (S[PEND] and S[IE]) and self._hypercall_at(S[PC]) is not None:
                n = self._serve(S[PC])
            else:
                n = self.emulate_step()
            if n == 0:
                break
            done += n
        return done

    def _hypercall_at(self, pc: int) -> int | None:
        """The hypercall number at guest-virtual ``pc``, if a hypercall is there."""
        p0, p1 = self.guest_translate(pc), self.guest_translate(pc + 1)
        if p0 is None or p1 is None:
            return None
        w0, k = self.window[p0], self.window[p1]
        return k if w0 == HYPERCALL and k < len(self.calls) else None

    def _serve(self, pc: int) -> int:
        """Run the original instruction of the hypercall at ``pc`` on the
        virtual CPU: its words are put back for that one step."""
        k = self._hypercall_at(pc)
        p0, p1 = self.guest_translate(pc), self.guest_translate(pc + 1)
        w0, w1 = self.calls[k]
        M = self.window
        M[p0], M[p1] = w0, w1
        self.window.forget()  # the VMM's own writes
        self.vcpu.flush()
        self.mark_vcpu_current()
        self.counts.extra["hypercalls"] += 1
        self._serving = True
        try:
            n = self.emulate_step()
        finally:
            self._serving = False
        # by the guest's step: noted as it reached protected pages, since the
        # window forgets its writes once they have been acted on (after_vcpu)
        written, self._pending_words = self._pending_words | self.window.written, set()
        if p0 not in written and p1 not in written:  # the step did not write its own words
            self.rearm(p0, p1, k)
        self.window.forget()
        pending, self._pending = self._pending, set()
        self._check_sites(pending, written)
        self.window.forget()
        self.vcpu.flush()
        return n

    def rearm(self, p0: int, p1: int, k: int) -> None:
        """Put hypercall ``k`` back after its one step as the original."""
        self.window[p0], self.window[p1] = HYPERCALL, k

    def on_guest_write(self, frame: int) -> None:
        super().on_guest_write(frame)
        if self._serving:
            self._pending.add(frame)
            self._pending_words |= self.window.written
        else:  # every frame the step wrote at once (after_vcpu calls this per frame;
            # the words are forgotten below, and a site may span two frames)
            written = set(self.window.written)
            self._check_sites({w >> self.host.arch.page_bits for w in written}, written)
            self.window.forget()

    def _check_sites(self, frames: set[int], written: set[int]) -> None:
        """The guest wrote pages ``frames`` (the words in ``written``): a
        hypercall it overwrote, wholly or in part, becomes what the guest
        wrote (with the original word where it wrote only one), rewritten
        again if that needs the VMM.  Which words were written is what
        counts, not their values: a guest may store the very value a
        hypercall word holds."""
        pb, M = self.host.arch.page_bits, self.window
        for a, k in list(self.sites.items()):
            if a >> pb not in frames and (a + 1) >> pb not in frames:
                continue
            if a not in written and a + 1 not in written:
                continue
            now = (M[a], M[a + 1])
            del self.sites[a]
            orig = self.calls[k]
            w0 = now[0] if a in written else orig[0]
            w1 = now[1] if a + 1 in written else orig[1]
            d = decode(self.host.profile, w0, w1)
            if d is not None and needs_vmm(d.insn, self.host.arch):
                self.sites[a] = len(self.calls)
                self.calls.append((w0, w1))
                M[a], M[a + 1] = HYPERCALL, self.sites[a]
                self.counts.extra["rewritten_at_run_time"] += 1
            else:
                M[a], M[a + 1] = w0, w1

    def guest_state(self) -> GuestState:
        state = super().guest_state()
        memory = list(state.memory)
        for a, k in self.sites.items():
            if (memory[a], memory[a + 1]) == (HYPERCALL, k):
                memory[a], memory[a + 1] = self.calls[k]
        return GuestState(state.regs, tuple(memory), state.out)
