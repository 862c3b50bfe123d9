"""A window onto host storage, used as a virtual machine's storage.

A VMM keeps a guest's storage inside host storage (its allocation) so the
guest can run directly on the host.  When the VMM must itself apply the
spec's semantics to the guest (emulating an instruction, delivering a trap),
it runs a `Machine` over a `Window`: guest-physical address ``a`` is host
word ``offset + a``.  Writes go through ``host.write`` so the host's cached
decodes stay exact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, overload

if TYPE_CHECKING:
    from .machine import Machine


class Window:
    def __init__(self, host: "Machine", offset: int, size: int):
        if offset < 0 or offset + size > len(host.M):
            raise ValueError(f"window [{offset:#x}, {offset + size:#x}) is outside host storage")
        self.host, self.offset, self.size = host, offset, size
        self._space = len(host.M)  # the address space the generated code may index
        self.owner: "Machine | None" = None  # the machine using this as storage
        host.cache.windows.append(self)

    def attach(self, owner: "Machine") -> None:
        """Called by the `Machine` built over this window.  The owner's cached
        decodes watch host pages, so any write to them, through the window,
        `host.write` or the guest running on the host, drops those decodes."""
        self.owner = owner

    def __len__(self) -> int:
        return self._space

    @overload
    def __getitem__(self, a: int) -> int: ...
    @overload
    def __getitem__(self, a: slice) -> list[int]: ...
    def __getitem__(self, a):
        if isinstance(a, slice):
            return [self[i] for i in range(*a.indices(self._space))]
        return self.host.M[self.offset + a] if 0 <= a < self.size else 0

    def __setitem__(self, a: int, value: int) -> None:
        if isinstance(a, slice):
            start, stop, step = a.indices(self._space)
            values = list(value)
            if step == 1 and len(values) == stop - start:  # a run of words: one host write
                if stop > self.size:
                    raise IndexError(f"guest-physical {max(start, self.size):#x} is outside the guest's {self.size} words")
                self.host.write_words(self.offset + start, values)
                return
            for i, v in zip(range(start, stop, step), values):
                self[i] = v
            return
        if not 0 <= a < self.size:
            raise IndexError(f"guest-physical {a:#x} is outside the guest's {self.size} words")
        self.host.write(self.offset + a, value)
