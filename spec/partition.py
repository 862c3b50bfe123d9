"""The `partition` feature: hardware that lets a machine be cut into partitions.

A type 0 host (the lecture's *partitioning*, IBM's LPAR) gives each guest a
dedicated CPU and a dedicated range of storage, and no software sits
between the guest and the hardware at all.  What keeps the guests apart is
one register per CPU, the **partition register** ``(PBASE, PSIZE)``:

* every physical address ``p`` the CPU uses (an instruction's operand after
  relocation and paging, a page-table entry, the trap mechanism's old and
  new PSW words) names host word ``PBASE + p`` when ``p < PSIZE``;
* a physical address at or beyond ``PSIZE`` names no storage at all: it is
  treated exactly as an address beyond the end of storage on a bare machine
  (a load of it reads 0, an access through relocation traps MEMORY).

So a CPU with partition ``(b, n)`` behaves, in both modes, as a bare
machine of ``n`` words whose storage is host words ``[b, b + n)``: the
guest's kernel runs in real supervisor mode, sets R and returns from traps
with its own ``wrr`` and ``rti``, and whatever R it sets, it reaches no
word outside its partition.  ``proofs/partition.py`` proves this for every
instruction with Z3.

The partition register is *not* a state slot: no instruction reads or
writes it.  It is set by whoever configures the machine (the partition
manager, `popek.model.hosts.partition`), like the size of storage itself,
and it is one of the spec's free inputs (``PBASE``, ``PSIZE``) beside
``MEMSIZE``.  That is the price of partitioning: the partition itself is
not virtualized, so a guest cannot partition its own guests.

A partitioned machine is configured so that ``PBASE + PSIZE <= MEMSIZE``
and ``MEMSIZE < 2**word`` (`Machine.set_partition` refuses others); then
the all-ones address, where out-of-partition addresses are sent, never
exists.  The feature is off in every shipped profile; `partitioned` adds it
to any profile without the `vtx` extension.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataclasses import replace
from functools import lru_cache

from .bits import Expr, ite, ult, var

if TYPE_CHECKING:  # annotations only: sem.py imports this module at run time
    from .sem import Sem

# The partition register, as the spec's free inputs (bound by the concrete
# machine to its `partition` list, by the proofs to Z3 constants).
PBASE, PSIZE = "PBASE", "PSIZE"
INPUT_INDEX = {PBASE: 0, PSIZE: 1}


def partition_base(s: Sem) -> Expr:
    return var(PBASE, s.arch.word)


def partition_size(s: Sem) -> Expr:
    return var(PSIZE, s.arch.word)


def relocate(s: Sem, addr: Expr) -> Expr:
    """The host word that physical ``addr`` names on a partitioned CPU:
    inside the partition, moved up by its base; outside, the all-ones
    address, which no configured machine has (so it reads 0 and an access
    through relocation traps MEMORY, as beyond the end of bare storage)."""
    inside = ult(addr, partition_size(s))
    return ite(inside, partition_base(s) + addr, s.word(s.arch.mask))


@lru_cache(maxsize=None)
def partitioned(profile):  # -> Profile (imported lazily: profiles imports this package's siblings)
    """``profile`` with the partition feature: the same instructions, every
    physical address relocated and bounded by the partition register.  Not
    registered: existing profiles and their tables stay as they are."""
    if profile.arch.vtx:
        raise ValueError(f"profile {profile.name!r}: the partition feature is not combined with vtx")
    if profile.arch.partition:
        return profile
    table = profile.derive(
        f"{profile.name}+partition",
        f"{profile.name} with a partition register bounding every physical address (type 0 hosts)",
        features={"partition"},
    )
    return replace(table, arch=replace(table.arch, partition=True))
