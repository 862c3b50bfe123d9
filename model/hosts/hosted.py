"""Type 2: a host operating system between the hardware and the VMM.

On a type 1 host a trap of the guest enters the VMM at once (the host
machine's trap hook is `SoftwareVMM.on_host_trap`).  On a type 2 host the
VMM is a process of a host operating system, and the hardware delivers
the trap to that OS: P&G's mechanism saves the old PSW and loads the
kernel's new PSW, the kernel's handler runs on the host machine, and only
then does the VMM process hear of the trap, through a message the kernel
wrote.  `hosted` makes any software design a type 2 one without changing
it: the trap goes through `HostOS.deliver` first, and the design receives
the cause and info *as the kernel's message says*, so a kernel that
garbles them breaks fidelity where popek can see it.

The kernel is real code: ``examples/host_os/host_os.s``, assembled for the
host's profile and placed in the design's reserved words below
`KERNEL_END`.  It runs on the host's storage and profile, on a second
`Machine` over the same storage that stands for the host CPU in kernel
context: the guest's context stays in the host machine, as a real kernel
keeps it while the VMM process handles the signal.  (Our machine has no
kernel stack to spill the trapped registers on, so the spill and refill a
real kernel does around its handler is not run and not counted: the
figures are a lower bound.)  The trap mechanism of this machine keeps
the page-table base, and a design with shadow tables runs its guest paged;
a real kernel would be mapped into every shadow table, and popek runs it
with paging off instead, which its R confines to its own words.  Every step the kernel runs, from its entry to
its upcall, is counted in the design's counters as ``host_os_steps``, and
each delivery as ``host_os_traps``; `popek.fuzz.host_types` and
``bench/hosts_bench.py`` report them against type 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from popek.model.machine import Machine
from popek.spec.asm import assemble
from popek.spec.state import PC, PTBR, Cause

from ..vmms.base import SoftwareVMM

DEFAULT_HOST_OS = Path(__file__).resolve().parents[2] / "examples" / "host_os" / "host_os.s"

KERNEL_END = 0x400  # the kernel's words are [0, KERNEL_END); the designs' tables start here
MSG = 0x1C0  # the kernel's message: cause, info, pc that trapped, sequence number
UPCALL, PANIC = 1, 2  # the kernel's `sys` numbers
MAX_KERNEL_STEPS = 1000  # a handler that runs longer than this is a kernel that hangs


class HostOSError(RuntimeError):
    """The host kernel did not pass a trap on (it panicked, faulted or hung)."""


class HostOS:
    """A host operating system's kernel installed in a host's low words."""

    def __init__(self, host: Machine, source: str) -> None:
        """Assemble ``source`` for the host's profile and install it."""
        image = assemble(source, host.profile)
        outside = [a for a in image.words if not 0 <= a < KERNEL_END]
        if outside:
            raise HostOSError(f"the host kernel must fit below {KERNEL_END:#x}: it has a word at {outside[0]:#x}")
        self.host = host
        for addr, word in sorted(image.words.items()):
            host.write(addr, word)
        # the host CPU in kernel context: the same profile and storage
        self.cpu = Machine(host.profile, host.memsize, storage=host.M)
        self.steps = 0  # kernel steps run, in all
        self.traps = 0  # traps delivered
        self._upcall: tuple[int, int] | None = None

    def deliver(self, context: list[int], cause: int, info: int) -> tuple[int, int, int]:
        """Run the kernel on a trap the CPU took in ``context`` (the host's
        state vector at the trap); returns the (cause, info) of the
        kernel's message and the kernel steps it took."""
        cpu = self.cpu
        cpu.S[:] = context
        cpu.S[PTBR] = 0  # see the module docstring: the kernel runs unmapped
        cpu.trap(cause, info)
        self._upcall = None
        result = cpu.run(MAX_KERNEL_STEPS, self._on_kernel_trap)
        if self._upcall is None:
            how = "halted" if result.halted else f"ran {MAX_KERNEL_STEPS} steps"
            raise HostOSError(f"the host kernel did not pass trap {cause} on: it {how} without its upcall")
        kind, why = self._upcall
        if kind != Cause.SYSCALL or why != UPCALL:
            at = cpu.S[PC]
            raise HostOSError(f"the host kernel stopped with cause {kind} ({why:#x}) at pc {at:#x}, not its upcall")
        self.steps += result.steps
        self.traps += 1
        M = self.host.M
        return M[MSG], M[MSG + 1], result.steps

    def _on_kernel_trap(self, machine: Machine, cause: int, info: int) -> bool:
        self._upcall = (cause, info)
        return True


class Hosted:
    """Mixin: a `SoftwareVMM` design as the process of a host OS (type 2).

    Use `hosted(Design)`; every host trap passes through the kernel."""

    host_type: ClassVar[int] = 2
    host_os_source: ClassVar[str | None] = None  # None: examples/host_os/host_os.s

    def __init__(self, host: Machine) -> None:
        super().__init__(host)  # type: ignore[call-arg]
        source = self.host_os_source or DEFAULT_HOST_OS.read_text(encoding="utf-8")
        self.host_os = HostOS(host, source)

    def on_host_trap(self, host: Machine, cause: int, info: int) -> bool:
        """The hardware's trap goes to the host kernel; the VMM process gets
        the kernel's message."""
        cause, info, steps = self.host_os.deliver(host.S, cause, info)
        extra = self.counts.extra  # type: ignore[attr-defined]
        extra["host_os_steps"] += steps
        extra["host_os_traps"] += 1
        return super().on_host_trap(host, cause, info)  # type: ignore[misc]


_HOSTED: dict[type, type] = {}


def hosted(design: type[Any]) -> type[Any]:
    """``design`` run as a host OS's process: a type 2 host.  Only software
    designs, whose host traps all enter through `SoftwareVMM.on_host_trap`,
    can be hosted this way."""
    if not (isinstance(design, type) and issubclass(design, SoftwareVMM)):
        name = getattr(design, "name", getattr(design, "__name__", repr(design)))
        raise TypeError(
            f"{name}: a type 2 host routes traps through SoftwareVMM.on_host_trap; "
            "this design is not a SoftwareVMM"
        )
    if design.run is not SoftwareVMM.run:
        raise TypeError(
            f"{design.name}: its guests do not run through SoftwareVMM.run and on_host_trap "
            "(VM exits go to the design itself), so no host OS can be put in front of its traps"
        )
    if getattr(design, "host_type", 1) == 2:
        return design
    made = _HOSTED.get(design)
    if made is None:
        made = _HOSTED[design] = type(
            f"Hosted{design.__name__}",
            (Hosted, design),
            {"__doc__": f"{design.__name__} as a host OS's process (type 2).", "__module__": __name__},
        )
    return made
