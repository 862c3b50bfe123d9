"""Migration and snapshot files (issue 12's targets).

`bench()` returns ``(name, value, unit and target)`` rows:

- pre-copy of a guest that writes a small working set (one store every few
  instructions, cycling over 10% of its pages): rounds (target <= 5),
  downtime as a share of the migration (target <= 5%), and pages sent per
  guest page; the same guest by stop-and-copy, for comparison;
- a guest that dirties a page every five instructions, over a link slower
  than that: it hits the round cap, and the report says so (with Clark's
  traffic cap of three storages as well, that cap stops it first);
- a snapshot of a guest of 60 Ki words (the largest a 64 Ki-word host holds
  beside the VMM's reserved storage) written to a file, and read and
  restored on a fresh host: the fastest of five runs each (target <= 50 ms).

Every migration is checked: the guest, run on on the target, must end as
the unmigrated bare run, or the row says it did not.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from popek import snapshot_file
from popek.model.machine import Machine
from popek.model.migration import Link
from popek.model.vmms.trap_and_emulate import TrapAndEmulate
from popek.spec import profiles
from popek.spec.asm import assemble
from popek.vmm import GuestState

PROFILE = profiles.get("pg")
MEMSIZE = 16384  # 256 pages of 64 words
BANDWIDTH = 64  # words per guest step: a page a step

# Stores cycle over 26 pages (10% of 256), one store every ~10 instructions.
WORKING_SET = """
start:  li   r1, 0x1000
        li   r5, 0
loop:   li   r4, 3
wait:   addi r4, -1
        jnz  wait
        st   r5, 0(r1)
        addi r5, 1
        addi r1, 64
        cmpi r1, 0x1680
        jnz  loop
        li   r1, 0x1000
        jmp  loop
"""
# A store to the next page every five instructions, over all of storage.
DIRTY_ALL = """
start:  li   r1, 0x40
loop:   st   r2, 0(r1)
        addi r1, 64
        addi r2, 1
        cmpi r1, 0x4000
        jnz  loop
        li   r1, 0x40
        jmp  loop
"""


def _migrate(text: str, *, at: int, bandwidth: int, max_rounds: int, traffic: bool = True):
    image = assemble(text, PROFILE, file="<bench>")
    src = TrapAndEmulate(Machine(PROFILE, 1 << 16))
    src.load(image, memsize=MEMSIZE)
    src.run(at)
    dst = TrapAndEmulate(Machine(PROFILE, 1 << 16))
    link = Link(bandwidth, cap=3 * MEMSIZE + 4096 if traffic else None, max_rounds=max_rounds)
    report = src.migrate_to(dst, link)
    bare = Machine(PROFILE, MEMSIZE)
    bare.load(image)
    bare.run(at + report.guest_steps + 500)
    dst.run(500)
    ok = not GuestState.from_machine(bare).differences(dst.guest_state())
    return report, ok


def _rows(label: str, report, ok: bool) -> list[tuple[str, float, str]]:
    pages = MEMSIZE // 64
    tag = "" if ok else " (GUEST DIFFERS AFTER MIGRATION)"
    share = 100 * report.downtime / report.total_time if report.total_time else 0.0
    return [
        (f"{label}: rounds ({report.stopped_by}){tag}", report.rounds, "rounds"),
        (f"{label}: pages sent", report.pages_sent, "pages: " + ", ".join(map(str, report.pages_per_round))
         + " (rounds, then the final copy)"),
        (f"{label}: downtime", report.downtime, f"guest steps = {share:.1f}% of {report.total_time}"),
        (f"{label}: pages sent / guest pages", report.pages_sent / pages, f"({report.traffic_ratio:.2f} x storage in words)"),
    ]  # fmt: skip


def _snapshot_times(memsize: int) -> tuple[float, float, bool]:
    image = assemble(WORKING_SET, PROFILE, file="<bench>")
    vmm = TrapAndEmulate(Machine(PROFILE, 1 << 16))
    vmm.load(image, memsize=memsize)
    vmm.run(5000)
    writes, reads = [], []
    fd, path = tempfile.mkstemp(suffix=".snap")
    os.close(fd)
    try:
        for _ in range(5):
            start = time.perf_counter()
            snapshot_file.write(path, vmm.snapshot(), profile="pg", vmm_cls=TrapAndEmulate, memsize=memsize)
            writes.append(time.perf_counter() - start)
            host = Machine(PROFILE, 1 << 16)
            start = time.perf_counter()
            _, snap = snapshot_file.read(path, profile="pg", vmm_cls=TrapAndEmulate)
            fresh = TrapAndEmulate(host)
            fresh.restore(snap)
            reads.append(time.perf_counter() - start)
    finally:
        os.unlink(path)
    same = fresh.guest_state() == vmm.guest_state()
    return min(writes), min(reads), same


def bench() -> list[tuple[str, float, str]]:
    rows = []
    r, ok = _migrate(WORKING_SET, at=1000, bandwidth=BANDWIDTH, max_rounds=30)
    rows += _rows("pre-copy, 10% working set (target <= 5 rounds, <= 5%)", r, ok)
    r, ok = _migrate(WORKING_SET, at=1000, bandwidth=BANDWIDTH, max_rounds=0)
    rows += _rows("stop-and-copy, same guest", r, ok)
    r, ok = _migrate(DIRTY_ALL, at=1000, bandwidth=8, max_rounds=5, traffic=False)
    rows += _rows("dirtying every page, 8 words/step, round cap 5", r, ok)
    rows += [(f"  note: {n}", 0, "") for n in r.notes]
    r, ok = _migrate(DIRTY_ALL, at=1000, bandwidth=8, max_rounds=30)
    rows += _rows("dirtying every page, 8 words/step, Clark's caps (30, 3x)", r, ok)
    rows += [(f"  note: {n}", 0, "") for n in r.notes]
    words = 0xF000
    write, read, same = _snapshot_times(words)
    tag = "" if same else " (RESTORED GUEST DIFFERS)"
    rows.append((f"snapshot file, {words // 1024} Ki words: write (target <= 50){tag}", write * 1000, "ms"))
    rows.append((f"snapshot file, {words // 1024} Ki words: read + restore on a fresh host", read * 1000, "ms"))
    return rows


if __name__ == "__main__":
    for row, value, unit in bench():
        print(f"{row:<62} {value:>10,.1f} {unit}")
    sys.exit(0)
