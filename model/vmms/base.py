"""Plumbing every software VMM needs, written once.

A `SoftwareVMM` keeps a guest as P&G describe it: the guest's storage lives
inside host storage (its *allocation*), and the rest of the guest's state
lives in a *virtual CPU*: a spec `Machine` whose storage is a `Window` onto
the allocation.  Whenever the VMM must act for the guest (emulate an
instruction, take an interrupt, deliver a trap) it makes the virtual CPU do
it, so the spec's semantics are applied and never written a second time.

Host storage layout (host-physical words)::

    0 ............ guest_offset-1   reserved for the VMM (shadow tables, ...)
    guest_offset . +memsize-1       the guest's storage (guest-physical 0..)
    the rest                        untouched

While the guest runs *directly*, the host machine holds its live registers,
flags, PC and timer; the host runs in real user mode, with interrupts on and
paging off, and with the real R *composed* from the allocation and the
guest's virtual R (`real_r`), clipped so that the guest cannot reach outside
its allocation.  Every host trap enters the VMM through `on_host_trap`.  Out
of direct execution the virtual CPU holds everything; `pull` and `push`
move the live part between the two.

Subclasses choose *when* the guest may run directly (`direct_allowed`) and
*what* a host trap means (`handle_host_trap`); the default handling is
trap-and-emulate's:

- a timer interrupt on the host is the virtual timer expiring (the host
  timer mirrors the virtual one, and emulated steps tick the virtual timer
  through the virtual CPU's own step): the interrupt is taken by the
  virtual CPU if the guest has interrupts enabled, else left pending;
- a privileged instruction while the guest is in virtual supervisor mode is
  emulated: one step of the virtual CPU;
- anything else is the guest's own trap and is reflected: the virtual CPU's
  `trap()` stores the PSW the guest would have saved and loads the guest's
  new PSW.

Guest-step accounting is exact: every host step is either a guest
instruction retired directly, or a host trap; every host trap is followed
by at most one virtual-CPU step (a masked timer expiry by none).  So
``direct + emulated`` is always the number of guest steps run.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from popek.model.machine import BlockChooser, Machine, TrapHook
from popek.model.migration import Link, MigrationReport, precopy
from popek.model.window import Window
from popek.spec import state as st
from popek.spec.image import Image
from popek.spec.state import (
    BASE,
    BOUND,
    FLAGS,
    GUEST,
    HALTED,
    IE,
    MODE,
    PC,
    PEND,
    PTBR,
    SUPERVISOR,
    TIMER,
    USER,
    Cause,
)
from popek.vmm import GUEST_FIELDS, VMM, Counters, GuestRun, GuestState, cause_name

# The slots the host holds while the guest runs directly.  Everything else
# (mode, R, interrupt enable, page-table base, pending tick, halt) is the
# VMM's to keep in the virtual CPU; the host's own values there are the real
# resources, which the guest must never set.
LIVE_SLOTS = (*range(st.ARCH.nregs), PC, FLAGS, TIMER)

# Direct runs in a row that may end without a guest step before the VMM
# concludes the guest makes no progress (see `SoftwareVMM.run`).
IDLE_RUNS = 8


@dataclass(frozen=True)
class Layout:
    """Where a guest lives in host storage."""

    guest_offset: int  # host word holding guest-physical word 0
    memsize: int  # guest-physical words
    host_size: int  # host words

    def __post_init__(self) -> None:
        if self.guest_offset + self.memsize > self.host_size:
            raise ValueError(
                f"a guest of {self.memsize} words does not fit at host word "
                f"{self.guest_offset:#x} of {self.host_size}"
            )

    @property
    def allocation(self) -> range:
        return range(self.guest_offset, self.guest_offset + self.memsize)

    @property
    def reserved(self) -> range:
        return range(0, self.guest_offset)


@dataclass(frozen=True)
class Snapshot:
    """A whole guest, as `SoftwareVMM.snapshot` saves it."""

    state: tuple[int, ...]  # the virtual CPU's state vector
    memory: tuple[int, ...]  # guest-physical storage
    out: tuple[int, ...]
    extra: Any = None  # a design's own bookkeeping (`SoftwareVMM.save_extra`)


class SoftwareVMM(VMM):
    """Base of the software designs: allocation, virtual CPU, direct runs.

    A subclass sets ``name``, ``summary``, ``supports`` and overrides
    `direct_allowed` (default: never, which makes a pure interpreter) and,
    if its traps mean something else, `handle_host_trap`.

    For subclasses (the protected API; everything else with an underscore
    is this class's own and may change):

    - ``counts``: the live `Counters` (``counters()`` hands out copies);
      add to ``counts.direct``/``emulated``/``vmm_entries``/``extra`` so
      that ``direct + emulated`` stays the guest steps run;
    - ``traps_this_run``: host traps taken in the current `run_direct`
      (its host steps minus these are the direct guest steps);
    - ``vcpu_stale``, ``mark_vcpu_stale()`` (the guest ran on the host, so
      code the vCPU decoded may have changed), ``mark_vcpu_current()``
      (you flushed the vCPU yourself); `vcpu_ran_freely()`;
    - ``loaded_vcpu()``: the vCPU, or an error if no guest is loaded;
    - hooks: ``save_extra()``/``restore_extra(extra)`` (a design's own
      bookkeeping in a snapshot), `direct_allowed`, `handle_host_trap`,
      `interpret`, `guest_window` (the vCPU's storage: a design that logs
      dirty pages passes a logging window); helpers `emulate_step`,
      `reflect`, `run_direct`, `on_host_trap`, `push`, `pull`, `real_r`;
    - lifecycle (`popek.vmm.Lifecycle`): ``suspended``/``gone`` (a frozen
      guest, a guest migrated away: `run` runs nothing); for live
      migration a design adds a dirty log (`popek.model.migration.DirtyLog`)
      and declares "migration": `migrate_to` runs the pre-copy engine over
      `guest_words`, `outgoing_state`, `prepare_incoming`, `receive_words`,
      `accept_incoming`, `release_guest` and the hook `final_copy`.

    The old private names ``_counts``, ``_vcpu_stale``, ``_loaded`` and the
    hooks ``_save_extra``/``_restore_extra`` still work for plug-ins written
    against them, with a `DeprecationWarning`.
    """

    # Host word where guest-physical 0 lives; the words below are reserved
    # for the VMM.  Not 0, so that a guest reading the real R sees the
    # difference, as on real hardware.
    GUEST_OFFSET: ClassVar[int] = 0x1000
    capabilities: ClassVar[frozenset[str]] = frozenset({"snapshot", "suspend"})

    def __init__(self, host: Machine):
        super().__init__(host)
        self.layout: Layout | None = None
        self.vcpu: Machine | None = None
        self.counts = Counters()  # kept current; `counters` hands out copies
        self.traps_this_run = 0  # host traps in the current `run_direct`
        self._stale = False  # the guest ran directly since the vCPU last decoded
        # guest-physical page -> its words when the vCPU decoded code there;
        # None: unknown (the vCPU decoded under paging, or ran freely)
        self._code_pages: dict[int, list[int]] | None = {}
        self.suspended = False  # `suspend`: runs run nothing until `resume`
        self.gone = False  # the guest migrated away (`release_guest`)

    # -- the contract ----------------------------------------------------
    def load(self, image: Image, *, memsize: int) -> None:
        """Place the guest at `GUEST_OFFSET` and reset its virtual CPU."""
        self.layout = Layout(self.GUEST_OFFSET, memsize, len(self.host.M))
        window = self.guest_window(self.layout.guest_offset, memsize)
        self.vcpu = Machine(self.host.profile, memsize, storage=window)
        self.vcpu.load(image)
        self._stale = False
        self._code_pages = {}
        self.suspended = self.gone = False

    def guest_window(self, offset: int, memsize: int) -> Window:
        """Hook: the virtual CPU's storage, a window onto the allocation."""
        return Window(self.host, offset, memsize)

    def run(self, steps: int) -> GuestRun:
        """Alternate interpreted stretches and direct runs until ``steps``."""
        v = self.loaded_vcpu()
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        if self.suspended or self.gone:  # frozen, or no longer here (`popek.vmm.Lifecycle`)
            return GuestRun(0, bool(v.S[HALTED]))
        done = idle = 0
        while done < steps and not v.S[HALTED]:
            if self.runs_directly():
                n = self.run_direct(steps - done)
                done += n
                # an empty direct run is legitimate: a masked tick, or a fault
                # the VMM resolved without a guest step (a shadow entry filled),
                # took the host's steps; one instruction needs a few of those
                # (its two fetch words, its operand, a table); more in a row
                # mean a trap handler that makes no progress
                idle = 0 if n else idle + 1
                if idle > IDLE_RUNS:
                    raise RuntimeError(f"{self.name}: the guest makes no progress on the host")
            else:
                self.counts.vmm_entries += 1
                done += self.interpret(steps - done)
        return GuestRun(done, bool(v.S[HALTED]))

    def guest_state(self) -> GuestState:
        v = self.loaded_vcpu()
        regs = {st.FIELD_NAMES[i]: int(x) for i, x in enumerate(v.S)}
        return GuestState(
            {k: regs[k] for k in GUEST_FIELDS},
            tuple(self.host.M[r.start : r.stop]) if (r := self.allocation()) else (),
            tuple(int(w) for w in v.out),
        )

    def counters(self) -> Counters:
        c = self.counts
        return replace(c, traps=Counter(c.traps), extra=Counter(c.extra))

    def allocation(self) -> range:
        return self.layout.allocation if self.layout else range(0)

    def reserved(self) -> list[range]:
        return [self.layout.reserved] if self.layout else []

    # -- snapshot capability -----------------------------------------------
    def snapshot(self) -> Snapshot:
        """The whole guest; counters are not part of it (they count the VMM's life)."""
        v = self.loaded_vcpu()
        a = self.allocation()
        return Snapshot(tuple(v.S), tuple(self.host.M[a.start : a.stop]), tuple(v.out), self.save_extra())

    def restore(self, snap: Snapshot) -> None:
        """Put the guest of ``snap`` back: on this instance, or on a fresh
        one (no guest loaded, or one of another size), whose guest is then
        built first (`prepare_incoming`).  ``snap`` is checked whole before
        anything changes: a bad one leaves the VMM as it was."""
        mask = self.host.arch.mask
        if not isinstance(snap, Snapshot) or len(snap.state) != st.NSLOTS:
            raise ValueError("restore() needs a Snapshot taken by a design of this profile")
        if not 0 < len(snap.memory) <= len(self.host.M) - self.GUEST_OFFSET or not all(
            0 <= w <= mask for w in (*snap.memory, *snap.state, *snap.out)
        ):
            raise ValueError("restore(): the snapshot's storage or state does not fit this host")
        if self.vcpu is None or self.gone or self.vcpu.memsize != len(snap.memory):
            self.prepare_incoming(len(snap.memory))
        v = self.loaded_vcpu()
        n = v.memsize
        if self.guest_words(0, n) != list(snap.memory):  # one host write (decode caches stay exact)
            v.M[:n] = list(snap.memory)
        v.S[:] = snap.state
        v.out[:] = snap.out
        v.flush()
        self._code_pages = {}
        self.suspended = self.gone = False
        self.restore_extra(snap.extra)

    # -- suspend capability, and what migration (`popek.model.migration`) needs --
    def suspend(self) -> None:
        """Freeze the guest: the vCPU holds all of it, and runs run nothing."""
        self.loaded_vcpu()
        self.suspended = True

    def resume(self) -> None:
        self.loaded_vcpu()
        self.suspended = False

    def migrate_to(self, target: "SoftwareVMM", link: Link) -> MigrationReport:
        """Pre-copy live migration (`popek.model.migration.precopy`); needs
        the design's dirty log, so only designs that have one declare
        "migration".  ``link.max_rounds``: the round cap (0: stop-and-copy)."""
        if type(target) is not type(self):
            raise TypeError(f"migrate_to() needs a fresh {type(self).__name__}, got {type(target).__name__}")
        return precopy(self, target, link, max_rounds=link.max_rounds)

    def guest_memsize(self) -> int:
        return self.loaded_vcpu().memsize

    def guest_words(self, lo: int, hi: int) -> list[int]:
        """Guest-physical words [lo, hi), read from the host (what is sent)."""
        start = self.layout.guest_offset
        return self.host.M[start + lo : start + hi]

    def state_words(self) -> int:
        """Words of CPU state a migration sends (state vector and output log
        as they stand now, plus a word for the design's bookkeeping)."""
        v = self.loaded_vcpu()
        return len(v.S) + len(v.out) + 1

    def final_copy(self, last_round: set[int], since: set[int]) -> set[int]:
        """The pages stop-and-copy sends (`popek.model.migration.DirtyLog`)."""
        return last_round | since

    def outgoing_state(self) -> Snapshot:
        """The guest's CPU state, without storage (that went page by page)."""
        v = self.loaded_vcpu()
        return Snapshot(tuple(v.S), (), tuple(v.out), self.save_extra())

    def prepare_incoming(self, memsize: int) -> None:
        """Make room for a guest of ``memsize`` words that is coming in (a
        restore, a migration): an empty guest, loaded the design's own way."""
        self.load(Image({}, 0), memsize=memsize)

    def receive_words(self, lo: int, words: list[int]) -> None:
        """Guest-physical words from ``lo`` on, arriving over the link."""
        self.loaded_vcpu().M[lo : lo + len(words)] = list(words)

    def accept_incoming(self, state: Snapshot) -> None:
        """The CPU state arrived last: the guest runs here from now on."""
        v = self.loaded_vcpu()
        self.restore(Snapshot(state.state, tuple(self.guest_words(0, v.memsize)), state.out, state.extra))

    def release_guest(self) -> None:
        """The guest runs elsewhere now: nothing of it is kept here."""
        self.gone, self.suspended = True, False
        self.layout = None

    def save_extra(self) -> Any:
        """Hook: a design's own bookkeeping to keep in a snapshot."""
        return None

    def restore_extra(self, extra: Any) -> None:
        """Hook: called by `restore` after the guest is back (``extra`` is
        what `save_extra` returned)."""

    # -- the protected API's state ---------------------------------------------
    @property
    def vcpu_stale(self) -> bool:
        """Has the guest run on the host since the vCPU last decoded?"""
        return self._stale

    def mark_vcpu_stale(self) -> None:
        """The guest ran (or is about to run) on the host: before its next
        step the vCPU checks whether code it decoded has changed."""
        self._stale = True

    def mark_vcpu_current(self) -> None:
        """The vCPU's decodes are current (you flushed it yourself)."""
        self._stale = False

    def loaded_vcpu(self) -> Machine:
        """The virtual CPU; an error if no guest was loaded."""
        if self.vcpu is None:
            raise RuntimeError(f"{type(self).__name__}: load() a guest before running it")
        return self.vcpu

    # -- deprecated private names (plug-ins written before the protected API) ---
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for old, new in (("_save_extra", "save_extra"), ("_restore_extra", "restore_extra")):
            if old in cls.__dict__ and new not in cls.__dict__:
                warnings.warn(
                    f"{cls.__name__}.{old} is deprecated: override {new}",
                    DeprecationWarning,
                    stacklevel=2,
                )
                setattr(cls, new, cls.__dict__[old])

    @staticmethod
    def _deprecated(old: str, new: str) -> None:
        warnings.warn(f"SoftwareVMM.{old} is deprecated: use {new}", DeprecationWarning, stacklevel=3)

    @property
    def _counts(self) -> Counters:
        self._deprecated("_counts", "counts")
        return self.counts

    @_counts.setter
    def _counts(self, value: Counters) -> None:
        self._deprecated("_counts", "counts")
        self.counts = value

    @property
    def _vcpu_stale(self) -> bool:
        self._deprecated("_vcpu_stale", "vcpu_stale")
        return self._stale

    @_vcpu_stale.setter
    def _vcpu_stale(self, value: bool) -> None:
        self._deprecated("_vcpu_stale", "mark_vcpu_stale()/mark_vcpu_current()")
        self._stale = bool(value)

    def _loaded(self) -> Machine:
        self._deprecated("_loaded()", "loaded_vcpu()")
        return self.loaded_vcpu()

    def _save_extra(self) -> Any:
        self._deprecated("_save_extra()", "save_extra()")
        return SoftwareVMM.save_extra(self)

    def _restore_extra(self, extra: Any) -> None:
        self._deprecated("_restore_extra()", "restore_extra()")
        SoftwareVMM.restore_extra(self, extra)

    # -- policy: subclasses decide -------------------------------------------
    def direct_allowed(self) -> bool:
        """May the guest, in its current virtual state, run directly on the host?"""
        return False

    def runs_directly(self) -> bool:
        """`direct_allowed`, unless an interrupt is due (the vCPU takes it)
        or a vtx guest has itself entered guest mode (it is interpreted)."""
        S = self.vcpu.S
        if S[HALTED] or (S[PEND] and S[IE]) or S[GUEST]:
            return False
        return self.direct_allowed()

    def handle_host_trap(self, cause: int, info: int) -> None:
        """Trap-and-emulate's answer to a host trap (see the module docstring).
        The virtual CPU is current when this is called."""
        S = self.vcpu.S
        if cause == Cause.TIMER:
            S[PEND] = 1  # the virtual timer expired at this very guest instruction
            if S[IE]:
                self.emulate_step()
        elif cause == Cause.PRIVILEGED and S[MODE] == SUPERVISOR:
            self.counts.extra["emulated_privileged"] += 1
            self.emulate_step()
        else:
            self.reflect(cause, info)

    # -- interpreting ----------------------------------------------------------
    def interpret(self, budget: int) -> int:
        """Step the virtual CPU until the guest may run directly again (or
        ``budget`` steps, or halt).  Returns the guest steps run."""
        done = 0
        while done < budget and not self.runs_directly():
            n = self.emulate_step()
            if n == 0:
                break
            done += n
        return done

    def emulate_step(self) -> int:
        """One guest step in software, on the virtual CPU (spec semantics)."""
        v = self.vcpu
        self._refresh_vcpu()
        self._note_code_pages()
        n = v.step().steps
        self.counts.emulated += n
        return n

    def reflect(self, cause: int, info: int) -> None:
        """Deliver a trap to the guest as the bare machine would: the virtual
        CPU's trap mechanism saves the guest's old PSW in guest storage and
        loads the guest's new PSW.  One guest step."""
        self.vcpu.trap(cause, info)
        self.counts.emulated += 1
        self.counts.extra["reflected"] += 1

    def _refresh_vcpu(self) -> None:
        """Drop the vCPU's cached decodes if the guest, running directly,
        may have rewritten code the vCPU decoded.  Decoding is most of an
        emulated step's cost, so the check compares the pages the vCPU
        decoded from (usually one) with what they held then."""
        if not self._stale:
            return
        self._stale = False
        pages, M, off = self._code_pages, self.host.M, self.layout.guest_offset
        size = self.vcpu.arch.page_size
        if pages is not None and all(
            M[off + page * size : off + page * size + size] == words for page, words in pages.items()
        ):
            return
        self.vcpu.flush()
        self._code_pages = {}

    def _note_code_pages(self) -> None:
        """Remember the page(s) the next vCPU step fetches from (paging off:
        guest-physical base + pc and base + pc + 1)."""
        pages, v = self._code_pages, self.vcpu
        if pages is None:
            return
        S, arch = v.S, v.arch
        if S[PTBR]:  # the decode depends on page-table entries too: give up until a flush
            self._code_pages = None
            return
        size = arch.page_size
        for a in (S[BASE] + S[PC], S[BASE] + S[PC] + 1):
            a &= arch.mask
            page = a >> arch.page_bits
            if a < v.memsize and page not in pages:
                start = self.layout.guest_offset + page * size
                pages[page] = self.host.M[start : start + size]

    def vcpu_ran_freely(self) -> None:
        """Call after running the vCPU other than through `emulate_step`
        (its decodes are then not tracked; the next direct run's return
        flushes them)."""
        self._code_pages = None

    # -- running directly --------------------------------------------------------
    def real_r(self) -> tuple[int, int]:
        """The host R for the guest's virtual R = (base b, bound l).

        Guest-virtual address a is legal on the bare machine when a < l and
        b + a < memsize; it then names guest-physical b + a, which is host
        word offset + b + a.  So the real base is offset + b and the real
        bound is min(l, memsize - b): the host's bounds check then traps
        (MEMORY, same address) exactly where the guest's would, and no
        address outside the allocation is ever reachable."""
        S, lay = self.vcpu.S, self.layout
        b, l = S[BASE], S[BOUND]
        if b >= lay.memsize:
            return lay.guest_offset, 0
        return lay.guest_offset + b, min(l, lay.memsize - b)

    def push(self) -> None:
        """Make the host hold the guest's live state, ready to run directly."""
        H, V = self.host.S, self.vcpu.S
        for i in LIVE_SLOTS:
            H[i] = V[i]
        H[BASE], H[BOUND] = self.real_r()
        H[MODE] = USER
        H[IE] = 1  # the host keeps interrupts on: the VMM always regains control
        H[PTBR] = 0
        H[PEND] = 0  # a due interrupt is never left to the host (`runs_directly`)
        H[HALTED] = 0

    def pull(self) -> None:
        """Bring the guest's live state back from the host into the vCPU."""
        H, V = self.host.S, self.vcpu.S
        for i in LIVE_SLOTS:
            V[i] = H[i]
        if H[PEND]:  # the timer ran out on the last direct instruction; not yet taken
            V[PEND] = 1
            H[PEND] = 0

    def run_direct(
        self, budget: int, *, blocks: BlockChooser | None = None, on_trap: TrapHook | None = None
    ) -> int:
        """Run the guest on the host in real user mode, at most ``budget``
        guest steps; host traps go to `on_host_trap` (or ``on_trap``), and
        ``blocks``, if given, chooses the host's blocks (`Machine.blocks`).
        Returns guest steps."""
        host = self.host
        self.push()
        self.traps_this_run = 0
        steps_before = self.counts.emulated
        self._stale = True  # the guest may rewrite code the vCPU decoded
        host.blocks = blocks  # None: the machine makes its own blocks
        result = host.run(budget, on_trap or self.on_host_trap)
        if not result.stopped:  # else the hook left the vCPU current
            self.pull()
        direct = result.steps - self.traps_this_run
        self.counts.direct += direct
        return direct + (self.counts.emulated - steps_before)

    def on_host_trap(self, host: Machine, cause: int, info: int) -> bool:
        """The host's trap hook: the VMM entered.  Returns True to stop the
        direct run (the guest must be interpreted, or has halted)."""
        c = self.counts
        c.vmm_entries += 1
        c.traps[cause_name(cause)] += 1
        self.traps_this_run += 1
        self.pull()
        self.handle_host_trap(cause, info)
        if not self.runs_directly():
            return True
        self.push()
        self._stale = True  # the host is about to run the guest again
        return False

