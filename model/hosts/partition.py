"""Type 0: partitioning.  Each guest owns a CPU and a range of storage.

    host storage   0 ......... FIRST-1          the partition manager's (unused at run time)
                   [b1, b1 + n1)                 guest 1's partition: CPU 1, register (b1, n1)
                   [b2, b2 + n2)                 guest 2's partition: CPU 2, register (b2, n2)
                   ...                           (first fit, page aligned)

The partition manager runs once, before the guests: it places each guest's
image in its range, loads that CPU's partition register
(`Machine.set_partition`, the `partition` feature of ``spec/partition.py``)
and resets the CPU to the image's entry in supervisor mode.  From then on
it does nothing at all: `run` runs the guest's CPU with no trap hook, so
every trap, privileged instruction and timer interrupt is the guest's own,
taken by the P&G mechanism inside its partition.  The guest's kernel runs
in real supervisor mode, and no instruction is emulated.  Isolation is the
hardware's: whatever R the guest loads, a physical address beyond its
partition names no storage.

What a partitioned host cannot do is what nothing virtualizes: it cannot
give a guest more CPUs than it has (one guest per CPU, no overcommit),
and the partition register itself is no guest's to use (no instruction
sets it), so a partitioned guest cannot partition its own guests.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from popek.model.machine import Machine, RunResult
from popek.spec import state as st
from popek.spec.image import Image
from popek.spec.partition import partitioned
from popek.spec.profiles import Profile
from popek.vmm import GUEST_FIELDS, GuestState

FIRST = 0x1000  # the lowest partition's first host word


@dataclass
class Partition:
    gid: int
    base: int  # host word of the guest's physical word 0
    size: int  # the guest's words
    cpu: Machine  # its own CPU; census counts every step it runs, by mode

    @property
    def allocation(self) -> range:
        return range(self.base, self.base + self.size)


class PartitionManager:
    """A type 0 host over one storage: a CPU and a partition per guest."""

    def __init__(self, profile: Profile, *, storage: list[int] | None = None) -> None:
        """``profile``: the guests' instruction set (the partition feature is
        added); ``storage``: the host's words (2**word of them; by default
        zeros), given so that a checker can fill it with a canary first."""
        self.profile = partitioned(profile)
        size = 1 << self.profile.arch.word
        self.storage = [0] * size if storage is None else storage
        if len(self.storage) != size:
            raise ValueError(f"host storage must have {size} words")
        self.host_words = size - self.profile.arch.page_size  # the all-ones word must not exist
        self.partitions: dict[int, Partition] = {}
        self.next_gid = 1

    def partition_register(self, base: int, size: int) -> tuple[int, int]:
        """The value the manager loads into a CPU's partition register for
        the range [base, base + size): exactly that range."""
        return base, size

    def free_base(self, size: int) -> int:
        """The first page-aligned host word from which ``size`` words are free."""
        page = self.profile.arch.page_size
        at = max([FIRST, *(p.base + p.size for p in self.partitions.values())])
        at = -(-at // page) * page
        if at + size > self.host_words:
            raise ValueError(f"no room for a partition of {size} words (host storage ends at {self.host_words:#x})")
        return at

    def add_guest(self, image: Image, *, memsize: int) -> int:
        """Give a guest its CPU and partition, load it, and reset the CPU
        to the image's entry point (supervisor mode, R = the partition)."""
        base = self.free_base(memsize)
        if any(not 0 <= a < memsize for a in image.words):  # checked against the guest's size, not the register
            raise ValueError(f"the image has words outside a partition of {memsize} words")
        cpu = Machine(self.profile, self.host_words, storage=self.storage)
        cpu.set_partition(*self.partition_register(base, memsize))
        cpu.load(image)  # into the partition: what the register says is the guest's storage
        cpu.census = Counter()
        gid, self.next_gid = self.next_gid, self.next_gid + 1
        self.partitions[gid] = Partition(gid, base, memsize, cpu)
        return gid

    def run(self, gid: int, steps: int) -> RunResult:
        """Run guest ``gid``'s CPU for up to ``steps`` steps, with no hook:
        nothing between the guest and the hardware."""
        return self.partitions[gid].cpu.run(steps)

    def guest_state(self, gid: int) -> GuestState:
        p = self.partitions[gid]
        regs = {st.FIELD_NAMES[i]: int(v) for i, v in enumerate(p.cpu.S)}
        return GuestState(
            {k: regs[k] for k in GUEST_FIELDS},
            tuple(self.storage[p.base : p.base + p.size]),
            tuple(int(w) for w in p.cpu.out),
        )

    def mode_steps(self, gid: int) -> dict[str, int]:
        """Steps guest ``gid``'s CPU ran, by the real mode it ran them in
        (the CPU's own performance counter)."""
        out = {"supervisor": 0, "user": 0}
        for (_name, mode, _trapped), n in self.partitions[gid].cpu.census.items():
            out["supervisor" if mode == st.SUPERVISOR else "user"] += n
        return out
