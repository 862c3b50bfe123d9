"""VMM plug-ins that break the contract, one way each, for the tests.

Each is the emulator with one method spoiled, so that everything else works
and the failure seen is the planted one.  Loaded by the tests as
``broken_vmms:<Class>`` with this directory on sys.path, exactly as a user's
plug-in would be named on the command line.
"""

from __future__ import annotations

import itertools
from collections import Counter

from popek.model.vmms.emulator import Emulator
from popek.vmm import Counters, GuestRun, GuestState


class Raises(Emulator):
    name = "raises"

    def run(self, steps: int) -> GuestRun:
        raise RuntimeError("the virtual CPU caught fire")


class Loops(Emulator):
    name = "loops"

    def run(self, steps: int) -> GuestRun:
        while True:
            pass


class WrongType(Emulator):
    name = "wrong-type"

    def run(self, steps: int) -> GuestRun:
        super().run(steps)
        return {"steps": steps}  # type: ignore[return-value]


class CountsWrong(Emulator):
    name = "counts-wrong"

    def counters(self) -> Counters:
        c = super().counters()
        return Counters(c.direct + 1, c.emulated, c.traps, c.vmm_entries, c.extra)


class BadState(Emulator):
    name = "bad-state"

    def guest_state(self) -> GuestState:
        s = super().guest_state()
        regs = dict(s.regs)
        del regs["ptbr"]
        return GuestState(regs, s.memory, s.out)


_instances = itertools.count()


class Nondeterministic(Emulator):
    """Keeps state outside the VMM object: each instance sees a different guest."""

    name = "nondeterministic"

    def load(self, image, *, memsize: int) -> None:
        super().load(image, memsize=memsize)
        self.vcpu.S[5] = next(_instances)  # r5: no workload writes it


class ForgetfulSnapshot(Emulator):
    name = "forgetful-snapshot"

    def restore(self, snap) -> None:
        pass  # declares the capability, does not keep its promise


class NotAVMM:
    name = "not-a-vmm"


class TrapsUncounted(Emulator):
    """Counts no steps at all: direct + emulated never grows."""

    name = "traps-uncounted"

    def counters(self) -> Counters:
        return Counters(0, 0, Counter(), 0, Counter())


class ShortMemory(Emulator):
    """guest_state() drops half of guest storage."""

    name = "short-memory"

    def guest_state(self):
        s = super().guest_state()
        return GuestState(s.regs, s.memory[: len(s.memory) // 2], s.out)


class NeverHalts(Emulator):
    """Counts a halted guest's idle cycles as steps and never reports the halt."""

    name = "never-halts"

    def run(self, steps):
        r = super().run(steps)
        self.counts.emulated += steps - r.steps
        return GuestRun(steps, False)


class SwallowsTimeouts(Emulator):
    """Loops, swallowing every exception, even the guard's (a bare except)."""

    name = "swallows-timeouts"

    def run(self, steps):
        swallowed = 0
        while swallowed < 3:
            try:
                while True:
                    pass
            except BaseException:  # noqa: BLE001 - the misbehaviour under test
                swallowed += 1
        while True:
            pass


class Sleeps(Emulator):
    """Blocks without using the processor: the guard's wall-clock limit (a
    multiple of its processor-time limit) must still end the call."""

    name = "sleeps"

    def run(self, steps):
        import time

        time.sleep(3600)
