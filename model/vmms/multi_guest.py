"""Several guests on one host: the "multi-guest" capability for a design.

Mixed into a `SoftwareVMM` design (``class D(MultiGuest, Design)``), it
keeps one *slot* per guest, its own allocation and virtual CPU, and makes
the selected one the design's ``layout`` and ``vcpu``, so the design's
own `run`, `guest_state`, `allocation` work on it unchanged::

    host storage   0 ........ GUEST_OFFSET-1   the VMM's (reserved)
                   slot 1: [a1, a1 + memsize1)  guest 1's storage
                   slot 2: [a2, a2 + memsize2)  guest 2's storage, a2 >= a1 + memsize1
                   ...                          (first fit, page aligned)

Isolation comes from the design: each guest runs directly with the real R
composed from *its* allocation (`SoftwareVMM.real_r`), so its accesses end
inside it.  A guest's virtual timer lives in its virtual CPU and is put on
the host only while it runs, so it counts that guest's steps and nothing
else: a descheduled guest sees no gap.

Several host CPUs (``use_cpu``): the scheduler (`popek.model.scheduler`)
hands the design another `Machine` over the same storage before a slice.
A CPU's cached decodes may be stale for a guest that last ran elsewhere
(it may have rewritten its code there), so a guest that moves is run on a
flushed CPU, as a real hypervisor flushes what a migrated vCPU left behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from popek.model.machine import Machine
from popek.spec.image import Image

from .base import Layout


@dataclass
class GuestSlot:
    gid: int
    layout: Layout
    vcpu: Machine
    extra: Any = None  # the design's own bookkeeping (`save_extra`)
    cpu: Machine | None = None  # where it last ran


class MultiGuest:
    """Mixin: the multi-guest capability over a `SoftwareVMM` design."""

    def load(self, image: Image, *, memsize: int) -> None:
        """The first guest (the contract's ``load``): forgets any others."""
        self.slots: dict[int, GuestSlot] = {}
        self.selected: int | None = None
        self.next_gid = 1
        self.selected = self.add_guest(image, memsize=memsize)

    # -- the capability ------------------------------------------------------------
    def add_guest(self, image: Image, *, memsize: int) -> int:
        """Place another guest in free host storage; the selection stays."""
        if not hasattr(self, "slots"):  # add_guest before any load
            self.slots, self.selected, self.next_gid = {}, None, 1
        offset = self.free_offset(memsize)
        previous = self.selected
        self.save_slot()
        self.GUEST_OFFSET = offset  # where the design's own load places it
        super().load(image, memsize=memsize)  # type: ignore[misc]
        gid, self.next_gid = self.next_gid, self.next_gid + 1
        self.slots[gid] = GuestSlot(gid, self.layout, self.vcpu, None, self.host)
        self.slots[gid].extra = self.save_extra()
        self.selected = gid
        if previous is not None:
            self.select_guest(previous)
        return gid

    def select_guest(self, gid: int) -> None:
        if gid not in self.slots:
            raise KeyError(f"no guest {gid!r} (guests: {sorted(self.slots)})")
        if gid == self.selected:
            return
        self.save_slot()
        slot = self.slots[gid]
        self.selected, self.layout, self.vcpu = gid, slot.layout, slot.vcpu
        self.restore_extra(slot.extra)
        self.vcpu_ran_freely()  # decodes of another guest's code: not tracked
        self.mark_vcpu_stale()
        self.guest_switched()
        if slot.cpu is not self.host:
            self.moved_to(self.host)

    def guests(self) -> list[int]:
        return sorted(getattr(self, "slots", {}))

    def remove_guest(self, gid: int) -> None:
        """Forget a guest and free its storage (another may take it later)."""
        if gid not in self.slots:
            raise KeyError(f"no guest {gid!r}")
        del self.slots[gid]
        if gid == self.selected:
            self.selected, self.layout, self.vcpu = None, None, None

    def allocations(self) -> dict[int, range]:
        """Every guest's host words, by guest."""
        return {gid: s.layout.allocation for gid, s in self.slots.items()}

    def reserved(self) -> list[range]:
        """The words below the first guest: the VMM's, whichever is selected."""
        own = super().reserved()  # type: ignore[misc]
        first = type(self).GUEST_OFFSET
        return [r if r.stop <= first else range(r.start, first) for r in own] if self.layout else []

    # -- several CPUs --------------------------------------------------------------
    def use_cpu(self, cpu: Machine) -> None:
        """Run the selected guest on ``cpu`` (a Machine over the same storage)."""
        if cpu.M is not self.host.M:
            raise ValueError("another CPU must share the host's storage")
        self.host = cpu
        if self.selected is not None and self.slots[self.selected].cpu is not cpu:
            self.moved_to(cpu)

    def moved_to(self, cpu: Machine) -> None:
        """The selected guest runs on ``cpu`` from now on: its window writes
        through that CPU, whose decodes may be stale for it."""
        window = self.vcpu.M
        if hasattr(window, "host"):
            window.host = cpu
        cpu.flush()
        self.slots[self.selected].cpu = cpu

    # -- hooks -----------------------------------------------------------------------
    def guest_switched(self) -> None:
        """Hook: the selected guest changed (a design with per-guest host
        structures, such as a nested page table, rewrites them here)."""

    def free_offset(self, memsize: int) -> int:
        """The lowest page-aligned host word from which ``memsize`` words
        are free of every guest (first fit)."""
        page = self.host.arch.page_size
        taken = sorted((s.layout.guest_offset, s.layout.guest_offset + s.layout.memsize) for s in self.slots.values())
        at = type(self).GUEST_OFFSET
        for start, stop in taken:
            if at + memsize <= start:
                break
            at = max(at, -(-stop // page) * page)
        if at + memsize > len(self.host.M):
            raise ValueError(f"no room for a guest of {memsize} words in host storage")
        return at

    def save_slot(self) -> None:
        if self.selected is not None and self.selected in self.slots:
            slot = self.slots[self.selected]
            slot.layout, slot.vcpu, slot.extra = self.layout, self.vcpu, self.save_extra()
