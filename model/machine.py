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
instructions are cached per virtual PC and translation context (dropped
when a word they were read from is written), and code that runs more than
once is compiled into straight-line blocks (``popek.model.codegen``).  What
the machine remembers of fetched code is its `FetchCache`
(``popek.model.fetch_cache``); this module is the cycle that uses it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from popek.spec import state as st
from popek.spec.image import Image
from popek.spec.profiles import Profile
from popek.spec.state import BOUND, HALTED, IE, MODE, NSLOTS, PC, PEND, TIMER, Cause
from popek.spec.trap import INTERRUPT_INFO

from .codebook import Codebook
from .fetch_cache import FetchCache


HOT = 2  # by default a line is compiled into a block on its second run
# What `Machine.census` counts a step as when no instruction ran.
INTERRUPT, FETCH_FAULT, ILLEGAL = "<interrupt>", "<fetch-fault>", "<illegal>"


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
        self.M: list[int] = [0] * (1 << arch.word) if storage is None else storage
        if len(self.M) != 1 << arch.word:
            raise ValueError("storage must span the whole address space (2**word words)")
        attach = getattr(self.M, "attach", None)
        if attach is not None:
            attach(self)
        self.out: list[int] = []
        # A caller (a binary translator) may set ``blocks`` to choose what each
        # block holds; its blocks then run through this machine's own loop.
        self.blocks: BlockChooser | None = None
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
        # What this machine remembers of the code it fetched: decodes,
        # the words they were read from, compiled blocks.
        self.cache = cache = FetchCache(self, self.M if attach is not None else None)
        env = (self.S, self.M, self.out, cache.watched, cache.invalidate, memsize, self.partition)
        self._env = env
        self._trap = self.book.trap(*env)
        self._tick = self.book.tick(*env)
        cache.bind(env)
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
        if (addr >> self.arch.page_bits) in self.cache.watched:
            self.cache.invalidate(addr)

    def write_words(self, addr: int, values: list[int]) -> None:
        """`write` for a run of consecutive physical words, in one go."""
        end = addr + len(values)
        if not 0 <= addr <= end <= len(self.M):
            raise IndexError(f"physical words [{addr:#x}, {end:#x}) do not exist")
        mask = self.arch.mask
        self.M[addr:end] = [v & mask for v in values]
        self.cache.written(addr, end)

    def flush(self) -> None:
        """Drop every cached decode; call after changing storage by other means."""
        self.cache.flush()

    def forget_entry(self, addr: int) -> None:
        """Drop the cached decodes fetched through the page-table entry at
        physical ``addr``, in every context whose table holds it, and no
        others.  A VMM that drops or rewrites one entry of a table this
        machine translates through (a shadow page table) makes only the
        decodes of that one linear page stale, where `flush` would drop them
        all.  The caller then writes the entry into ``M`` itself: `write`
        would drop every decode, since a cached decode read that word."""
        self.cache.forget_entry(addr)

    @property
    def halted(self) -> bool:
        return bool(self.S[HALTED])

    # -- the machine cycle --------------------------------------------------
    def trap(self, cause: int, info: int = 0) -> None:
        """Run the P&G trap mechanism (what a bare machine does on a trap)."""
        self._trap(cause, info)
        self.cache.check_context()

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
        cache = self.cache
        census = self.census  # counting never changes what runs: a block is counted by what it holds
        if self.blocks != cache.chooser:  # lines made for another chooser are not these
            cache.chooser = self.blocks
            cache.forget()
        cache.check_context()  # the host may have set R, PTBR or mode since the last run
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
            line = cache.lines.get(pc)  # not kept in a local: a trap may switch context
            if line is None:
                line = cache.fill(pc)
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
                            cache.check_context()
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
                    cache.check_context()
                line.hits += 1
                if line.hits >= self.hot and line.block is None and compiled:
                    cache.compile(line, pc)
            else:
                if self._trapped(on_trap, r[1], r[2]):
                    return RunResult(steps, bool(S[HALTED]), True)
        return RunResult(steps, bool(S[HALTED]))

    def _trapped(self, on_trap: TrapHook | None, cause: int, info: int) -> bool:
        if on_trap is None:
            self._trap(cause, info)
            self.cache.check_context()
            return False
        return self._hook(on_trap, cause, info)

    def _hook(self, on_trap: TrapHook, cause: int, info: int) -> bool:
        stop = on_trap(self, int(cause), int(info))
        self.cache.check_context()
        return bool(stop)

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
