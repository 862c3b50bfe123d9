"""Binary translation: guest kernel code is translated before it runs.

VMware's answer to x86 (Adams & Agesen 2006, the lecture's "binary
translation"): code the guest runs in *virtual supervisor* mode never runs
as it is.  The VMM translates it block by block into code for the host:

* a *block* is a straight run of guest instructions from one guest PC, up to
  a control transfer, a page end, or an instruction that needs the VMM;
* every innocuous instruction is translated to itself (identity
  translation, as in VMware's translator): the cache chooses the block
  the host machine compiles (its ``blocks`` chooser, ``Codebook.block``)
  and runs through its own loop, on the host processor, in real user
  mode, over the guest's state, storage and shadow page tables (`shadow`);
* an instruction that needs the VMM (`may_be_sensitive.needs_vmm`, read off the
  spec's effects, so x86's silent ``popf`` and the reads of mode and R are
  caught along with the privileged ones) is not in any block: reaching it
  is a *call into the VMM*, which emulates it on the virtual CPU.

Translations live in a *translation cache* keyed by guest PC and the
guest's translation context (R and page-table base).  Guest pages that
translated code came from are *write-protected* in the shadow tables; a
write to one (self-modifying code, or code and data sharing a page) traps,
is emulated, and invalidates every translation made from that page, so the
next run translates what is there now.  The page-table pages its fetches
were translated through are protected too, and a write that changes one of
those entries (a remap) invalidates the translations made through it.

Code in *virtual user* mode runs directly on the host, untranslated: with
the guest's own R, interrupt flag and mode mirrored on the host (see
`shadow`), the x86 family's user-mode forms (``pushf``, ``popf``,
``rdmode``, ``rdbase``, ``rdbound``) read and keep exactly what they would
on the guest's machine, and privileged instructions trap as usual.

Counting: instructions run from the translation cache are executed by the
host directly (they are the guest's own, unchanged) and count as ``direct``;
``extra`` counts them again as ``translated_steps``, with
``translations``, ``translations_invalidated`` and ``callouts``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Mapping

from popek.model.machine import Machine
from popek.spec.encoding import decode
from popek.spec.image import Image
from popek.spec.sem import ILEN
from popek.spec.state import BASE, BOUND, GUEST, HALTED, IE, MODE, PC, PEND, PTBR, USER
from popek.vmm import VIRTUAL_MODES, Support

from ..analysis.may_be_sensitive import footprint
from .shadow import ShadowPagingVMM

MAX_BLOCK = 32  # guest instructions per translated block


@dataclass
class Translation:
    """One translation-cache entry."""

    decoded: list  # the guest instructions of the block; empty: call the VMM
    pages: frozenset[int] = field(default_factory=frozenset)  # guest frames it came from
    reads: tuple[int, ...] = ()  # guest page-table words its fetches were translated through
    values: tuple[int, ...] = ()  # what they held then


_WHY = "kernel code is translated with sensitive instructions as VMM calls; user code runs directly"


class BinaryTranslationVMM(ShadowPagingVMM):
    name: ClassVar[str] = "binary-translation"
    summary: ClassVar[str] = "translates guest kernel code block by block; user code runs directly"
    supports: ClassVar[Mapping[str, Support]] = {
        p: Support(True, True, _WHY, direct_modes=VIRTUAL_MODES) for p in ("pg", "hybrid", "x86", "vtx")
    }

    def load(self, image: Image, *, memsize: int) -> None:
        self.tc: dict[tuple, Translation] = {}
        self._tc_by_page: dict[int, set[tuple]] = {}
        super().load(image, memsize=memsize)

    def forget_derived(self) -> None:
        self.tc.clear()
        self._tc_by_page.clear()

    def direct_allowed(self) -> bool:
        return self.vcpu.S[MODE] == USER

    def protected_by_design(self) -> set[int]:
        return set(self._tc_by_page)

    # -- virtual supervisor mode: run translations ---------------------------
    def interpret(self, budget: int) -> int:
        done = 0
        while done < budget and not self.runs_directly():
            S = self.vcpu.S
            if S[HALTED]:
                break
            # a due interrupt, or a vtx guest in its own guest mode: the virtual CPU
            due = (S[PEND] and S[IE]) or S[GUEST]
            entry = None if due else self.translation(S[PC])
            if entry is None or not entry.decoded:
                if not due:
                    self.counts.extra["callouts"] += 1
                n = self.emulate_step()
                if n == 0:
                    break
                done += n
                continue
            done += self.run_translated(budget - done)
        return done

    def _key(self, pc: int) -> tuple:
        S = self.vcpu.S
        return (pc, S[BASE], S[BOUND], S[PTBR])

    def translation(self, pc: int) -> Translation | None:
        """The cached translation at guest PC ``pc``, made now if missing;
        None when the fetch itself faults (the virtual CPU delivers that)."""
        key = self._key(pc)
        entry = self.tc.get(key)
        if entry is None:
            entry = self._translate(pc, key)
        return entry

    def _translate(self, pc: int, key: tuple) -> Translation | None:
        host, arch, W = self.host, self.host.arch, self.window
        pb = arch.page_bits
        decoded = []
        page = None
        reads: dict[int, None] = {}  # the table words walked, in order

        def where(va: int) -> int | None:
            phys, _cause, _info, read = self.guest_walk(va)
            reads.update(dict.fromkeys(read))
            return phys

        for k in range(MAX_BLOCK):
            va = pc + ILEN * k
            if va + 1 > arch.mask:
                break
            p0, p1 = where(va), where(va + 1)
            if p0 is None or p1 is None:
                break
            if page is None:
                page = p0 >> pb
                if (page + 1) << pb > self.layout.memsize:
                    break  # partly outside guest storage: the virtual CPU runs it
            if p0 >> pb != page or p1 >> pb != page:
                break
            d = decode(host.profile, W[p0], W[p1])
            if d is None:
                break
            fp = footprint(d.insn, arch)
            if fp.needs_vmm:
                break
            decoded.append(d)
            if not fp.falls_through:
                break
        if page is None:
            return None  # the fetch faults: not cached
        if decoded:
            self.counts.extra["translations"] += 1
        table = tuple(reads) if self.vcpu.S[PTBR] else ()
        entry = Translation(decoded, frozenset({page}), table, tuple(map(W.__getitem__, table)))
        self.tc[key] = entry
        self._tc_by_page.setdefault(page, set()).add(key)
        self.protect(page)
        self.watch_tables(table)  # a remap must be seen: see on_guest_write
        return entry

    def run_translated(self, budget: int) -> int:
        """Run translated blocks on the host, through the machine's own loop
        with this cache choosing its blocks, until a VMM call, a trap, a due
        interrupt or ``budget`` guest steps.  Returns the guest steps run."""
        direct_before = self.counts.direct
        n = self.run_direct(budget, blocks=self._chosen_block, on_trap=self._translated_trap)
        self.counts.extra["translated_steps"] += self.counts.direct - direct_before
        return n

    def _chosen_block(self, pc: int) -> list | None:
        """The host's block chooser: the translation at ``pc``; nothing (the
        run ends there) for a VMM call or a fetch that faults."""
        entry = self.translation(pc)
        return entry.decoded if entry is not None else None

    def _translated_trap(self, host: Machine, cause: int, info: int) -> bool:
        """A host trap in translated code: the VMM handles it, and control
        goes back to `interpret`, which decides what runs next."""
        self.on_host_trap(host, cause, info)
        return True

    # -- self-modifying code -------------------------------------------------------
    def on_guest_write(self, frame: int) -> None:
        super().on_guest_write(frame)
        if self.is_table_page(frame):  # a remapped page: its translations came from elsewhere
            W = self.window
            for key, t in list(self.tc.items()):
                if t.reads and tuple(map(W.__getitem__, t.reads)) != t.values:
                    del self.tc[key]
                    for page in t.pages:
                        self._tc_by_page.get(page, set()).discard(key)
                    self.counts.extra["translations_invalidated"] += 1
        keys = self._tc_by_page.pop(frame, None)
        if keys:
            for key in keys:
                self.tc.pop(key, None)
            self.counts.extra["translations_invalidated"] += len(keys)
            if not self.is_table_page(frame):
                self.unprotect(frame)

