"""The concrete reference machine: the hardware manual, executable.

A `Machine` holds the state vector, storage and output log, and runs the
machine cycle defined by the spec:

1. if a timer interrupt is pending and interrupts are enabled, take it;
2. fetch the two words at PC through address translation (a fault traps);
3. decode; an illegal word pair traps;
4. execute: the instruction retires, or traps and has no effect;
5. a retired instruction counts the timer down.

Every trap runs the P&G mechanism (old PSW saved, new PSW loaded) unless a
*host hook* is installed: then the hook receives the trap instead.  That is
where a VMM sits.  One cycle is one *step*: an instruction retired, an
instruction trapped, or an interrupt taken.

Speed comes from caching, never from a second definition: decoded
instructions are cached per virtual PC (dropped when the translation
context changes or their page is written), and code that runs more than
once is compiled into straight-line blocks (``popek.model.codegen``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from operator import itemgetter
from typing import Callable, Protocol

from popek.spec import state as st
from popek.spec.image import Image
from popek.spec.profiles import Profile
from popek.spec.sem import ILEN
from popek.spec.state import (
    BASE,
    BOUND,
    HALTED,
    IE,
    MODE,
    NSLOTS,
    PC,
    PEND,
    PTBR,
    TIMER,
    Cause,
)
from popek.spec.trap import INTERRUPT_INFO

from .codebook import Codebook


HOT = 2  # by default a line is compiled into a block on its second run
# What `Machine.census` counts a step as when no instruction ran.
INTERRUPT, FETCH_FAULT, ILLEGAL = "<interrupt>", "<fetch-fault>", "<illegal>"
MAX_BLOCK = 32  # instructions
MAX_CONTEXTS = 8  # translation contexts whose decodes a machine keeps at once


class TrapHook(Protocol):
    def __call__(self, machine: "Machine", cause: int, info: int) -> bool | None:
        """Handle a trap instead of the P&G mechanism; return True to stop the run."""


class BlockChooser(Protocol):
    def __call__(self, pc: int) -> list | None:
        """The decoded instructions the block at virtual ``pc`` is to hold
        (a straight run inside pc's page), or None (or none) to end the run
        before pc."""


@dataclass
class RunResult:
    steps: int  # machine cycles run
    halted: bool
    stopped: bool = False  # a hook asked to stop


# --------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------
# S -> the translation context a cached decode depends on, as a tuple
# (`Machine.forget_entry` unpacks it in this order)
_CONTEXT = itemgetter(BASE, BOUND, PTBR, MODE, st.GUEST, st.NPTBR)


def _count_block(census: Counter, decoded: list, n: int, mode: int, r: tuple | None) -> None:
    """Count a block's run in ``census`` as its instructions one by one: all
    ``n`` retired, or (``r`` = (k, cause, info)) the first k retired and, with
    a cause, the next one trapped.  A block holds no instruction that changes
    the mode but its last, so every one ran in the mode it started in."""
    k = n if r is None else r[0]
    for d in decoded[:k]:
        census[(d.insn.name, mode, False)] += 1
    if r is not None and r[1]:
        census[(decoded[k].insn.name, mode, True)] += 1


def _spans(linear: int, n: int, page: int, mask: int, pb: int) -> bool:
    """Do the words of ``n`` instructions from ``linear`` reach linear page ``page``?"""
    first, last = (linear & mask) >> pb, ((linear + ILEN * n - 1) & mask) >> pb
    return first <= page <= last if first <= last else (page >= first or page <= last)


class _Line:
    """What the fetch cache holds for one virtual PC."""

    # ``held``: the decoded run ``block`` holds (the census counts a block's
    # run by it; a chooser's block may differ from what storage holds now)
    __slots__ = ("phys", "op", "rd", "rs", "imm", "insn", "hits", "block", "n", "ctx", "decoded", "held")


class Machine:
    """One machine: a profile's instruction set, ``memsize`` words of storage."""

    def __init__(self, profile: Profile, memsize: int = 4096, *, storage=None):
        """``storage``: by default a fresh list; a VMM may pass a
        `popek.model.window.Window` onto host storage instead."""
        arch = profile.arch
        if not st.FIRST_FREE * 2 <= memsize <= (1 << arch.word):
            raise ValueError(f"memsize must be between {st.FIRST_FREE * 2} and {1 << arch.word}")
        if arch.partition and memsize == 1 << arch.word:  # the all-ones word must not exist
            raise ValueError(f"a partitioned machine has fewer than {1 << arch.word} words")
        self.profile = profile
        self.arch = arch
        self.memsize = memsize
        self.S: list[int] = [0] * NSLOTS
        self._windows: list = []  # windows onto this machine's storage (see model.window)
        self._window = None  # the window this machine's storage is, if any
        self.M: list[int] = [0] * (1 << arch.word) if storage is None else storage
        if len(self.M) != 1 << arch.word:
            raise ValueError("storage must span the whole address space (2**word words)")
        attach = getattr(self.M, "attach", None)
        if attach is not None:
            attach(self)
            self._window = self.M
        self.out: list[int] = []
        # Storage a cached decode read: ``_words`` exactly, ``_watched`` their
        # pages (the generated code's quick test before calling ``INV``).
        self._watched: set[int] = set()
        self._words: set[int] = set()
        self._lines: dict[int, _Line] = {}
        self._ctx: tuple = ()
        # Decodes are kept per translation context (a VMM switching between
        # a guest's kernel and user R comes back to what it had decoded);
        # ``_lines`` is the current context's.
        self._ctx_lines: dict[tuple, dict[int, _Line]] = {}
        # A caller (a binary translator) may set ``blocks`` to choose what each
        # block holds; its blocks then run through this machine's own loop.
        self.blocks: BlockChooser | None = None
        self._blocks: BlockChooser | None = None  # the chooser the cached lines were made for
        # Runs of a line before its block is compiled.  Compiling costs about
        # a millisecond; a harness of short guests, whose code seldom runs
        # that often, raises this so as to compile only loops.
        self.hot = HOT
        # Performance counters: when a Counter, every step is counted in it as
        # (instruction name, mode before the step, trapped?), the way a
        # harness wants ISA coverage without stepping the machine one call
        # at a time.  Counting changes nothing that runs: a compiled block is
        # counted by the instructions it holds.
        self.census: Counter | None = None
        self.book = Codebook.of(profile)
        # The partition register (base, size): read by compiled code only on
        # a profile with the partition feature; the whole storage until
        # `set_partition` says otherwise.
        self.partition: list[int] = [0, memsize]
        env = (self.S, self.M, self.out, self._watched, self._invalidate, memsize, self.partition)
        self._env = env
        self._ops: dict[int, Callable] = {}
        self._trap = self.book.trap(*env)
        self._tick = self.book.tick(*env)
        self._undecodable = self.book.undecodable(*env)
        self._fetch = self.book.fetch(*env)
        self._table_reads = self.book.table_reads(*env) if self.book.table_reads else None
        self.reset()

    # -- state access for loaders, VMMs and tests ---------------------------
    def reset(self, entry: int = st.FIRST_FREE) -> None:
        """Power on: supervisor mode, R covering all storage (the partition,
        on a partitioned CPU), everything else 0."""
        self.S[:] = [0] * NSLOTS
        self.S[MODE] = st.SUPERVISOR
        self.S[BOUND] = self.partition[1] if self.arch.partition else self.memsize
        self.S[PC] = entry & self.arch.mask
        self.out.clear()
        self.flush()

    def load(self, image: Image) -> None:
        """Clear storage, place the image, and reset to its entry point.
        Storage is written as one run of words (through a window, one host
        write instead of one per word).  A partitioned CPU's storage is its
        partition: the image goes there, and nothing else is touched."""
        start, size = self.partition if self.arch.partition else (0, self.memsize)
        words = [0] * size
        for addr, word in image.words.items():
            if not 0 <= addr < size:
                raise ValueError(f"image word at {addr:#x} lies outside storage of {size}")
            words[addr] = word & self.arch.mask
        self.M[start : start + size] = words
        self.reset(image.entry)

    def set_partition(self, base: int, size: int) -> None:
        """Load the partition register (profiles with the partition feature,
        spec/partition.py): from now on physical address p < size is host
        word base + p, and no other word exists for this CPU.  Only the
        partition manager calls this; no instruction can."""
        if not self.arch.partition:
            raise ValueError(f"profile {self.profile.name!r} has no partition register")
        if not st.FIRST_FREE * 2 <= size or base < 0 or base + size > self.memsize:
            raise ValueError(
                f"partition [{base:#x}, {base + size:#x}) does not fit storage of {self.memsize} words "
                f"(at least {st.FIRST_FREE * 2} words)"
            )
        self.partition[:] = [base, size]
        self.flush()

    def read(self, addr: int) -> int:
        return self.M[addr]

    def write(self, addr: int, value: int) -> None:
        """Write physical storage from outside the machine (a loader, a VMM)."""
        if not 0 <= addr < len(self.M):
            raise IndexError(f"physical address {addr:#x} does not exist")
        self.M[addr] = value & self.arch.mask
        if (addr >> self.arch.page_bits) in self._watched:
            self._invalidate(addr)

    def write_words(self, addr: int, values: list[int]) -> None:
        """`write` for a run of consecutive physical words, in one go."""
        end = addr + len(values)
        if not 0 <= addr <= end <= len(self.M):
            raise IndexError(f"physical words [{addr:#x}, {end:#x}) do not exist")
        mask = self.arch.mask
        self.M[addr:end] = [v & mask for v in values]
        pb, words = self.arch.page_bits, self._words
        for page in range(addr >> pb, ((end - 1) >> pb) + 1 if values else 0):
            if page in self._watched:  # some word of this page was decoded: which?
                lo, hi = max(addr, page << pb), min(end, (page + 1) << pb)
                hit = next((a for a in range(lo, hi) if a in words), None)
                if hit is not None:
                    self._invalidate(hit)
                    break

    def flush(self) -> None:
        """Drop every cached decode; call after changing storage by other means."""
        self._forget()
        self._watched.clear()
        self._words.clear()
        self._ctx = self._context()
        self._ctx_lines = {self._ctx: self._lines}
        self._flush_windows()

    def forget_entry(self, addr: int) -> None:
        """Drop the cached decodes fetched through the page-table entry at
        physical ``addr``, in every context whose table holds it, and no
        others.  A VMM that drops or rewrites one entry of a table this
        machine translates through (a shadow page table) makes only the
        decodes of that one linear page stale, where `flush` would drop them
        all.  The caller then writes the entry into ``M`` itself: `write`
        would drop every decode, since a cached decode read that word."""
        mask, pb = self.arch.mask, self.arch.page_bits
        for (base, _bound, ptbr, _mode, guest, nptbr), lines in self._ctx_lines.items():
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

    def _forget(self) -> None:
        """Drop the cached decodes of every context (what they watch stays)."""
        self._lines.clear()
        for lines in self._ctx_lines.values():
            lines.clear()

    def _invalidate(self, addr: int) -> None:
        """A watched page was written: if a cached decode read this very word,
        forget every cached decode here and in any machine whose storage is
        a window onto this one.  (Other words of the page, such as the old
        PSW area beside a kernel's code, leave the decodes as they are.)"""
        if addr not in self._words:
            return
        self._forget()
        self._watched.clear()
        self._words.clear()
        self._flush_windows()

    def _flush_windows(self) -> None:
        # Only the decodes: the owner may be inside a compiled block whose
        # store just got here, and that block's own "was it a watched page?"
        # check must still see the page watched, so that it stops.
        for window in self._windows:
            if window.owner is not None:
                window.owner._forget()

    def _context(self) -> tuple:
        return _CONTEXT(self.S)

    def _check_context(self) -> None:
        ctx = _CONTEXT(self.S)  # checked after every trap and resource write
        if ctx != self._ctx:  # decodes depend on the context; watched words do not
            lines = self._ctx_lines.get(ctx)
            if lines is None:
                if len(self._ctx_lines) >= MAX_CONTEXTS:
                    self._ctx_lines.clear()
                lines = self._ctx_lines[ctx] = {}
            self._lines = lines
            self._ctx = ctx

    @property
    def halted(self) -> bool:
        return bool(self.S[HALTED])

    # -- the machine cycle --------------------------------------------------
    def trap(self, cause: int, info: int = 0) -> None:
        """Run the P&G trap mechanism (what a bare machine does on a trap)."""
        self._trap(cause, info)
        self._check_context()

    def step(self, on_trap: TrapHook | None = None) -> RunResult:
        return self.run(1, on_trap, compiled=False)

    def run(
        self, max_steps: int, on_trap: TrapHook | None = None, *, compiled: bool = True
    ) -> RunResult:
        """Run up to ``max_steps`` cycles, or until halt or a hook says stop.

        With a chooser in ``blocks``, it is asked once per decoded line for
        the block to run there; where it declines a pc the run ends, not
        ``stopped``."""
        S = self.S
        census = self.census  # counting never changes what runs: a block is counted by what it holds
        if self.blocks != self._blocks:  # lines made for another chooser are not these
            self._blocks = self.blocks
            self._forget()
        self._check_context()  # the host may have set R, PTBR or mode since the last run
        steps = 0
        while steps < max_steps:
            if S[HALTED]:
                return RunResult(steps, True)
            if S[PEND] and S[IE]:  # take the interrupt: clear the tick, then trap
                steps += 1
                S[PEND] = 0
                if census is not None:
                    census[(INTERRUPT, S[MODE], True)] += 1
                if self._trapped(on_trap, Cause.TIMER, INTERRUPT_INFO):
                    return RunResult(steps, bool(S[HALTED]), True)
                continue
            pc = S[PC]
            line = self._lines.get(pc)  # not kept in a local: a trap may switch context
            if line is None:
                line = self._fill(pc)
                if line is None:  # the block chooser declined pc
                    return RunResult(steps, bool(S[HALTED]))
                if type(line) is tuple:  # fetch or decode trapped
                    steps += 1
                    if census is not None:
                        what = ILLEGAL if line[1] == Cause.ILLEGAL else FETCH_FAULT
                        census[(what, S[MODE], True)] += 1
                    if self._trapped(on_trap, line[1], line[2]):
                        return RunResult(steps, bool(S[HALTED]), True)
                    continue
            block = line.block
            if block is not None and compiled:
                n = line.n
                timer = S[TIMER]
                if n <= max_steps - steps and (timer == 0 or timer > n):
                    if census is not None:
                        mode = S[MODE]
                    r = block()
                    if census is not None:
                        _count_block(census, line.held, n, mode, r)
                    if r is None:
                        steps += n
                        if timer:
                            S[TIMER] = timer - n
                        if line.ctx:
                            self._check_context()
                        continue
                    k, cause, info = r
                    steps += k
                    if timer:
                        S[TIMER] = timer - k
                    if cause:
                        steps += 1
                        if self._trapped(on_trap, cause, info):
                            return RunResult(steps, bool(S[HALTED]), True)
                    continue
            # one instruction, through the per-opcode operation
            if census is not None:
                mode = S[MODE]
            r = line.op(line.rd, line.rs, line.imm)
            steps += 1
            if census is not None:
                census[(line.insn.name, mode, r is not None)] += 1
            if r is None:
                self._tick()
                if line.ctx:
                    self._check_context()
                line.hits += 1
                if line.hits >= self.hot and line.block is None and compiled:
                    self._compile(line, pc)
            else:
                if self._trapped(on_trap, r[1], r[2]):
                    return RunResult(steps, bool(S[HALTED]), True)
        return RunResult(steps, bool(S[HALTED]))

    def _trapped(self, on_trap: TrapHook | None, cause: int, info: int) -> bool:
        if on_trap is None:
            self._trap(cause, info)
            self._check_context()
            return False
        return self._hook(on_trap, cause, info)

    def _hook(self, on_trap: TrapHook, cause: int, info: int) -> bool:
        stop = on_trap(self, int(cause), int(info))
        self._check_context()
        return bool(stop)

    def _fill(self, pc: int) -> _Line | tuple | None:
        chosen = None
        if self._blocks is not None:  # asked first: choosing may write storage
            chosen = self._blocks(pc)
            if not chosen:
                return None
        p0, p1, _ = r = self._fetch()
        if p0 is None:
            return r
        d = self.book.decode(self.M[p0], self.M[p1])
        if d is None:  # the spec's trap for words that are no instruction
            return self._undecodable()
        line = _Line()
        line.phys = p0
        line.insn = d.insn
        line.decoded = d
        line.rd, line.rs, line.imm = d.rd, d.rs, d.imm
        op = self._ops.get(d.insn.opcode)
        if op is None:
            op = self._ops[d.insn.opcode] = self.book.op(d.insn)(*self._env)
        line.op = op
        line.hits = 0
        line.block = None
        line.held = None
        line.n = 1
        line.ctx = self.book.kind(d.insn)[0]
        self._watch(p0)
        self._watch(p1)
        if self.S[st.GUEST]:  # vtx guest mode: guest and nested table words, from the spec
            for addr in self._table_reads():
                self._watch(addr)
        elif self.S[PTBR]:
            self._watch_table(pc)
        if chosen:
            self._install(line, pc, chosen)
        self._lines[pc] = line
        return line

    def _watch(self, addr: int) -> None:
        self._words.add(addr)
        self._watched.add(addr >> self.arch.page_bits)
        window = self._window
        if window is not None:  # the host must tell us when it writes this word
            window.host._watch(window.offset + addr)

    def _watch_table(self, vaddr: int) -> None:
        """With paging on, a cached decode also depends on its page-table entries."""
        S, pb = self.S, self.arch.page_bits
        moved = self.partition[0] if self.arch.partition else 0  # the entry's host word
        for v in (vaddr, vaddr + 1):
            linear = (S[BASE] + (v & self.arch.mask)) & self.arch.mask
            self._watch(moved + ((S[PTBR] + (linear >> pb)) & self.arch.mask))

    def _compile(self, line: _Line, pc: int) -> None:
        """Gather the straight run from ``pc`` and build its block."""
        arch, mask = self.arch, self.arch.mask
        decoded = []
        page = arch.page_size
        start, end = (self.partition[0], sum(self.partition)) if self.arch.partition else (0, self.memsize)
        room = (page - ((line.phys - start) % page)) // ILEN  # whole instructions left in this (guest) page
        bound_room = (self.S[BOUND] - pc) // ILEN if self.S[BOUND] > pc else 0
        limit = min(MAX_BLOCK, room, bound_room, (end - line.phys) // ILEN)
        for k in range(limit):
            p = line.phys + ILEN * k
            d = self.book.decode(self.M[p], self.M[p + 1])
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

    def _install(self, line: _Line, pc: int, decoded: list) -> None:
        """Make ``decoded``, a straight run from ``pc``, the block ``line`` runs."""
        maker, n, ctx = self.book.block(pc, decoded)
        line.block = maker(*self._env)
        line.held = decoded
        line.n = n
        line.ctx = ctx or line.ctx
        for k in range(n):
            self._watch(line.phys + ILEN * k)
            self._watch(line.phys + ILEN * k + 1)

    # -- a readable view of the state ----------------------------------------
    def snapshot(self) -> dict:
        """The full state as plain values (for comparisons and printing)."""
        return {
            "state": [int(v) for v in self.S],
            "memory": {a: w for a, w in enumerate(self.M[: self.memsize]) if w},
            "out": [int(v) for v in self.out],
        }

    def registers(self) -> dict[str, int]:
        return {st.FIELD_NAMES[i]: int(v) for i, v in enumerate(self.S)}
