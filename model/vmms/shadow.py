"""Shadow page tables: the software way to run a guest on the host with its
own view of storage, whatever its R and paging.

While a guest runs on the host (in real user mode), the host's paging is
always on and points at a *shadow table* the VMM keeps in its reserved
storage, one per virtual mode.  The host's R is the guest's own R, so
guest-virtual and host-linear addresses agree, and ``rdbase``/``rdbound``
run directly and read the guest's values; the shadow table maps each
linear page to the host frame holding the guest-physical page the guest's
own translation gives (its page table when its paging is on, the identity
otherwise), inside the guest's allocation.

* Entries are built on demand: a host page fault on a linear page with no
  shadow entry is answered by walking the guest's translation (the spec's
  own ``translate``, compiled over the virtual CPU) and filling the entry;
  the faulting instruction then runs again.  If the guest's translation
  refuses the access, or the page lies partly outside guest storage, the
  instruction is emulated on the virtual CPU, which does exactly what the
  bare machine does (deliver PAGE or MEMORY to the guest, or complete it).
* Guest page-table pages are *write-protected* (their shadow entries lose
  the write bit).  A guest write to one faults, is emulated, and drops the
  shadow entries whose walk read an entry it changed, with the host's
  decodes fetched through them (`Machine.forget_entry`); the host's other
  decodes stay.  Loading a new page-table base drops every shadow entry.
  Subclasses protect pages for their own reasons too (`protect`,
  `on_guest_write`: translated code).
* Every write the virtual CPU makes goes through a `TrackingWindow`, so
  protected pages are noticed whoever writes them.

The host also holds the guest's interrupt-enable flag and pending tick (as
well as the registers, flags, PC and timer `base` keeps there), so a timer
tick arrives, or waits, exactly as it would on the guest's machine, and
``pushf``/``popf`` in user mode see the guest's flag.
"""

from __future__ import annotations

from typing import Callable, ClassVar, Mapping

from popek.model import codegen
from popek.model.machine import Machine
from popek.model.window import Window
from popek.spec import state as st
from popek.spec.bits import load_addresses, var
from popek.spec.image import Image
from popek.spec.memory import translate
from popek.spec.sem import Sem
from popek.spec.state import (
    BASE,
    BOUND,
    HALTED,
    IE,
    MODE,
    PC,
    PEND,
    PTBR,
    PTE_PRESENT,
    PTE_USER,
    PTE_WRITE,
    SUPERVISOR,
    USER,
    Cause,
)

from .base import LIVE_SLOTS, Layout, SoftwareVMM

# Slots the host holds while the guest runs: base's, plus IE and PEND.
SHADOW_LIVE = (*LIVE_SLOTS, IE, PEND)


class TrackingWindow(Window):
    """A `Window` that notes the guest-physical pages written through it, and
    the words: a write is a write even when it stores the value already
    there (a guest storing the very word a hypercall holds has still
    replaced it)."""

    def __init__(self, host: Machine, offset: int, size: int, page_bits: int):
        super().__init__(host, offset, size)
        self.page_bits = page_bits
        self.dirty: set[int] = set()
        self.written: set[int] = set()

    def __setitem__(self, a: int, value: int) -> None:
        super().__setitem__(a, value)
        if isinstance(a, slice):
            start, stop, step = a.indices(self.size)
            self.dirty.update(range(start >> self.page_bits, ((stop - 1) >> self.page_bits) + 1) if stop > start else ())
            self.written.update(range(start, stop, step))
        else:
            self.dirty.add(a >> self.page_bits)
            self.written.add(a)

    def forget(self) -> None:
        """What was written so far has been acted on (or was the VMM's own)."""
        self.dirty.clear()
        self.written.clear()


# -- the guest's translation, compiled from the spec ---------------------------
Walk = Callable[[int], tuple]


def compile_walk(arch: st.Arch, *, write: bool) -> Callable:
    """``make(S, M, MS)`` returning ``walk(va) -> (physical, cause, info, reads)``:
    the spec's `translate` of virtual address ``va`` on state ``S`` and
    storage ``M`` of ``MS`` words; ``physical`` is None when it traps, and
    ``reads`` lists the storage words the translation read (table entries)."""
    s = Sem(arch)
    phys = translate(s, var("VA", arch.word), write=write)

    em = codegen.Emitter(arch, codegen.state_binder({"VA": "va"}), "w")
    reads = load_addresses([phys] + [c for c, _, _ in s.fx.traps])
    for cond, _cause, info in s.fx.traps:
        em.count(cond)
        em.count(info)
    for x in [phys, *reads]:
        em.count(x)
    read_list = "(" + "".join(f"{em.expr(r)}, " for r in reads) + ")"
    body = em.take()
    guards, _certain = codegen.emit_guards(
        em, s.fx.traps, lambda cause, info: [f"return (None, {cause}, {info}, {read_list})"]
    )
    p = em.expr(phys)
    body += guards + em.take() + [f"return ({p}, 0, 0, {read_list})"]
    return codegen.compile_function("walk", "va", body, "S, M, MS")


def changed_entries(sources: Mapping[int, tuple], storage: Window) -> list[int]:
    """The shadow entries (host words) of ``sources`` to drop after a guest
    page-table write: those whose walk read a table word that now holds
    another value.  ``sources`` maps an entry to (the guest-physical words
    its walk read, their values then, ...).  Only these entries map
    otherwise than the guest's table now does: a walk depends on nothing
    else but the table base, and loading a new base drops every entry."""
    return [
        word
        for word, (reads, values, *_) in sources.items()
        if reads and tuple(map(storage.__getitem__, reads)) != values
    ]


NOT_LOGGING: frozenset[int] = frozenset()  # `ShadowPagingVMM.clean` when no dirty log runs


class ShadowPagingVMM(SoftwareVMM):
    """A software VMM whose guest runs on the host through shadow page tables.

    Subclasses decide when the guest runs directly (`direct_allowed`) and
    may protect guest pages for their own use.  For subclasses, besides
    `SoftwareVMM`'s: `protect`/`unprotect` a guest page, `on_guest_write`
    (a protected page was written), `guest_translate`/`guest_walk` (the
    guest's own translation), `watch_tables`/`is_table_page` (state derived
    from guest page-table words), `forget_derived` and
    `protected_by_design`.
    """

    # Host-physical shadow tables, one per virtual mode, in the reserved words.
    SHADOW_TABLES: ClassVar[dict[int, int]] = {SUPERVISOR: 0x400, USER: 0x800}
    capabilities: ClassVar[frozenset[str]] = SoftwareVMM.capabilities | {"migration"}

    def load(self, image: Image, *, memsize: int) -> None:
        """As `SoftwareVMM.load`, with a tracking window and empty shadow tables."""
        arch = self.host.arch
        self.layout = Layout(self.GUEST_OFFSET, memsize, len(self.host.M))
        self.window = TrackingWindow(self.host, self.layout.guest_offset, memsize, arch.page_bits)
        self.vcpu = Machine(self.host.profile, memsize, storage=self.window)
        self.vcpu.load(image)
        self.clean = NOT_LOGGING
        self.window.forget()
        self.mark_vcpu_current()
        env = (self.vcpu.S, self.window, memsize)
        self._walk_read = compile_walk(arch, write=False)(*env)
        self._walk_write = compile_walk(arch, write=True)(*env)
        self._shadow_ptbr = -1
        self._maps: dict[int, set[int]] = {}  # guest frame -> host words of shadow entries mapping it
        self._pt_pages: set[int] = set()  # guest frames holding page-table entries we used
        # shadow entry (host word) -> (the guest's table words its walk read,
        # their values then, the guest frame it maps): see `changed_entries`
        self._sources: dict[int, tuple[tuple[int, ...], tuple[int, ...], int]] = {}
        self.protected: set[int] = set()  # guest frames whose shadow entries are read-only
        self._zap_shadow()

    def restore_extra(self, extra: object) -> None:
        """A restored guest has new storage: nothing derived from the old stays."""
        self.window.forget()
        self.forget_derived()
        self._shadow_ptbr = -1
        self._zap_shadow()

    def forget_derived(self) -> None:
        """Drop what a subclass derived from guest storage (translations...)."""

    # -- what the host holds ---------------------------------------------------
    def push(self) -> None:
        H, V = self.host.S, self.vcpu.S
        for i in SHADOW_LIVE:
            H[i] = V[i]
        if V[PTBR] != self._shadow_ptbr:
            self._zap_shadow()
            self._shadow_ptbr = V[PTBR]
        H[BASE], H[BOUND] = V[BASE], V[BOUND]
        H[MODE] = USER
        H[PTBR] = self.SHADOW_TABLES[V[MODE]]
        H[HALTED] = 0

    def pull(self) -> None:
        H, V = self.host.S, self.vcpu.S
        for i in SHADOW_LIVE:
            V[i] = H[i]

    def runs_directly(self) -> bool:
        if self.vcpu.S[st.GUEST]:  # a vtx guest in its own guest mode: interpreted
            return False
        return super().runs_directly()

    # -- host traps --------------------------------------------------------------
    def handle_host_trap(self, cause: int, info: int) -> None:
        if cause == Cause.PAGE and self.fill_shadow(info):
            return  # the instruction runs again, now mapped: no guest step
        if cause == Cause.PAGE:
            self.counts.extra["shadow_emulated_faults"] += 1
            self.emulate_step()
            return
        super().handle_host_trap(cause, info)

    def emulate_step(self) -> int:
        n = super().emulate_step()
        self.after_vcpu()
        return n

    def reflect(self, cause: int, info: int) -> None:
        super().reflect(cause, info)
        self.after_vcpu()

    def after_vcpu(self) -> None:
        """Act on the virtual CPU's writes to protected pages."""
        dirty = self.window.dirty
        if not dirty:
            return
        if self.clean is not NOT_LOGGING:
            self.log_writes(dirty)
        hit = dirty & self.protected
        dirty.clear()
        for frame in hit:
            self.on_guest_write(frame)
        self.window.written.clear()

    def on_guest_write(self, frame: int) -> None:
        """The guest wrote protected page ``frame`` (guest-physical page number)."""
        if frame in self._pt_pages:
            self.counts.extra["shadow_updates"] += 1
            self._drop_changed()

    def _drop_changed(self) -> None:
        for word in changed_entries(self._sources, self.window):
            self._drop_entry(word)

    def _drop_entry(self, word: int) -> None:
        """Clear shadow entry ``word``, and with it the host's decodes
        fetched through it (and only those)."""
        source = self._sources.pop(word, None)
        if source is not None:
            self._maps.get(source[2], set()).discard(word)
        self._set_entry(word, 0)

    def _set_entry(self, word: int, entry: int) -> None:
        if self.host.M[word] & PTE_PRESENT:  # no decode is fetched through an absent entry
            self.host.forget_entry(word)
        self.host.M[word] = entry

    # -- the shadow tables -------------------------------------------------------
    def _zap_shadow(self) -> None:
        """Drop every shadow entry (a new page-table base, a restore)."""
        M = self.host.M
        size = 1 << (self.host.arch.word - self.host.arch.page_bits)
        for table in self.SHADOW_TABLES.values():
            M[table : table + size] = [0] * size
        self.host.flush()
        self._maps.clear()
        self._pt_pages.clear()
        self._sources.clear()
        self.protected = set(self.protected_by_design())
        self.counts.extra["shadow_flushes"] += 1

    def protected_by_design(self) -> set[int]:
        """Pages a subclass keeps protected across shadow flushes."""
        return set()

    # -- the dirty log of a migration (`popek.model.migration.DirtyLog`) -----------
    # Every guest page starts *clean*: its shadow entries lose the write bit,
    # so the guest's first write to it on the host faults and is emulated;
    # every write the virtual CPU makes (that one, emulated instructions,
    # delivered traps) goes through the tracking window and is logged, and
    # the page's entries are dropped, to be rebuilt writable on demand.
    # Collecting the log makes the collected pages clean again.
    clean: set[int] = NOT_LOGGING  # the pages a write to would be news; NOT_LOGGING: no log

    def start_dirty_log(self) -> None:
        self.logged: set[int] = set()
        self.clean = set()
        self.make_clean(range(-(-self.layout.memsize // self.host.arch.page_size)))

    def make_clean(self, frames) -> None:
        for frame in frames:
            self.clean.add(frame)
            for word in self._maps.get(frame, ()):
                entry = self.host.M[word]
                if entry & PTE_WRITE:
                    self._set_entry(word, entry & ~PTE_WRITE)

    def log_writes(self, frames: set[int]) -> None:
        """The virtual CPU wrote ``frames``: log them; a clean one becomes
        dirty, and its read-only entries go (rebuilt writable when used)."""
        self.logged |= frames
        for frame in frames & self.clean:
            self.clean.discard(frame)
            if frame not in self.protected:
                for word in list(self._maps.get(frame, ())):
                    self._drop_entry(word)

    def dirty_pages(self) -> set[int]:
        pages = self.logged | self.window.dirty  # (the window's: not acted on yet)
        self.logged = set()
        self.make_clean(pages)
        return pages

    def stop_dirty_log(self) -> None:
        self.clean = NOT_LOGGING
        self.logged = set()
        self._zap_shadow()  # no entry stays read-only for the log's sake

    def protect(self, frame: int) -> None:
        """Make guest page ``frame`` read-only in every shadow entry."""
        if frame in self.protected:
            return
        self.protected.add(frame)
        for word in self._maps.get(frame, ()):
            entry = self.host.M[word]
            if entry & PTE_WRITE:
                self._set_entry(word, entry & ~PTE_WRITE)

    def fill_shadow(self, vaddr: int) -> bool:
        """Build the shadow entry for the page of ``vaddr``; False when the
        fault is the guest's own (or an entry already exists)."""
        V, arch = self.vcpu.S, self.host.arch
        pb = arch.page_bits
        linear = (V[BASE] + vaddr) & arch.mask
        word = self.SHADOW_TABLES[V[MODE]] + (linear >> pb)
        if self.host.M[word] & PTE_PRESENT:
            return False
        phys, _cause, _info, reads = self._walk_read(vaddr)
        if phys is None:
            return False
        frame = phys >> pb
        if (frame + 1) << pb > self.layout.memsize:
            return False  # a page only partly inside guest storage: emulate
        writable = self._walk_write(vaddr)[0] is not None and frame not in self.protected
        writable = writable and frame not in self.clean  # a migration's dirty log: first write faults
        entry = (self.layout.guest_offset + (frame << pb)) | PTE_PRESENT | PTE_USER
        self._set_entry(word, entry | (PTE_WRITE if writable else 0))
        self._maps.setdefault(frame, set()).add(word)
        reads = tuple(reads) if V[PTBR] else ()
        self._sources[word] = (reads, tuple(map(self.window.__getitem__, reads)), frame)
        self.watch_tables(reads)
        self.counts.extra["shadow_faults"] += 1
        return True

    # -- for subclasses: the guest's translation, as the shadow tables see it ----
    def guest_translate(self, vaddr: int) -> int | None:
        """Guest-physical address of a fetch or read at ``vaddr``, or None."""
        return self._walk_read(vaddr)[0]

    def guest_walk(self, vaddr: int) -> tuple[int | None, int, int, tuple[int, ...]]:
        """The guest's own translation of a read at ``vaddr``: the
        guest-physical address (None when it faults), the fault's cause and
        info, and the guest page-table words the walk read.  A subclass that
        keeps something derived from a translation (binary translation's
        code cache) passes those words to `watch_tables`."""
        return self._walk_read(vaddr)

    def watch_tables(self, words) -> None:
        """Something the VMM keeps depends on the guest page-table words
        ``words`` (guest-physical): their pages are write-protected, so a
        guest write to one reaches `on_guest_write`, where `is_table_page`
        holds for it."""
        pb = self.host.arch.page_bits
        for pt in {addr >> pb for addr in words}:
            self._pt_pages.add(pt)
            self.protect(pt)

    def is_table_page(self, frame: int) -> bool:
        """Whether guest page ``frame`` holds page-table entries a shadow
        entry or a subclass's derived state was built from."""
        return frame in self._pt_pages

    def unprotect(self, frame: int) -> None:
        """Let the guest write ``frame`` directly again (its shadow entries are
        dropped and rebuilt, writable, on the next fault)."""
        self.protected.discard(frame)
        for word in list(self._maps.pop(frame, ())):
            self._drop_entry(word)
