"""The VMM plug-in contract: what popek needs from a virtual machine monitor.

A VMM is a Python class.  popek builds a *host* `Machine` (the real hardware,
of the profile under test, with all 2**word words of storage) and hands it to
the VMM's constructor.  Then, for each guest:

1. ``load(image, memsize=...)``: place the guest image in guest-physical
   storage of ``memsize`` words and reset the virtual CPU as the bare machine
   resets (supervisor mode, R = (0, memsize), PC = image.entry, all else 0).
   A design that cannot host this guest raises `GuestRefused`.
2. ``run(steps)``: run the guest for at most ``steps`` *guest steps* or until
   the guest halts; return a `GuestRun`.  A guest step is what the bare
   machine counts: one guest instruction retired, one guest instruction
   trapped (the trap delivered to the guest), or one interrupt taken.  Two
   calls ``run(a); run(b)`` must end where one ``run(a + b)`` does.
3. ``guest_state()``: the `GuestState` the guest would see: what fidelity
   compares with the bare machine after the same number of steps.
4. ``counters()``: a `Counters` value for the whole life of the VMM.
5. ``allocation()``: the host-physical words the VMM gave the guest, and
   ``reserved()``: host words the VMM keeps for itself.  Safety checks that
   the guest never changes host storage outside both.

Everything else is declared, not assumed: the class attributes ``name``,
``summary``, ``supports`` (profile name -> `Support`: whether the design is
expected to be faithful and efficient there, and why) and ``capabilities``
(a subset of `CAPABILITIES`; each one names the methods it promises).

The VMM may use the host however it likes (run it with a trap hook, set its
registers, write its storage through ``host.write``), but must not keep
state outside the VMM object and the host: popek may build many instances.

Refinements (same version, nothing removed): a ``run`` on a guest that
has already halted returns ``GuestRun(0, True)`` and changes nothing; the
"snapshot" capability's ``snapshot()`` returns an opaque value that
``restore(snap)`` on the same instance accepts, putting the guest (state,
storage, output log) back exactly so that the same runs replay the same
future; counters are not rolled back (they count the VMM's whole life).
What the lifecycle capabilities (snapshot, suspend, migration) promise,
exactly, is `Lifecycle`'s docstring.
Shared plumbing for designs that run the guest directly is in
``popek.model.vmms.base.SoftwareVMM``; docs/writing-a-vmm.md walks through
a complete plug-in.

This contract is versioned by `CONTRACT_VERSION`; it changes only with a
deprecation period.  ``popek.conformance.check_vmm`` checks a class against
it and is meant to be called from a VMM author's own test suite.
"""

from __future__ import annotations

import abc
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Protocol

from popek.spec import state as st
from popek.spec.image import Image

if TYPE_CHECKING:
    from popek.model.machine import Machine

CONTRACT_VERSION = 1

# Optional capabilities and the methods each one promises.
CAPABILITIES: Mapping[str, tuple[str, ...]] = {
    # save the whole guest (virtual CPU, guest storage, VMM bookkeeping) and
    # put it back later, on this instance or a fresh one (`Lifecycle`)
    "snapshot": ("snapshot", "restore"),
    # freeze the guest where it stands and let it go on later (`Lifecycle`)
    "suspend": ("suspend", "resume"),
    # several guests on one host; `run` and `guest_state` act on the selected one
    "multi-guest": ("add_guest", "select_guest", "guests"),
    # move a running guest to a fresh VMM on another host (`Lifecycle`)
    "migration": ("migrate_to",),
}


VIRTUAL_MODES = frozenset({"user", "supervisor"})


@dataclass(frozen=True)
class Support:
    """What a design expects on one profile (the verdict table's "expected").

    An *efficient* design runs every innocuous instruction the guest
    executes directly on the host; ``direct_modes`` says in which of the
    guest's virtual modes it promises that (trap-and-emulate: both; a
    hybrid VMM, which interprets its guest's kernel: ``{"user"}``), and
    ``direct_paged`` whether also while the guest's own paging is on.
    popek checks the promise from the host's record, never from counters.
    A plug-in written before these fields existed leaves ``direct_modes``
    None: both modes are assumed, and `popek check` says so (a deprecation
    notice: declare it)."""

    faithful: bool
    efficient: bool
    reason: str = ""
    direct_modes: frozenset[str] | None = None
    direct_paged: bool = True

    def __post_init__(self) -> None:
        if self.direct_modes is not None:
            modes = frozenset(self.direct_modes)
            if not modes or not modes <= VIRTUAL_MODES:
                raise ValueError(f"Support.direct_modes must be a non-empty subset of {sorted(VIRTUAL_MODES)}")
            object.__setattr__(self, "direct_modes", modes)

    @property
    def modes(self) -> frozenset[str]:
        """The virtual modes the efficiency promise covers."""
        return VIRTUAL_MODES if self.direct_modes is None else self.direct_modes

    def promise(self) -> str:
        """The efficiency declaration, as the verdict table prints it."""
        if not self.efficient:
            return "not efficient"
        scope = [] if self.modes == VIRTUAL_MODES else [f"{'/'.join(sorted(self.modes))} mode"]
        if not self.direct_paged:
            scope.append("paging off")
        return "efficient" + (f" ({', '.join(scope)})" if scope else "")


@dataclass(frozen=True)
class GuestRun:
    steps: int  # guest steps actually run
    halted: bool


# The guest-visible registers, in the order they are compared and printed.
GUEST_FIELDS = (
    *(st.FIELD_NAMES[i] for i in range(8)),
    "pc",
    "flags",
    "ie",
    "mode",
    "base",
    "bound",
    "ptbr",
    "timer",
    "pend",
    "halted",
)


@dataclass(frozen=True)
class GuestState:
    """Everything fidelity compares: registers, flags as the guest would read
    them, mode, R, page-table base, timer, guest storage and the output log."""

    regs: Mapping[str, int]  # name -> value, for every name in GUEST_FIELDS
    memory: tuple[int, ...]  # guest-physical storage, memsize words
    out: tuple[int, ...]

    @classmethod
    def from_machine(cls, machine: "Machine") -> "GuestState":
        """The state of a bare machine, seen as a guest."""
        regs = {st.FIELD_NAMES[i]: int(v) for i, v in enumerate(machine.S)}
        return cls(
            {k: regs[k] for k in GUEST_FIELDS},
            tuple(machine.M[: machine.memsize]),
            tuple(int(v) for v in machine.out),
        )

    def validate(self) -> None:
        """Raise TypeError if a plug-in built this value wrongly."""
        if not isinstance(self.regs, Mapping) or set(self.regs) != set(GUEST_FIELDS):
            raise TypeError(f"GuestState.regs must map exactly {GUEST_FIELDS}")
        for k, v in self.regs.items():
            if not isinstance(v, int):
                raise TypeError(f"GuestState.regs[{k!r}] is {type(v).__name__}, not int")
        if not isinstance(self.memory, tuple) or not _all_ints(self.memory):
            raise TypeError("GuestState.memory must be a tuple of ints")
        if not isinstance(self.out, tuple) or not _all_ints(self.out):
            raise TypeError("GuestState.out must be a tuple of ints")

    def differences(self, other: "GuestState", limit: int = 20) -> list[tuple[str, Any, Any]]:
        """Fields where the two states differ: (name, self's value, other's)."""
        diffs: list[tuple[str, Any, Any]] = []
        for k in GUEST_FIELDS:
            a, b = int(self.regs[k]), int(other.regs[k])
            if a != b:
                diffs.append((k, a, b))
        if len(self.memory) != len(other.memory):
            diffs.append(("memsize", len(self.memory), len(other.memory)))
        if self.memory != other.memory:  # else (the usual case) no word-by-word loop
            for addr, (a, b) in enumerate(zip(self.memory, other.memory)):
                if a != b:
                    diffs.append((f"mem[{addr:#06x}]", a, b))
                    if len(diffs) >= limit:
                        break
        if tuple(self.out) != tuple(other.out):
            diffs.append(("out", list(self.out), list(other.out)))
        return diffs


@dataclass
class Counters:
    """What a VMM did.  ``direct + emulated`` must equal the guest steps run."""

    # guest instructions the host executed directly, in real user mode,
    # with no VMM code in between
    direct: int = 0
    # guest steps the VMM carried out in software: instructions emulated,
    # interpreted or translated, traps and interrupts reflected to the guest
    emulated: int = 0
    # traps the host took while running the guest, by cause name
    traps: Counter = field(default_factory=Counter)
    # times control entered the VMM
    vmm_entries: int = 0
    # design-specific counts: translations, hypercalls, VM exits, shadow faults...
    extra: Counter = field(default_factory=Counter)

    @property
    def guest_steps(self) -> int:
        return self.direct + self.emulated

    @property
    def efficiency(self) -> float:
        """Share of guest steps executed directly (P&G's efficiency)."""
        return self.direct / self.guest_steps if self.guest_steps else 1.0

    def validate(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("traps", "extra"):
                if not isinstance(v, Mapping) or not all(
                    isinstance(k, str) and isinstance(n, int) and n >= 0 for k, n in v.items()
                ):
                    raise TypeError(f"Counters.{f.name} must map str to non-negative int")
            elif not isinstance(v, int) or v < 0:
                raise TypeError(f"Counters.{f.name} must be a non-negative int, got {v!r}")

    def as_dict(self) -> dict:
        return {
            "direct": self.direct,
            "emulated": self.emulated,
            "guest_steps": self.guest_steps,
            "efficiency": round(self.efficiency, 4),
            "traps": dict(self.traps),
            "vmm_entries": self.vmm_entries,
            **{f"extra.{k}": v for k, v in sorted(self.extra.items())},
        }


def cause_name(cause: int) -> str:
    name = _CAUSE_NAMES.get(cause)
    if name is not None:
        return name
    try:
        return st.Cause(cause).name.lower()
    except ValueError:
        return f"cause{cause}"


_CAUSE_NAMES = {int(c): c.name.lower() for c in st.Cause}  # every trap asks


def _all_ints(words: tuple) -> bool:
    """Every element is an int; checked by type first (one pass in C), by
    isinstance only when some element is not exactly an int."""
    return set(map(type, words)) <= {int} or all(isinstance(w, int) for w in words)


class GuestRefused(Exception):
    """Raised by ``load()`` when a design cannot host this guest at all (a
    paravirtualizing pass that cannot rewrite it safely, say).  popek reports
    it as a refusal with this message: neither a fidelity failure nor a
    plug-in crash.  Subclass it for your own reasons."""


class VMM(abc.ABC):
    """Base class of every VMM plug-in.  See the module docstring."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    supports: ClassVar[Mapping[str, Support]]
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, host: "Machine"):
        self.host = host

    @abc.abstractmethod
    def load(self, image: Image, *, memsize: int) -> None:
        """Place the guest and reset its virtual CPU."""

    @abc.abstractmethod
    def run(self, steps: int) -> GuestRun:
        """Run at most ``steps`` guest steps, or to guest halt."""

    @abc.abstractmethod
    def guest_state(self) -> GuestState:
        """What the guest sees now."""

    @abc.abstractmethod
    def counters(self) -> Counters:
        """Counts since the VMM was built."""

    @abc.abstractmethod
    def allocation(self) -> range:
        """Host-physical words holding guest-physical storage."""

    def reserved(self) -> list[range]:
        """Host-physical words the VMM uses for itself (shadow tables, ...)."""
        return []


class Lifecycle(Protocol):
    """What the lifecycle capabilities promise.  `popek check` tests each one
    a class declares, interleaved with guest runs at arbitrary steps, against
    a bare machine that was never interrupted (`popek.fuzz.stateful`).

    ``snapshot() -> snap`` / ``restore(snap)`` ("snapshot"): ``snap`` is the
    whole guest (virtual CPU, guest storage, output log, the VMM's
    bookkeeping about it), taken between two ``run`` calls at any step (a
    trap just delivered, a migration's dirty log running, included).
    ``restore(snap)`` puts exactly that guest back, on the instance that took
    it *or on a fresh instance of the same class, on a fresh host of the
    same profile, with no guest loaded*: from there the same runs give the
    same guest states as if the snapshot had never been taken.  ``snap``
    must survive `pickle` (popek writes it to a snapshot file:
    docs/lifecycle.md) and share nothing mutable with the VMM (later runs do
    not change it).  Counters are not rolled back.

    ``suspend()`` / ``resume()`` ("suspend"): ``suspend`` freezes the guest
    where it stands.  While it is suspended, ``run(n)`` runs no guest step
    (it returns ``GuestRun(0, halted)``) and ``guest_state()`` is the frozen
    guest; ``resume`` lets it go on exactly as if it had never stopped.  A
    snapshot of a suspended guest restores a running one.

    ``migrate_to(target, link) -> MigrationReport`` ("migration"):
    ``target`` is a fresh instance of the same class on another host of the
    same profile, with no guest loaded; ``link`` a
    `popek.model.migration.Link`.  The call moves the guest: every guest
    page the target holds, and the CPU state, crosses the link
    (``link.send_page(page, words)`` carries a page's words,
    ``link.send_state(n)`` counts ``n`` words of state; each returns the
    guest steps the send takes at the link's bandwidth), never more than
    ``link.cap`` words in all.  The guest may run on the source while
    pages are in flight (pre-copy); the report's ``guest_steps`` says how
    many guest steps it ran there.  When the call returns the guest runs on
    the target (its ``guest_state()`` is the guest after those steps, and
    the target host's storage holds, at the target's ``allocation()``, each
    page as it last crossed the link) and no longer on the source (the source's
    ``allocation()`` is empty and its ``run(n)`` runs no guest step).
    `popek.model.migration.precopy` is an engine a design can use; it asks
    only for the design's dirty-page tracking.
    """

    def snapshot(self) -> Any: ...

    def restore(self, snap: Any) -> None: ...

    def suspend(self) -> None: ...

    def resume(self) -> None: ...

    def migrate_to(self, target: "VMM", link: Any) -> Any: ...
