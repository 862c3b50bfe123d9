"""Address translation: relocation-bounds, then (when on) one-level paging.

P&G's storage access: a virtual address ``a`` is legal when ``a < bound`` and
then names physical word ``base + a``.  Our machine adds paging as a profile
feature: when the page-table base register is non-zero, ``base + a`` is a
*linear* address whose page number indexes a table of one-word entries at
PTBR.  An entry gives the frame (its high bits) and present/write/user bits.
On a vtx machine in guest mode the resulting address (and the page-table
entry's own address) is guest-physical and goes through the nested page
table as well (``Sem.host_physical``, spec/vtx.py): two-dimensional paging.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .bits import Expr, any_of, bit, ite, ne, uge, ult
from .state import BASE, BOUND, PTBR, Cause

if TYPE_CHECKING:  # annotations only: sem.py imports this module at run time
    from .sem import Sem


def translate(s: Sem, vaddr: Expr, *, write: bool) -> Expr:
    """Physical address of ``vaddr``, recording the traps that guard it."""
    arch = s.arch
    s.trap_if(uge(vaddr, s.get(BOUND)), Cause.MEMORY, vaddr)
    linear = s.get(BASE) + vaddr
    s.trap_if(ult(linear, s.get(BASE)), Cause.MEMORY, vaddr)  # wrapped round

    paging = ne(s.get(PTBR), 0)
    pte = s.load_phys(s.get(PTBR) + (linear >> arch.page_bits), when=paging)
    refused = ~bit(pte, 0)  # not present
    if write:
        refused = refused | ~bit(pte, 1)
    refused = any_of(refused, s.in_user_mode & ~bit(pte, 2))
    s.trap_if(paging & refused, Cause.PAGE, vaddr)

    offset_mask = arch.page_size - 1
    physical = ite(paging, (pte & ~s.word(offset_mask)) | (linear & offset_mask), linear)
    physical = s.host_physical(physical, write=write)  # vtx guest: through the nested table
    s.trap_if(uge(physical, s.memsize), Cause.MEMORY, vaddr)
    return physical


def fetch_addresses(s: Sem) -> tuple[Expr, Expr]:
    """Where the two words of the instruction at PC are; fetching is reading."""
    from .state import PC

    pc = s.get(PC)
    return translate(s, pc, write=False), translate(s, pc + 1, write=False)
