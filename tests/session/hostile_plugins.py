"""Hostile and broken VMM plug-ins: one small class per row of the bad-input
matrix (issue 15).  Each is the shipped emulator with one method made to
misbehave, so that the row tests nothing but that misbehaviour.

`test_hostile_plugins.py` runs each through ``popek check``, ``popek fuzz``
or ``popek run`` in a subprocess.  Plug-ins that misbehave when imported
are modules of their own, written by the test (`IMPORT_ROWS`).
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

from popek.model.vmms.emulator import Emulator
from popek.vmm import Counters, GuestState


class _Once(Emulator):
    """Misbehaves in the first ``run`` with at least one step to take."""

    def run(self, steps: int):
        if steps:
            self.misbehave()
        return super().run(steps)

    def misbehave(self) -> None:
        raise NotImplementedError


# -- it never comes back ----------------------------------------------------------
class Loops(_Once):
    name = "loops"

    def misbehave(self) -> None:
        while True:
            pass


class Sleeps(_Once):
    name = "sleeps"

    def misbehave(self) -> None:
        time.sleep(3600)


class SwallowsAlarm(_Once):
    """The issue's "Done when": SIGALRM swallowed, then a wait that uses no
    processor time (so SIGPROF never comes either)."""

    name = "swallows-sigalrm"

    def misbehave(self) -> None:
        signal.signal(signal.SIGALRM, lambda *a: None)
        time.sleep(3600)


class IgnoresProf(_Once):
    """SIGPROF ignored, and a loop that burns processor time."""

    name = "ignores-sigprof"

    def misbehave(self) -> None:
        signal.signal(signal.SIGPROF, signal.SIG_IGN)
        while True:
            pass


class SwallowsEverySignal(_Once):
    name = "swallows-every-signal"

    def misbehave(self) -> None:
        for s in (signal.SIGALRM, signal.SIGPROF, signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        while True:
            pass


class BlocksSignals(_Once):
    name = "blocks-signals"

    def misbehave(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGPROF, signal.SIGINT})
        time.sleep(3600)


class CatchesEverything(_Once):
    """Sleeps, catching every exception the guard's alarms raise."""

    name = "catches-everything"

    def misbehave(self) -> None:
        while True:
            try:
                time.sleep(3600)
            except BaseException:  # noqa: BLE001 - that is the point
                pass


# -- it ends the process ----------------------------------------------------------
class SysExit(_Once):
    name = "sys-exit"

    def misbehave(self) -> None:
        raise SystemExit(0)


class OsExit(_Once):
    name = "os-exit"

    def misbehave(self) -> None:
        os._exit(3)


class KillsItself(_Once):
    name = "kills-itself"

    def misbehave(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class KeyboardInterrupts(_Once):
    name = "keyboard-interrupt"

    def misbehave(self) -> None:
        raise KeyboardInterrupt


class ExhaustsMemory(_Once):
    name = "exhausts-memory"

    def misbehave(self) -> None:
        hoard = []
        while True:
            hoard.append(bytearray(64 << 20))


# -- its errors are broken ------------------------------------------------------------
class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


class UnprintableError(_Once):
    name = "unprintable-error"

    def misbehave(self) -> None:
        raise _Unprintable()


class RaisingFinalizer(Emulator):
    name = "raising-finalizer"

    def __del__(self) -> None:
        raise ValueError("finalizer failed")


# -- it breaks the contract -----------------------------------------------------------
class CountersDoNotAddUp(Emulator):
    name = "counters-do-not-add-up"

    def counters(self) -> Counters:
        c = super().counters()
        return Counters(c.direct, c.emulated + 1, Counter(c.traps), c.vmm_entries, Counter(c.extra))


class NegativeCounters(Emulator):
    name = "negative-counters"

    def counters(self) -> Counters:
        c = super().counters()
        return Counters(c.direct, c.emulated, Counter(c.traps), -1, Counter(c.extra))


class WrongStorageLength(Emulator):
    name = "wrong-storage-length"

    def guest_state(self) -> GuestState:
        s = super().guest_state()
        return GuestState(s.regs, s.memory[:-1], s.out)


class BadReserved(Emulator):
    name = "bad-reserved"

    def reserved(self):
        return [0x10, 0x20]


class RunsTooFar(Emulator):
    name = "runs-too-far"

    def run(self, steps: int):
        r = super().run(steps)
        return type(r)(r.steps + 1, r.halted) if steps else r


# -- it goes around the host's storage ------------------------------------------------------
class _AfterRun(Emulator):
    """Does something to the host after every run of at least one step."""

    def run(self, steps: int):
        r = super().run(steps)
        if steps:
            self.bypass()
        return r

    def bypass(self) -> None:
        raise NotImplementedError


class AssignsOutside(_AfterRun):
    """Assigns to host storage outside its allocation and reserved words."""

    name = "assigns-outside"

    def bypass(self) -> None:
        last = len(self.host.M) - 1
        self.host.M[last] = (self.host.M[last] + 1) & 0xFFFF


class WritesOutside(_AfterRun):
    """Writes outside its allocation through the host's own ``write``."""

    name = "writes-outside"

    def bypass(self) -> None:
        last = len(self.host.M) - 2
        self.host.write(last, self.host.M[last] + 1)


class ReplacesStorage(_AfterRun):
    """Replaces the host's storage object with a list of its own."""

    name = "replaces-storage"

    def bypass(self) -> None:
        if not getattr(self, "replaced", False):
            self.replaced = True
            self.host.M = list(self.host.M)


# -- well behaved: the control ------------------------------------------------------------
class Plain(Emulator):
    name = "plain"


# -- misbehaving when imported: each a module of its own (written by the test) -------------
IMPORT_ROWS = {
    "import_exits": "import os\nos._exit(4)\n",
    "import_sys_exit": "raise SystemExit(5)\n",
    "import_interrupts": "raise KeyboardInterrupt\n",
    "import_kills_itself": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
    "import_loops": "while True:\n    pass\n",
}
