"""Tiny VMMs for testing the harness before (and besides) the built-in designs.

`Interpreter` runs the guest on a reference `Machine` over a window of host
storage: faithful by construction, never efficient.  The others each break
one requirement on purpose, so the harness can be seen to catch it.
"""

from __future__ import annotations

from popek.model.machine import Machine
from popek.model.window import Window
from popek.spec.image import Image
from popek.vmm import VMM, Counters, GuestRun, GuestState, Support

OFFSET = 0x4000

EVERYWHERE = {
    p: Support(True, False, "interprets every instruction") for p in ("pg", "hybrid", "x86")
}


class Interpreter(VMM):
    name = "tiny-interpreter"
    summary = "a reference machine over a window of host storage"
    supports = EVERYWHERE

    def __init__(self, host: Machine):
        super().__init__(host)
        self._counters = Counters()
        self.guest: Machine | None = None

    def load(self, image: Image, *, memsize: int) -> None:
        self.memsize = memsize
        self.guest = Machine(self.host.profile, memsize, storage=Window(self.host, OFFSET, memsize))
        self.guest.load(image)

    def run(self, steps: int) -> GuestRun:
        r = self.guest.run(steps)
        self._counters.emulated += r.steps
        return GuestRun(r.steps, r.halted)

    def guest_state(self) -> GuestState:
        return GuestState.from_machine(self.guest)

    def counters(self) -> Counters:
        return self._counters

    def allocation(self) -> range:
        return range(OFFSET, OFFSET + self.memsize)


class OddR3(Interpreter):
    """Reports r3 one too high whenever it is odd: a fidelity bug."""

    name = "tiny-odd-r3"
    supports = {p: Support(False, False, "planted bug") for p in EVERYWHERE}

    def guest_state(self) -> GuestState:
        s = super().guest_state()
        regs = dict(s.regs)
        if regs["r3"] & 1:
            regs["r3"] = (regs["r3"] + 1) & 0xFFFF
        return GuestState(regs, s.memory, s.out)


class Scribbler(Interpreter):
    """Writes one host word just past the guest's allocation: a safety bug."""

    name = "tiny-scribbler"
    supports = {p: Support(True, False, "planted bug") for p in EVERYWHERE}

    def run(self, steps: int) -> GuestRun:
        r = super().run(steps)
        if self.guest.out:
            self.host.write(OFFSET + self.memsize, 1)
        return r


class Hang(Interpreter):
    """Never returns from run() when the guest has written output."""

    name = "tiny-hang"

    def run(self, steps: int) -> GuestRun:
        r = super().run(steps)
        while self.guest.out:
            pass
        return r


class TwoGuests(Interpreter):
    """Several guests side by side, each an interpreter in its own window."""

    name = "tiny-two-guests"
    capabilities = frozenset({"multi-guest"})

    def load(self, image: Image, *, memsize: int) -> None:
        super().load(image, memsize=memsize)
        self._guests = {0: (self.guest, OFFSET)}
        self._selected = 0

    def add_guest(self, image: Image, *, memsize: int) -> int:
        gid = len(self._guests)
        offset = OFFSET + 0x2000 * gid
        g = Machine(self.host.profile, memsize, storage=Window(self.host, offset, memsize))
        g.load(image)
        self._guests[gid] = (g, offset)
        return gid

    def select_guest(self, gid: int) -> None:
        self._selected = gid
        self.guest = self._guests[gid][0]

    def guests(self) -> list[int]:
        return list(self._guests)

    def allocation(self) -> range:
        guest, offset = self._guests[self._selected]
        return range(offset, offset + guest.memsize)


class SharedStorage(TwoGuests):
    """Every added guest gets the *first* guest's storage: they interfere."""

    name = "tiny-shared-storage"

    def add_guest(self, image: Image, *, memsize: int) -> int:
        gid = len(self._guests)
        g = Machine(self.host.profile, memsize, storage=Window(self.host, OFFSET, memsize))
        g.load(image)
        self._guests[gid] = (g, OFFSET)
        return gid
