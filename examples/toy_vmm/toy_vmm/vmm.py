"""ToyVMM: the smallest complete VMM plug-in for popek.

It interprets every guest instruction on a *virtual CPU*: a popek `Machine`
of the host's profile whose storage is a `Window` onto the guest's
allocation in host storage.  The virtual CPU runs the spec's own semantics,
so the toy is faithful on every profile and efficient on none.  What it
adds is a trap hook: each trap the guest takes is counted by cause before
the spec's trap mechanism (``machine.trap``) delivers it to the guest.

It declares the three lifecycle capabilities and keeps exactly what
`popek.vmm.Lifecycle` promises: a snapshot restores on a fresh instance, a
suspended guest runs nothing, and ``migrate_to`` is the simplest
migration there is, stop-and-copy: every page, then the CPU state, across
the link it is given, after which the guest runs only on the target.
"""

from __future__ import annotations

from collections import Counter
from typing import ClassVar, Mapping

from popek.model.machine import Machine
from popek.model.migration import Link, MigrationReport
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
    capabilities: ClassVar[frozenset[str]] = frozenset({"snapshot", "suspend", "migration"})

    GUEST_AT = 0x2000  # host word where the guest's storage begins

    def __init__(self, host: Machine):
        super().__init__(host)
        self.cpu: Machine | None = None
        self.steps = 0
        self.guest_traps: Counter = Counter()
        self.suspended = False

    def load(self, image: Image, *, memsize: int) -> None:
        window = Window(self.host, self.GUEST_AT, memsize)
        self.cpu = Machine(self.host.profile, memsize, storage=window)
        self.cpu.load(image)  # clears the window, places the image, resets
        self.suspended = False

    def run(self, steps: int) -> GuestRun:
        if self.cpu is None or self.suspended:  # migrated away, or frozen: nothing runs
            return GuestRun(0, self.cpu is None or self.cpu.halted)
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
        if self.cpu is None or self.cpu.memsize != len(memory):  # a fresh instance: make the guest
            self.load(Image({}), memsize=len(memory))
        self.suspended = False
        for offset, word in enumerate(memory):
            self.cpu.M[offset] = word  # through the window, so decode caches stay exact
        self.cpu.S[:] = state
        self.cpu.out[:] = out
        self.cpu.flush()

    # -- the "suspend" capability -------------------------------------------
    def suspend(self) -> None:
        self.suspended = True

    def resume(self) -> None:
        self.suspended = False

    # -- the "migration" capability: stop-and-copy -------------------------
    def migrate_to(self, target: "ToyVMM", link: Link) -> MigrationReport:
        size, n = self.host.arch.page_size, self.cpu.memsize
        target.load(Image({}), memsize=n)  # an empty guest of the same size
        time = 0
        for lo in range(0, n, size):  # every page crosses the link
            words = self.host.M[self.GUEST_AT + lo : self.GUEST_AT + min(n, lo + size)]
            time += link.send_page(lo // size, words)
            target.cpu.M[lo : lo + len(words)] = words
        state, out = list(self.cpu.S), list(self.cpu.out)
        time += link.send_state(len(state) + len(out))  # then the CPU state
        target.cpu.S[:], target.cpu.out[:] = state, out
        target.cpu.flush()
        self.cpu = None  # the guest runs on the target only
        pages = -(-n // size)
        return MigrationReport(rounds=0, pages_per_round=[pages], words_sent=link.words, guest_words=n,
                               page_words=size, downtime=time, total_time=time, guest_steps=0,
                               stopped_by="stop-and-copy")  # fmt: skip
