"""Benchmarks of the bare machine: guest instructions per second.

Each benchmark builds a guest that loops for ever, runs it for a fixed number
of steps and checks that it really ran the loop (no trap, the expected work
done), so a broken machine cannot look fast.  The three loops match the
targets of issue 2: ALU and branches, loads and stores through a non-zero
relocation base, and loads and stores with paging on.
"""

from __future__ import annotations

from popek.model.machine import Machine
from popek.spec import profiles
from popek.spec import state as st
from popek.spec.asm import assemble
from popek.spec.image import Image

from harness import Benchmark, Prepared

PROFILE = "pg"
MEMSIZE = 4096


class Trapped(RuntimeError):
    """A benchmark loop trapped: its figure would measure the wrong thing."""


def no_traps(machine: Machine, cause: int, info: int) -> bool:
    raise Trapped(f"trap {st.Cause(cause).name} (info {info:#x}) at pc {machine.S[st.PC]:#x}")


def _iterations_match(counter: int, loop_steps: int, per_iteration: int) -> bool:
    """A loop counter register (one word, so it wraps) agrees with the steps run."""
    full = loop_steps // per_iteration
    return (counter - full) & profiles.get(PROFILE).arch.mask in (0, 1)


def _machine(image: Image) -> Machine:
    m = Machine(profiles.get(PROFILE), MEMSIZE)
    m.load(image)
    return m


# -- (a) ALU and branches ------------------------------------------------------
ALU_LOOP = """
start:  li   r1, 0
        li   r2, 3
        li   r5, 0
loop:   add  r1, r2          ; 8 instructions per iteration
        xor  r3, r1
        shl  r3, r2
        sub  r4, r1
        cmp  r1, r3
        jc   below
below:  addi r5, 1
        jmp  loop
"""
ALU_PER_ITERATION = 8


def alu_branch(steps: int) -> Prepared:
    m = _machine(assemble(ALU_LOOP, profiles.get(PROFILE)))

    def check() -> None:
        assert _iterations_match(m.S[5], steps - 3, ALU_PER_ITERATION), "the loop did not run"

    return Prepared(lambda: m.run(steps, no_traps), check)


# -- (b) loads and stores through relocation -----------------------------------
# The prologue at physical 16 loads R = (BASE, LIMIT) with `wrr`; the next
# fetch is relocated, so the loop is assembled at virtual addresses from the
# prologue's end and placed at physical BASE + that.
BASE, LIMIT = 0x400, 0x400
PROLOGUE = f"""
start:  li   r1, {BASE:#x}
        li   r2, {LIMIT:#x}
        wrr  r1, r2          ; from the next fetch on, virtual a is physical {BASE:#x} + a
"""
LOAD_STORE_LOOP = """
        li   r4, 0           ; index into buf
        li   r5, 63          ; index mask
        li   r6, 0           ; iterations
loop:   ld   r2, buf(r4)     ; 7 instructions per iteration
        addi r2, 1
        st   r2, buf(r4)
        addi r4, 1
        and  r4, r5
        addi r6, 1
        jmp  loop
        .org 0x200
buf:    .space 64
"""
LOAD_STORE_PER_ITERATION = 7


def _relocated(prologue: str, body: str, base: int) -> Image:
    pg = profiles.get(PROFILE)
    head = assemble(prologue, pg)
    resume = max(head.words) + 1  # first virtual address after `wrr`
    tail = assemble(f"        .org {resume:#x}\n" + body, pg)
    words = dict(head.words)
    words.update({base + a: w for a, w in tail.words.items()})
    return Image(words, head.entry)


def load_store_relocated(steps: int) -> Prepared:
    m = _machine(_relocated(PROLOGUE, LOAD_STORE_LOOP, BASE))

    def check() -> None:
        assert (m.S[st.BASE], m.S[st.BOUND]) == (BASE, LIMIT)
        done = m.S[6]
        assert _iterations_match(done, steps - 6, LOAD_STORE_PER_ITERATION), "the loop did not run"
        stored = sum(m.M[BASE + 0x200 : BASE + 0x240])
        assert (stored - done) & m.arch.mask in (0, 1), "the loop did not store"

    return Prepared(lambda: m.run(steps, no_traps), check)


# -- (c) the same loop with paging on --------------------------------------------
PAGE_TABLE = 0xC00
DATA_FRAME = 0x800  # virtual page 8 (buf at 0x200) lives in this frame
PAGING_PROLOGUE = f"""
start:  li   r1, {PAGE_TABLE:#x}
        lptb r1              ; from the next fetch on, addresses go through the table
"""


def _page_table(memsize: int, page_bits: int) -> dict[int, int]:
    """Identity for every page of storage except buf's, which moves to DATA_FRAME."""
    flags = st.PTE_PRESENT | st.PTE_WRITE | st.PTE_USER
    table = {PAGE_TABLE + vpn: (vpn << page_bits) | flags for vpn in range(memsize >> page_bits)}
    table[PAGE_TABLE + (0x200 >> page_bits)] = DATA_FRAME | flags
    return table


def load_store_paged(steps: int) -> Prepared:
    pg = profiles.get(PROFILE)
    head = assemble(PAGING_PROLOGUE, pg)
    tail = assemble(f"        .org {max(head.words) + 1:#x}\n" + LOAD_STORE_LOOP, pg)
    words = {**head.words, **{a: w for a, w in tail.words.items() if a < 0x200}}
    words.update(_page_table(MEMSIZE, pg.arch.page_bits))
    m = _machine(Image(words, head.entry))

    def check() -> None:
        assert m.S[st.PTBR] == PAGE_TABLE
        done = m.S[6]
        assert _iterations_match(done, steps - 5, LOAD_STORE_PER_ITERATION), "the loop did not run"
        stored = sum(m.M[DATA_FRAME : DATA_FRAME + 64])
        assert (stored - done) & m.arch.mask in (0, 1), "the loop did not store"
        assert not any(m.M[0x200:0x240]), "buf was not translated to its frame"

    return Prepared(lambda: m.run(steps, no_traps), check)


BENCHMARKS = [
    Benchmark("ALU/branch loop", alu_branch, 2_000_000, target=3_000_000),
    Benchmark("load/store, relocation base != 0", load_store_relocated, 1_500_000),
    Benchmark("load/store, paging on", load_store_paged, 1_500_000, target=1_500_000),
]
