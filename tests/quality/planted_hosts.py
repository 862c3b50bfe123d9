"""Deliberately broken host configurations: one plausible slip each.
``tests/fuzz/test_host_type_checks.py`` shows each is caught, as the kind
of finding it is."""

from __future__ import annotations

from popek.model.hosts.partition import PartitionManager


class PartitionOnePageTooBig(PartitionManager):
    """Loads each CPU's partition register one page past the guest's range
    (a size check written with the page rounding on the wrong side): a
    guest that sets R beyond its own storage reaches the next partition."""

    def partition_register(self, base: int, size: int) -> tuple[int, int]:
        return base, size + self.profile.arch.page_size


# A host kernel that garbles its message to the VMM process: it reports
# every trap as a system call (cause 4).  The VMM then reflects privileged
# instructions instead of emulating them.
GARBLING_KERNEL_PATCH = ("st   r1, 0x1c0(r0)      ; the message: cause,",
                         "li   r6, 4\n        st   r6, 0x1c0(r0)      ; the message: a wrong cause,")
