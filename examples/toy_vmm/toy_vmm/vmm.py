"""ToyVMM: the smallest complete VMM plug-in for popek.

It interprets every guest instruction on a *virtual CPU*: a popek `Machine`
of the host's profile whose storage is a `Window` onto the guest's
allocation in host storage.  The virtual CPU runs the spec's own semantics,
so the toy is faithful on every profile and efficient on none.  What it
adds is a trap hook: each trap the guest takes is counted by cause before
the spec's trap mechanism (``machine.trap``) delivers it to the guest.
"""

from __future__ import annotations

from collections import Counter
from typing import ClassVar, Mapping

from popek.model.machine import Machine
from popek.model.window import Window
from popek.spec.image import Image
from popek.vmm import GUEST_FIELDS, VMM, Counters, GuestRun, GuestState, Support, cause_name

_WHY = "interprets every instruction with the spec's semantics"


class ToyVMM(VMM):
    name: ClassVar[str] = "toy"
    summary: ClassVar[str] = "worked example: an interpreter that counts the guest's traps by cause"
    supports: ClassVar[Mapping[str, Support]] = {
        p: Support(faithful=True, efficient=False, reason=_WHY) for p in ("pg", "hybrid", "x86")
    }
    capabilities: ClassVar[frozenset[str]] = frozenset({"snapshot"})

    GUEST_AT = 0x2000  # host word where the guest's storage begins

    def __init__(self, host: Machine):
        super().__init__(host)
        self.cpu: Machine | None = None
        self.steps = 0
        self.guest_traps: Counter = Counter()

    def load(self, image: Image, *, memsize: int) -> None:
        window = Window(self.host, self.GUEST_AT, memsize)
        self.cpu = Machine(self.host.profile, memsize, storage=window)
        self.cpu.load(image)  # clears the window, places the image, resets

    def run(self, steps: int) -> GuestRun:
        before = self.cpu.halted
        result = self.cpu.run(steps, on_trap=self._on_trap)
        self.steps += result.steps
        return GuestRun(result.steps, before or result.halted)

    def _on_trap(self, cpu: Machine, cause: int, info: int) -> bool:
        self.guest_traps[cause_name(cause)] += 1
        cpu.trap(cause, info)  # the spec's trap mechanism, on the virtual CPU
        return False  # keep running

    def guest_state(self) -> GuestState:
        regs = self.cpu.registers()
        memory = self.host.M[self.GUEST_AT : self.GUEST_AT + self.cpu.memsize]
        return GuestState({k: regs[k] for k in GUEST_FIELDS}, tuple(memory), tuple(self.cpu.out))

    def counters(self) -> Counters:
        extra = Counter({f"guest_trap.{k}": n for k, n in self.guest_traps.items()})
        return Counters(direct=0, emulated=self.steps, vmm_entries=0, extra=extra)

    def allocation(self) -> range:
        return range(self.GUEST_AT, self.GUEST_AT + (self.cpu.memsize if self.cpu else 0))

    # -- the "snapshot" capability ------------------------------------------
    def snapshot(self) -> tuple:
        memory = tuple(self.host.M[a] for a in self.allocation())
        return (list(self.cpu.S), memory, list(self.cpu.out))

    def restore(self, snap: tuple) -> None:
        state, memory, out = snap
        for offset, word in enumerate(memory):
            self.cpu.M[offset] = word  # through the window, so decode caches stay exact
        self.cpu.S[:] = state
        self.cpu.out[:] = out
        self.cpu.flush()
