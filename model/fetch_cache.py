"""What the machine remembers about code it has fetched.

A `popek.model.machine.Machine` runs the spec's cycle; fetching and decoding
the same words again and again is what this saves it, and nothing here
decides what an instruction does.  A machine's `FetchCache` keeps:

* the decoded `Line` at each virtual PC, one table per translation context
  (the R, PTBR, mode, ... a decode depends on; up to `MAX_CONTEXTS` tables,
  so a VMM switching between a guest's kernel and user R comes back to what
  it had decoded);
* the storage words those decodes read (``words``: the instruction words
  and the page-table entries their fetch went through) and those words'
  pages (``watched``), so that a write to any of them drops the decodes;
* the compiled straight-line block (``popek.model.codegen``) of a line that
  has run often enough, or of the run a block chooser asks for.

Its public names are the machine's collaborator API:

* ``lines``, the current context's table (virtual PC -> `Line`), which the
  run loop reads on every step; `check_context` switches it after a trap or
  an instruction that may change the context, so it is read again after
  each such call, never kept;
* `fill` on a miss, `compile` when a line has run ``Machine.hot`` times;
* `flush` (every decode and what they watch), `forget` (the decodes only),
  `forget_entry` (those fetched through one page-table entry), `written`
  (storage written from outside the machine);
* ``watched`` and `invalidate`, which the machine puts into its compiled
  code's closure (``CP`` and ``INV`` of ``codebook.CLOSURE``) and hands
  back with `bind`; ``ops``, its per-opcode operations bound to that
  closure; ``chooser``, the block chooser the cached lines were made for;
* ``windows``, where a `popek.model.window.Window` onto this machine's
  storage registers, so that a write here also drops the decodes of the
  machine running over the window (`flush_windows`), and `watch`, which
  that machine calls for each word it decodes.

``popek.fuzz.situations`` wraps `fill` and entries of ``ops`` for the
length of one observed run.
"""

from __future__ import annotations

from operator import itemgetter
from typing import TYPE_CHECKING, Callable

from popek.spec import state as st
from popek.spec.sem import ILEN
from popek.spec.state import BASE, BOUND, MODE, PTBR

if TYPE_CHECKING:
    from popek.spec.instructions import Insn

    from .machine import BlockChooser, Machine
    from .window import Window


MAX_BLOCK = 32  # instructions
MAX_CONTEXTS = 8  # translation contexts whose decodes a machine keeps at once

# S -> the translation context a cached decode depends on, as a tuple
# (`FetchCache.forget_entry` unpacks it in this order)
_CONTEXT = itemgetter(BASE, BOUND, PTBR, MODE, st.GUEST, st.NPTBR)


def _spans(linear: int, n: int, page: int, mask: int, pb: int) -> bool:
    """Do the words of ``n`` instructions from ``linear`` reach linear page ``page``?"""
    first, last = (linear & mask) >> pb, ((linear + ILEN * n - 1) & mask) >> pb
    return first <= page <= last if first <= last else (page >= first or page <= last)


class Line:
    """What the fetch cache holds for one virtual PC; the run loop reads it.

    ``phys``: the physical address of its first word; ``op`` with ``rd``,
    ``rs``, ``imm``: the instruction as one call of its per-opcode
    operation; ``insn`` and ``decoded``: what was decoded; ``hits``: retired
    runs one at a time; ``block``: its compiled block (None until it has
    one), holding ``n`` instructions, the decoded run ``held`` (the census
    counts a block's run by it; a chooser's block may differ from what
    storage holds now); ``ctx``: whether running it may change the
    translation context."""

    __slots__ = ("phys", "op", "rd", "rs", "imm", "insn", "hits", "block", "n", "ctx", "decoded", "held")


class FetchCache:
    """One machine's decoded lines, the words they were read from, and
    their compiled blocks.  Made by the machine, then given its compiled
    code's closure by `bind`."""

    def __init__(self, machine: "Machine", window: "Window | None"):
        """``window``: the window ``machine``'s storage is, if it is one."""
        # Storage is read through the machine: its ``M`` may be replaced (a
        # session gives the storage back); state, arch and partition never are.
        self.machine = machine
        self.S = machine.S
        self.arch = machine.arch
        self.book = machine.book
        self.partition = machine.partition
        self.memsize = machine.memsize
        # Storage a cached decode read: ``words`` exactly, ``watched`` their
        # pages (the generated code's quick test before calling ``INV``).
        self.watched: set[int] = set()
        self.words: set[int] = set()
        self.lines: dict[int, Line] = {}
        self.ctx: tuple = ()
        # Decodes are kept per translation context; ``lines`` is the
        # current context's.
        self.ctx_lines: dict[tuple, dict[int, Line]] = {}
        self.chooser: "BlockChooser | None" = None  # the chooser the cached lines were made for
        self.windows: list["Window"] = []  # windows onto this machine's storage (see model.window)
        self.window = window
        self.ops: dict[int, Callable] = {}  # per-opcode operations, bound to the closure

    def bind(self, env: tuple) -> None:
        """Take the machine's closure (``codebook.CLOSURE``: it holds
        ``watched`` and `invalidate`) and bind to it the routines a fill
        runs: the spec's fetch, its trap for undecodable words, and (vtx)
        the table words the fetch's translation reads."""
        book = self.book
        self.env = env
        self.fetch = book.fetch(*env)
        self.undecodable = book.undecodable(*env)
        self.table_reads = book.table_reads(*env) if book.table_reads else None

    def op(self, insn: Insn) -> Callable:
        """``insn``'s per-opcode operation, bound to this machine."""
        op = self.ops.get(insn.opcode)
        if op is None:
            op = self.ops[insn.opcode] = self.book.op(insn)(*self.env)
        return op

    # -- dropping decodes -----------------------------------------------------
    def flush(self) -> None:
        """Drop every cached decode and what they watch."""
        self.forget()
        self.watched.clear()
        self.words.clear()
        self.ctx = _CONTEXT(self.S)
        self.ctx_lines = {self.ctx: self.lines}
        self.flush_windows()

    def forget_entry(self, addr: int) -> None:
        """Drop the cached decodes fetched through the page-table entry at
        physical ``addr``, in every context whose table holds it, and no
        others (see `Machine.forget_entry`)."""
        mask, pb = self.arch.mask, self.arch.page_bits
        for (base, _bound, ptbr, _mode, guest, nptbr), lines in self.ctx_lines.items():
            if not ptbr:
                continue  # paging off: no entry read
            if guest and nptbr:  # the entry's address is guest-physical here
                lines.clear()
                continue
            page = (addr - ptbr) & mask
            if page >> (self.arch.word - pb):
                continue  # not in this context's table
            for pc in [pc for pc, line in lines.items() if _spans(base + pc, line.n, page, mask, pb)]:
                del lines[pc]

    def forget(self) -> None:
        """Drop the cached decodes of every context (what they watch stays)."""
        self.lines.clear()
        for lines in self.ctx_lines.values():
            lines.clear()

    def invalidate(self, addr: int) -> None:
        """A watched page was written: if a cached decode read this very word,
        forget every cached decode here and in any machine whose storage is
        a window onto this one.  (Other words of the page, such as the old
        PSW area beside a kernel's code, leave the decodes as they are.)"""
        if addr not in self.words:
            return
        self.forget()
        self.watched.clear()
        self.words.clear()
        self.flush_windows()

    def written(self, addr: int, end: int) -> None:
        """Physical words [addr, end) were written: `invalidate` the first
        of them a cached decode read, if any."""
        pb, words, watched = self.arch.page_bits, self.words, self.watched
        for page in range(addr >> pb, ((end - 1) >> pb) + 1 if end > addr else 0):
            if page in watched:  # some word of this page was decoded: which?
                lo, hi = max(addr, page << pb), min(end, (page + 1) << pb)
                hit = next((a for a in range(lo, hi) if a in words), None)
                if hit is not None:
                    self.invalidate(hit)
                    break

    def flush_windows(self) -> None:
        """Drop the decodes of every machine whose storage is a window onto this one."""
        # Only the decodes: the owner may be inside a compiled block whose
        # store just got here, and that block's own "was it a watched page?"
        # check must still see the page watched, so that it stops.
        for window in self.windows:
            if window.owner is not None:
                window.owner.cache.forget()

    def check_context(self) -> None:
        """Make ``lines`` the table of the translation context S is in now."""
        ctx = _CONTEXT(self.S)  # checked after every trap and resource write
        if ctx != self.ctx:  # decodes depend on the context; watched words do not
            lines = self.ctx_lines.get(ctx)
            if lines is None:
                if len(self.ctx_lines) >= MAX_CONTEXTS:
                    self.ctx_lines.clear()
                lines = self.ctx_lines[ctx] = {}
            self.lines = lines
            self.ctx = ctx

    # -- filling ----------------------------------------------------------------
    def fill(self, pc: int) -> Line | tuple | None:
        """Fetch and decode at ``pc`` (the machine's PC) into a new line of
        ``lines``; or the fetch's or decode's trap ``(None, cause, info)``;
        or None when the block chooser declines ``pc``."""
        chosen = None
        if self.chooser is not None:  # asked first: choosing may write storage
            chosen = self.chooser(pc)
            if not chosen:
                return None
        p0, p1, _ = r = self.fetch()
        if p0 is None:
            return r
        M = self.machine.M
        d = self.book.decode(M[p0], M[p1])
        if d is None:  # the spec's trap for words that are no instruction
            return self.undecodable()
        line = Line()
        line.phys = p0
        line.insn = d.insn
        line.decoded = d
        line.rd, line.rs, line.imm = d.rd, d.rs, d.imm
        line.op = self.op(d.insn)
        line.hits = 0
        line.block = None
        line.held = None
        line.n = 1
        line.ctx = self.book.kind(d.insn)[0]
        self.watch(p0)
        self.watch(p1)
        if self.S[st.GUEST]:  # vtx guest mode: guest and nested table words, from the spec
            for addr in self.table_reads():
                self.watch(addr)
        elif self.S[PTBR]:
            self._watch_table(pc)
        if chosen:
            self._install(line, pc, chosen)
        self.lines[pc] = line
        return line

    def watch(self, addr: int) -> None:
        """A cached decode read physical word ``addr``."""
        self.words.add(addr)
        self.watched.add(addr >> self.arch.page_bits)
        window = self.window
        if window is not None:  # the host must tell us when it writes this word
            window.host.cache.watch(window.offset + addr)

    def _watch_table(self, vaddr: int) -> None:
        """With paging on, a cached decode also depends on its page-table entries."""
        S, pb = self.S, self.arch.page_bits
        moved = self.partition[0] if self.arch.partition else 0  # the entry's host word
        for v in (vaddr, vaddr + 1):
            linear = (S[BASE] + (v & self.arch.mask)) & self.arch.mask
            self.watch(moved + ((S[PTBR] + (linear >> pb)) & self.arch.mask))

    # -- compiling ----------------------------------------------------------------
    def compile(self, line: Line, pc: int) -> None:
        """Gather the straight run from ``pc`` and build its block."""
        arch, mask = self.arch, self.arch.mask
        M = self.machine.M
        decoded = []
        page = arch.page_size
        start, end = (self.partition[0], sum(self.partition)) if self.arch.partition else (0, self.memsize)
        room = (page - ((line.phys - start) % page)) // ILEN  # whole instructions left in this (guest) page
        bound_room = (self.S[BOUND] - pc) // ILEN if self.S[BOUND] > pc else 0
        limit = min(MAX_BLOCK, room, bound_room, (end - line.phys) // ILEN)
        for k in range(limit):
            p = line.phys + ILEN * k
            d = self.book.decode(M[p], M[p + 1])
            if d is None:
                break
            if (pc + ILEN * k) & mask != pc + ILEN * k:
                break
            _ctx, alone, ends = self.book.kind(d.insn)
            if alone:
                break
            decoded.append(d)
            if ends:
                break
        if decoded:
            self._install(line, pc, decoded)

    def _install(self, line: Line, pc: int, decoded: list) -> None:
        """Make ``decoded``, a straight run from ``pc``, the block ``line`` runs."""
        maker, n, ctx = self.book.block(pc, decoded)
        line.block = maker(*self.env)
        line.held = decoded
        line.n = n
        line.ctx = ctx or line.ctx
        for k in range(n):
            self.watch(line.phys + ILEN * k)
            self.watch(line.phys + ILEN * k + 1)
