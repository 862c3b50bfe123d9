"""Benchmarks of the classic VMM designs (issue 3's targets).

`bench()` returns ``(name, value, unit and target)`` rows; every ratio is
measured within one call, bare and virtualized runs interleaved, and taken
between the fastest run of each (the run least disturbed by other load on
the machine), so load affects both alike.  Each run is checked (steps run, no unexpected
trap, the loop's work done) so that a broken VMM cannot look fast.

- trap-and-emulate on pg, an ALU/branch loop: speed as a share of the bare
  machine's (target >= 90%), and the share of guest instructions the host
  executed directly (target >= 99%);
- a guest whose every 10th instruction is privileged (so traps and is
  emulated): the VMM's cost per trap in microseconds, and in host
  instructions (the bare machine's instructions per second times the
  seconds one trap costs).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bare_machine import ALU_LOOP, ALU_PER_ITERATION  # noqa: E402

from popek.model.machine import Machine  # noqa: E402
from popek.model.vmms.trap_and_emulate import TrapAndEmulate  # noqa: E402
from popek.spec import profiles  # noqa: E402
from popek.spec.asm import assemble  # noqa: E402

MEMSIZE = 4096
RUNS = 7
ALU_STEPS = 2_000_000
TRAP_STEPS = 200_000

# Nine innocuous instructions, then a privileged one: `di` is emulated by
# the VMM (one virtual-CPU step) and changes nothing the loop depends on.
EVERY_TENTH = """
start:  li   r1, 0
        li   r2, 3
        li   r5, 0
loop:   add  r1, r2          ; 10 instructions per iteration, the 10th traps
        xor  r3, r1
        shl  r3, r2
        sub  r4, r1
        cmp  r1, r3
        jc   below
below:  addi r5, 1
        mov  r6, r5
        di
        jmp  loop
"""
TRAP_PER_ITERATION = 10


def _bare(text: str, steps: int) -> tuple[float, Machine]:
    p = profiles.get("pg")
    m = Machine(p, MEMSIZE)
    m.load(assemble(text, p))
    t0 = time.perf_counter()
    r = m.run(steps)
    elapsed = time.perf_counter() - t0
    assert r.steps == steps and not r.halted
    return elapsed, m


def _virtual(text: str, steps: int) -> tuple[float, TrapAndEmulate]:
    p = profiles.get("pg")
    vmm = TrapAndEmulate(Machine(p, 1 << p.arch.word))
    vmm.load(assemble(text, p), memsize=MEMSIZE)
    t0 = time.perf_counter()
    r = vmm.run(steps)
    elapsed = time.perf_counter() - t0
    assert r.steps == steps and not r.halted
    return elapsed, vmm


def _loop_ran(machine_r5: int, steps: int, per_iteration: int) -> None:
    full = (steps - 3) // per_iteration
    assert (machine_r5 - full) & 0xFFFF in (0, 1), "the loop did not run"


def bench() -> list[tuple[str, float, str]]:
    bare_t, virt_t = [], []
    for _ in range(RUNS):
        t, m = _bare(ALU_LOOP, ALU_STEPS)
        _loop_ran(m.S[5], ALU_STEPS, ALU_PER_ITERATION)
        bare_t.append(t)
        t, vmm = _virtual(ALU_LOOP, ALU_STEPS)
        _loop_ran(vmm.guest_state().regs["r5"], ALU_STEPS, ALU_PER_ITERATION)
        virt_t.append(t)
    c = vmm.counters()
    speed = min(bare_t) / min(virt_t)
    direct = c.direct / c.guest_steps

    tbare_t, tvirt_t = [], []
    for _ in range(RUNS):
        t, m = _bare(EVERY_TENTH, TRAP_STEPS)
        _loop_ran(m.S[5], TRAP_STEPS, TRAP_PER_ITERATION)
        tbare_t.append(t)
        t, vmm = _virtual(EVERY_TENTH, TRAP_STEPS)
        _loop_ran(vmm.guest_state().regs["r5"], TRAP_STEPS, TRAP_PER_ITERATION)
        tvirt_t.append(t)
    traps = vmm.counters().traps["privileged"]
    assert abs(traps - TRAP_STEPS // TRAP_PER_ITERATION) <= 1, traps
    per_trap = (min(tvirt_t) - min(tbare_t)) / traps
    bare_rate = ALU_STEPS / min(bare_t)
    return [
        ("trap-and-emulate pg ALU/branch: speed vs bare", 100 * speed, "% (target >= 90%)"),
        ("trap-and-emulate pg ALU/branch: executed directly", 100 * direct, "% (target >= 99%)"),
        ("trap every 10th instruction: VMM cost per trap", per_trap * 1e6, "us"),
        ("trap every 10th instruction: VMM cost per trap", per_trap * bare_rate, "host instructions"),
        ("bare machine ALU/branch (reference)", bare_rate, "instr/s"),
    ]


if __name__ == "__main__":
    for name, value, unit in bench():
        print(f"{name:<55} {value:>12,.1f} {unit}")
