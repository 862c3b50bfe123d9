"""Hardware-assisted virtualization on the `vtx` profile.

The design VT-x and AMD-V made possible (the lecture's "hardware support"):
the guest, kernel and all, runs on the host processor in *guest mode*
(spec/vtx.py), where its mode, R, interrupt flag, page-table base and
timer are its own, so its sensitive instructions act on its own state and
need no VMM.  The VMM only:

1. builds, in its reserved host storage, a *nested page table* mapping
   each guest-physical page to the host frame of the guest's allocation
   (a page only partly inside guest storage is left unmapped), a *VMCS*,
   and a one-instruction host program, ``vmrun r1``;
2. chooses the *exit controls*: an instruction exits when, run in guest
   mode, it would change something VM entry and exit do not switch between
   guest and host: read off the spec (the instruction's effects against the
   slots the exit mechanism restores), which picks ``halt`` (the host's
   halt latch) and ``out`` (the host's port);
3. enters the guest (the host runs ``vmrun``) and, on each VM exit, reads
   the exit reason from the VMCS and finishes the guest step in software:
   an exiting instruction or a nested page fault is emulated on the virtual
   CPU (the spec's semantics: ``out`` goes to the guest's log, ``halt``
   halts the guest, an access beyond guest storage traps as on bare
   hardware); a guest trap that exited is delivered to the guest.

Guest traps and timer interrupts that do not exit are delivered inside the
guest by the hardware's own mechanism (the host hook only forwards them to
it), and count as direct steps.  A run that ends with the guest still in
guest mode forces an exit (like VT-x's preemption timer), so the guest's
state is always in the VMCS and the virtual CPU between runs.

Paging guests run on nested paging: the hardware walks the guest's table
and the nested one on every access, and the guest's page-table writes and
base loads cost the VMM nothing.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, ClassVar, Mapping

from popek.model import codegen
from popek.model.codebook import CLOSURE
from popek.model.machine import Machine
from popek.model.window import Window
from popek.spec import vtx as V
from popek.spec.bits import var
from popek.spec.encoding import encode
from popek.spec.image import Image
from popek.spec.sem import Sem
from popek.spec.state import (
    BASE,
    BOUND,
    GUEST,
    HALTED,
    IE,
    MODE,
    PC,
    PEND,
    PTBR,
    PTE_PRESENT,
    PTE_USER,
    PTE_WRITE,
    SUPERVISOR,
    TIMER,
    Cause,
)
from popek.spec.trace import trace_trap
from popek.spec.trap import load_psw
from popek.vmm import VIRTUAL_MODES, GuestRun, Support, cause_name

from ..analysis.may_be_sensitive import footprint
from .base import SoftwareVMM
from .dirty_log import LoggingWindow
from .multi_guest import MultiGuest
from .shadow import changed_entries


@lru_cache(maxsize=None)
def state_area_code(arch) -> tuple[Callable, Callable]:
    """Makers of ``save(at)`` and ``load(at)``: a CPU's state into, and out
    of, a VMCS state area at host word ``at``, exactly as VM exit stores it
    and VM entry loads it (spec/vtx.py; the PSW word by `load_psw` and
    `psw_word`), traced once and compiled like the machine's trap routine."""
    at = var("at", arch.word)
    save, load = Sem(arch), Sem(arch)
    for k, word in enumerate(V.state_words(save, save.get(PC))):
        save.store_host(at + k, word)
    g = V.read_state_area(load, at)
    V.load_state(load, g)
    load_psw(load, g["psw"], g["pc"], g["base"], g["bound"])

    def compiled(name: str, s: Sem) -> Callable:
        return codegen.compile_effects(name, s.fx, arch, "at", CLOSURE, {"at": "at"})

    return compiled("save", save), compiled("load", load)


def exit_controls(profile) -> int:
    """The CTRL word: the exit-controlled instructions whose effects reach
    beyond what VM entry and exit switch (from the spec, not a list)."""
    arch = profile.arch
    switched = set(trace_trap(arch).field_writes)
    ctrl = 0
    for name, bit in V.EXIT_CONTROL.items():
        insn = profile.by_name.get(name)
        if insn is None:
            continue
        fp = footprint(insn, arch)
        if fp.output or fp.writes - switched:
            ctrl |= 1 << bit
    return ctrl


class HardwareAssistedVMM(MultiGuest, SoftwareVMM):
    name: ClassVar[str] = "hardware-assisted"
    summary: ClassVar[str] = "guest runs in vtx guest mode; VM exits on halt/out; nested paging"
    supports: ClassVar[Mapping[str, Support]] = {
        "vtx": Support(True, True, "guest mode gives the guest its own sensitive state; only host-owned effects exit",
                      direct_modes=VIRTUAL_MODES),
    }

    # several guests (model/vmms/multi_guest.py): the nested table maps the selected one
    capabilities: ClassVar[frozenset[str]] = SoftwareVMM.capabilities | {"multi-guest", "migration"}
    paging: ClassVar[str] = "nested"
    dirty_logging = False  # a migration's dirty log runs (`start_dirty_log`)
    NPT: ClassVar[int] = 0x400  # nested page table (host-physical)
    VMCS_AT: ClassVar[int] = 0x800
    ENTRY: ClassVar[int] = 0xC00  # the host program: vmrun r1

    def __init__(self, host: Machine):
        if not host.arch.vtx or "vmrun" not in host.profile.by_name:
            raise ValueError(
                f"hardware-assisted needs a vtx host; profile {host.profile.name!r} has no guest mode"
            )
        super().__init__(host)

    def load(self, image: Image, *, memsize: int) -> None:
        super().load(image, memsize=memsize)
        host, arch = self.host, self.host.arch
        pb = arch.page_bits
        for addr, word in zip((self.ENTRY, self.ENTRY + 1), encode(host.profile, host.profile["vmrun"], rs=1)):
            host.write(addr, word)
        mapped = self.map_guest()
        self.dirty_logging = False
        self.ctrl = exit_controls(host.profile)
        host.write(self.VMCS_AT + V.CTRL, self.ctrl)
        host.write(self.VMCS_AT + V.NPT, self.NPT)
        self.counts.extra["nested_entries"] = mapped

    def map_guest(self) -> int:
        """Point the nested page table at the selected guest's allocation;
        returns the pages mapped."""
        host, pb = self.host, self.host.arch.page_bits
        mapped = self.layout.memsize >> pb  # whole pages only
        for g in range(1 << (host.arch.word - pb)):
            entry = (self.layout.guest_offset + (g << pb)) | PTE_PRESENT | PTE_WRITE if g < mapped else 0
            host.write(self.NPT + g, entry)
        return mapped

    def guest_switched(self) -> None:
        self.map_guest()

    def reserved(self) -> list[range]:
        return [range(self.NPT, self.ENTRY + 2)] if self.layout else []

    # -- the dirty log of a migration (`popek.model.migration.DirtyLog`) -----------
    # The vtx facility: the nested table's write bit.  A clean page's entry
    # is read-only, so the guest's first write to it (in guest mode) exits
    # with a nested page fault; the VMM logs the page, makes the entry
    # writable and lets the instruction run again (no guest step).  What the
    # virtual CPU writes goes through its `LoggingWindow`.
    def guest_window(self, offset: int, memsize: int) -> Window:
        return LoggingWindow(self.host, offset, memsize, self.host.arch.page_bits)

    def start_dirty_log(self) -> None:
        self.faulted: set[int] = set()
        self.vcpu.M.dirty.clear()
        self.vcpu.M.logging = self.dirty_logging = True
        self._write_protect(range(self.layout.memsize >> self.host.arch.page_bits))

    def _write_protect(self, pages) -> None:
        for g in pages:
            entry = self.host.M[self.NPT + g]
            if entry & PTE_WRITE:
                self.host.write(self.NPT + g, entry & ~PTE_WRITE)

    def dirty_pages(self) -> set[int]:
        pages = self.faulted | self.vcpu.M.dirty
        self.faulted = set()
        self.vcpu.M.dirty.clear()
        self._write_protect(pages & set(range(self.layout.memsize >> self.host.arch.page_bits)))
        return pages

    def stop_dirty_log(self) -> None:
        self.vcpu.M.logging = self.dirty_logging = False
        self.faulted = set()
        for g in range(self.layout.memsize >> self.host.arch.page_bits):
            self.host.write(self.NPT + g, self.host.M[self.NPT + g] | PTE_WRITE)

    # -- running ---------------------------------------------------------------
    def run(self, steps: int) -> GuestRun:
        v = self.loaded_vcpu()
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        if self.suspended or self.gone:  # frozen, or no longer here (`popek.vmm.Lifecycle`)
            return GuestRun(0, bool(v.S[HALTED]))
        done = 0
        while done < steps and not v.S[HALTED]:
            if v.S[GUEST]:  # the guest entered its own guest mode: interpret it
                self.counts.vmm_entries += 1
                n = self.emulate_step()
                if n == 0:
                    break
                done += n
                continue
            done += self._enter(steps - done)
        return GuestRun(done, bool(v.S[HALTED]))

    def _enter(self, budget: int) -> int:
        """One VM entry: run the guest in guest mode until an exit or ``budget``."""
        host, H, M = self.host, self.host.S, self.host.M
        at = self.VMCS_AT + V.GUEST_AREA
        save, _ = self._state_area()
        save(at)
        host.write(at + V.SAVED.index("ptbr"), self.guest_ptbr())
        for slot in (MODE, BASE, BOUND, PTBR, IE, TIMER, PEND, HALTED, GUEST):
            H[slot] = 0
        H[MODE] = SUPERVISOR
        H[BOUND] = host.memsize
        H[PC] = self.ENTRY
        H[1] = self.VMCS_AT
        # No flush: every write the VMM makes to host storage goes through
        # `Machine.write` or the window (exact), or drops what it affects
        # itself (`_zap`, `_after_vcpu`), so the host's decodes are current.
        self._exited = False
        r = host.run(budget + 1, self._on_trap)
        guest_steps = r.steps - 1  # the host's vmrun
        if host.S[GUEST]:  # out of budget inside the guest: a preemption exit
            host.trap(Cause.VMEXIT, 0)
            self.counts.extra["preemptions"] += 1
            exited = False
        else:
            exited = True
            guest_steps -= 1  # the exit itself; the VMM completes that guest step
        self._read_guest()
        self.counts.direct += guest_steps
        if not exited:
            return guest_steps
        reason, qual = M[self.VMCS_AT + V.REASON], M[self.VMCS_AT + V.QUAL]
        c = self.counts
        c.vmm_entries += 1
        c.traps[cause_name(reason)] += 1
        c.extra[f"vm_exits.{self._exit_name(reason, qual)}"] += 1
        return guest_steps + self.handle_exit(reason, qual)

    def handle_exit(self, reason: int, qual: int) -> int:
        """Finish the guest step that exited; returns guest steps (0 or 1)."""
        if reason == Cause.NPF and self.dirty_logging:
            g = qual >> self.host.arch.page_bits
            entry = self.host.M[self.NPT + g]
            if g < self.layout.memsize >> self.host.arch.page_bits and entry & PTE_PRESENT and not entry & PTE_WRITE:
                self.faulted.add(g)  # a write to a clean page: logged, then writable
                self.host.write(self.NPT + g, entry | PTE_WRITE)
                self.counts.extra["dirty_faults"] += 1
                return 0  # the instruction runs again
        if reason in (Cause.VMEXIT, Cause.NPF):
            if reason == Cause.NPF:
                self.counts.extra["nested_faults"] += 1
            return self.emulate_step()
        self.reflect(reason, qual)
        return 1

    def guest_ptbr(self) -> int:
        """The page-table base the guest runs with in guest mode: its own."""
        return self.vcpu.S[PTBR]

    def _exit_name(self, reason: int, qual: int) -> str:
        """An instruction exit by the instruction's name; others by cause."""
        insn = self.host.profile.by_opcode.get(qual) if reason == Cause.VMEXIT else None
        return insn.name if insn is not None else cause_name(reason)

    def _on_trap(self, host: Machine, cause: int, info: int) -> bool:
        """The host hook: in guest mode, the hardware's trap mechanism decides
        (deliver inside the guest, or exit); it is only forwarded here."""
        if not host.S[GUEST]:
            raise RuntimeError(f"{self.name}: the host program trapped ({cause_name(cause)})")
        host.trap(cause, info)
        if host.S[GUEST]:
            self.counts.extra["delivered_in_guest"] += 1
            return False
        return True

    def _read_guest(self) -> None:
        """The guest state the exit saved in the VMCS, into the virtual CPU."""
        S = self.vcpu.S
        ptbr = S[PTBR]
        _, load = self._state_area()
        load(self.VMCS_AT + V.GUEST_AREA)
        if self.paging == "shadow":  # lptb exits: the vCPU's page-table base is current
            S[PTBR] = ptbr
        self.mark_vcpu_stale()

    def _state_area(self) -> tuple[Callable, Callable]:
        """``save(at)`` and ``load(at)`` (`state_area_code`) over the virtual
        CPU's state and the host's storage."""
        env = (self.vcpu.S, *self.host._env[1:])
        save, load = state_area_code(self.host.arch)
        return save(*env), load(*env)


class HardwareAssistedShadowVMM(HardwareAssistedVMM):
    """The same design on hardware without nested paging (VT-x before EPT):
    the guest runs in guest mode with its page-table base pointing at a
    *shadow table* the VMM keeps, and the user chooses this variant by name.

    Without a nested table a guest-physical address in guest mode is a
    host-physical one, so everything that uses physical addresses must exit:
    every guest trap and interrupt (the PSW words are physical), and the
    instructions whose effects read storage by physical address (``rti``) or
    load the page-table base (``lptb``): found from the spec, as
    `exit_controls` finds ``halt`` and ``out``.  The guest's R is its own, so
    the shadow table maps guest-linear pages to host frames in the
    allocation, one table for both modes (an entry's user bit is the guest's
    own answer for user mode).  Entries are built when a page fault exits;
    the guest's page-table pages are write-protected, and every write the
    virtual CPU makes to one (an emulated step, a delivered trap, a step of
    the guest's own nested guest) drops the entries built from a table word
    it changed (with the host's decodes fetched through them); an ``lptb``
    drops the table.
    """

    name: ClassVar[str] = "hardware-assisted+shadow"
    summary: ClassVar[str] = "hardware-assisted without nested paging: shadow page tables, traps exit"
    supports: ClassVar[Mapping[str, Support]] = {
        # Exits on traps, rti and lptb cost time but not efficiency in P&G's
        # sense (those are sensitive steps); writes to the guest's page
        # tables are innocuous stores it emulates, a small share of a guest.
        "vtx": Support(True, True, "innocuous steps run in guest mode; page-table writes exit (no nested paging)",
                      direct_modes=VIRTUAL_MODES),
    }
    # one guest (its shadow state is not per guest), and no nested table to log
    # dirty pages with (a TrackingWindow of its own): no multi-guest, no migration
    capabilities: ClassVar[frozenset[str]] = SoftwareVMM.capabilities
    paging: ClassVar[str] = "shadow"
    SHADOW: ClassVar[int] = 0x400  # the shadow table, where the nested one would be

    def load(self, image: Image, *, memsize: int) -> None:
        from .shadow import TrackingWindow, compile_walk

        HardwareAssistedVMM.load(self, image, memsize=memsize)
        host, arch = self.host, self.host.arch
        # the base class placed the guest in a plain Window: track its writes instead
        self.window = TrackingWindow(host, self.layout.guest_offset, memsize, arch.page_bits)
        state, out = list(self.vcpu.S), list(self.vcpu.out)
        self.vcpu = Machine(host.profile, memsize, storage=self.window)
        self.vcpu.S[:] = state
        self.vcpu.out[:] = out
        self.vcpu.flush()
        env = (self.vcpu.S, self.window, memsize)
        self._walk = {(w, m): compile_walk(arch, write=w)(*env) for w in (False, True) for m in (0, 1)}
        ctrl = self.ctrl
        for name, bit in V.EXIT_CONTROL.items():
            insn = host.profile.by_name.get(name)
            fp = footprint(insn, arch) if insn is not None else None
            if fp is not None and (fp.physical or PTBR in fp.writes):
                ctrl |= 1 << bit
        self.ctrl = ctrl | 1 << V.X_EXC | 1 << V.X_INTR
        host.write(self.VMCS_AT + V.CTRL, self.ctrl)
        host.write(self.VMCS_AT + V.NPT, 0)
        self.counts.extra.pop("nested_entries", None)
        self._shadow_ptbr = -1
        self._zap()

    def guest_ptbr(self) -> int:
        if self.vcpu.S[PTBR] != self._shadow_ptbr:
            self._zap()
            self._shadow_ptbr = self.vcpu.S[PTBR]
        return self.SHADOW

    def _zap(self) -> None:
        size = 1 << (self.host.arch.word - self.host.arch.page_bits)
        self.host.M[self.SHADOW : self.SHADOW + size] = [0] * size
        self.host.flush()
        self._pt_pages: set[int] = set()
        # entry (host word) -> (guest table words read, their values, guest frame)
        self._sources: dict[int, tuple[tuple[int, ...], tuple[int, ...], int]] = {}
        self.counts.extra["shadow_flushes"] += 1

    def restore_extra(self, extra: object) -> None:
        self.window.forget()
        self._shadow_ptbr = -1

    def handle_exit(self, reason: int, qual: int) -> int:
        if reason == Cause.PAGE and self._fill(qual):
            return 0  # the instruction runs again, now mapped
        if reason == Cause.TIMER:  # the interrupt exited: the vCPU takes it
            self.vcpu.S[PEND] = 1
            reason = Cause.VMEXIT
        if reason == Cause.PAGE:
            self.counts.extra["shadow_emulated_faults"] += 1
            reason = Cause.VMEXIT
        return super().handle_exit(reason, qual)

    # -- what the virtual CPU writes ---------------------------------------------
    # The virtual CPU steps the guest on two paths: to finish a step that
    # exited (`handle_exit`), and to interpret the guest's own guest mode
    # (`run`: a nested guest's stores, and its VM exit's save into the
    # guest's VMCS).  Both write guest storage that shadow entries may have
    # been built from, so both go through these two, and the shadow table is
    # current before the guest next runs in guest mode.
    def emulate_step(self) -> int:
        n = super().emulate_step()
        self._after_vcpu()
        return n

    def reflect(self, cause: int, info: int) -> None:
        super().reflect(cause, info)
        self._after_vcpu()

    def _after_vcpu(self) -> None:
        """Drop the shadow entries built from a guest table word the virtual
        CPU has changed (with the host's decodes fetched through them)."""
        dirty = set(self.window.dirty)
        self.window.forget()
        if dirty & self._pt_pages:
            self.counts.extra["shadow_updates"] += 1
            for word in changed_entries(self._sources, self.window):
                del self._sources[word]
                self.host.forget_entry(word)
                self.host.M[word] = 0

    def _fill(self, vaddr: int) -> bool:
        """Build the shadow entry for ``vaddr``'s page, if the guest maps it."""
        S, arch = self.vcpu.S, self.host.arch
        pb = arch.page_bits
        word = self.SHADOW + (((S[BASE] + vaddr) & arch.mask) >> pb)
        if self.host.M[word] & PTE_PRESENT:
            return False
        saved = S[MODE]
        try:
            S[MODE] = SUPERVISOR
            phys, _c, _i, reads = self._walk[(False, 1)](vaddr)
            writable = self._walk[(True, 1)](vaddr)[0] is not None
            S[MODE] = 0
            user = self._walk[(False, 0)](vaddr)[0] is not None
        finally:
            S[MODE] = saved
        if phys is None:
            return False
        frame = phys >> pb
        if (frame + 1) << pb > self.layout.memsize:
            return False
        reads = tuple(reads) if S[PTBR] else ()
        for pt in {a >> pb for a in reads} - self._pt_pages:  # a new table page:
            self._pt_pages.add(pt)  # entries that map it lose their write bit
            for w, (_r, _v, f) in self._sources.items():
                if f == pt and self.host.M[w] & PTE_WRITE:
                    self.host.M[w] &= ~PTE_WRITE  # a fetch does not read that bit
        writable = writable and frame not in self._pt_pages
        entry = (self.layout.guest_offset + (frame << pb)) | PTE_PRESENT
        entry |= (PTE_USER if user else 0) | (PTE_WRITE if writable else 0)
        self.host.M[word] = entry  # absent until now: no decode was fetched through it
        self._sources[word] = (reads, tuple(map(self.window.__getitem__, reads)), frame)
        self.counts.extra["shadow_faults"] += 1
        return True
