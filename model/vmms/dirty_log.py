"""Dirty-page tracking for designs that run the guest with the host's paging
off (trap-and-emulate, the hybrid VMM, the emulator): what a pre-copy
migration (`popek.model.migration`) asks of a design.

A guest page is written in one of two ways, and each is caught where it
happens:

* by guest code running directly on the host: while the log runs, the VMM
  turns the host's paging on under the composed R, with a table of its own
  (in its reserved storage) that maps each page of the allocation to
  itself, *read-only*.  The first write to a page faults to the VMM, which
  notes the page, makes its entry writable and lets the instruction run
  again (no guest step: the guest never sees it).  Collecting the log
  write-protects the collected pages again.
* by the VMM on the guest's behalf: an emulated or interpreted instruction,
  a trap delivered (the old PSW stored), all go through the virtual CPU's
  storage, a `LoggingWindow` that notes the pages written.
"""

from __future__ import annotations

from typing import ClassVar

from popek.model.window import Window
from popek.spec.state import PTBR, PTE_PRESENT, PTE_USER, PTE_WRITE, Cause

from .base import SoftwareVMM


class LoggingWindow(Window):
    """A `Window` that notes the guest-physical pages written through it
    while ``logging`` is on."""

    def __init__(self, host, offset: int, size: int, page_bits: int):
        super().__init__(host, offset, size)
        self.page_bits = page_bits
        self.logging = False
        self.dirty: set[int] = set()

    def __setitem__(self, a, value) -> None:
        super().__setitem__(a, value)
        if not self.logging:
            return
        if isinstance(a, slice):
            start, stop, _ = a.indices(self.size)
            if stop > start:
                self.dirty.update(range(start >> self.page_bits, ((stop - 1) >> self.page_bits) + 1))
        else:
            self.dirty.add(a >> self.page_bits)


class WriteProtectLog(SoftwareVMM):
    """The dirty log of a `SoftwareVMM` whose host runs with paging off (see
    the module docstring).  Mix in before the design: ``class D(WriteProtectLog,
    Design)``."""

    # host word of the VMM's page table while the log runs: in the reserved
    # storage below `GUEST_OFFSET`, one entry per host page
    DIRTY_TABLE: ClassVar[int] = 0x0400
    capabilities: ClassVar[frozenset[str]] = SoftwareVMM.capabilities | {"migration"}

    def __init__(self, host):
        super().__init__(host)
        self.logging = False
        self.faulted: set[int] = set()  # pages made writable since the last collection

    def load(self, image, *, memsize: int) -> None:
        super().load(image, memsize=memsize)
        self.logging = False
        self.faulted = set()

    def guest_window(self, offset: int, memsize: int) -> Window:
        """The virtual CPU's storage notes the pages it writes."""
        return LoggingWindow(self.host, offset, memsize, self.host.arch.page_bits)

    # -- the dirty log (`popek.model.migration.DirtyLog`) ---------------------------
    def start_dirty_log(self) -> None:
        arch, lay = self.host.arch, self.layout
        pb = arch.page_bits
        table = [0] * (1 << (arch.word - pb))
        for page in range(lay.guest_offset >> pb, -(-(lay.guest_offset + lay.memsize) // arch.page_size)):
            table[page] = (page << pb) | PTE_PRESENT | PTE_USER
        self.host.write_words(self.DIRTY_TABLE, table)
        self.faulted = set()
        self.vcpu.M.dirty.clear()
        self.vcpu.M.logging = self.logging = True

    def dirty_pages(self) -> set[int]:
        pages = self.collected_pages()
        pb, base = self.host.arch.page_bits, self.layout.guest_offset >> self.host.arch.page_bits
        for page in self.faulted:  # write-protect again what the guest wrote
            entry = self.DIRTY_TABLE + base + page
            self.host.write(entry, self.host.M[entry] & ~PTE_WRITE)
        self.faulted = set()
        self.vcpu.M.dirty.clear()
        return pages

    def collected_pages(self) -> set[int]:
        """The pages written since the last collection: the host's write
        faults and the virtual CPU's writes."""
        return self.faulted | self.vcpu.M.dirty

    def stop_dirty_log(self) -> None:
        self.vcpu.M.logging = self.logging = False
        self.faulted = set()
        self.vcpu.M.dirty.clear()

    # -- running directly under the log ----------------------------------------------
    def push(self) -> None:
        super().push()
        if self.logging:
            self.host.S[PTBR] = self.DIRTY_TABLE

    def handle_host_trap(self, cause: int, info: int) -> None:
        # paging is the VMM's alone here (a paged guest is never run directly
        # by these designs), so a page fault is a write to a protected page
        if self.logging and cause == Cause.PAGE:
            arch = self.host.arch
            base, _ = self.real_r()
            host_page = ((base + info) & arch.mask) >> arch.page_bits
            self.faulted.add(host_page - (self.layout.guest_offset >> arch.page_bits))
            entry = self.DIRTY_TABLE + host_page
            self.host.write(entry, self.host.M[entry] | PTE_WRITE)
            self.counts.extra["dirty_faults"] += 1
            return
        super().handle_host_trap(cause, info)
