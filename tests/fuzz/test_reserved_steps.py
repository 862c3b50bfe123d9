"""reserved() may name words with a step: only those words are kept out of
the canary check, not the whole span (a write between them is a safety
finding).  The span used to be kept whole."""

from __future__ import annotations

from popek.fuzz import execute
from popek import session
from popek.fuzz.guest import GuestCase, Op
from tiny_vmms import Interpreter

STRAY = 0x0123  # a host word no VMM below reserves


class WritesStray(Interpreter):
    name = "tiny-writes-stray"

    def run(self, steps):
        self.host.M[STRAY] ^= 1
        return super().run(steps)


class StepReserves(WritesStray):
    def reserved(self):
        return [range(0, 0x1000, 0x800)]  # words 0x000 and 0x800 only


class DownwardReserves(WritesStray):
    """Reserves the stray word, counted downwards: its write is legitimate."""

    def reserved(self):
        return [range(STRAY + 8, STRAY - 8, -1)]


def _safety(vmm) -> list[str]:
    run = execute.run_vmm(vmm, GuestCase("pg", (Op("li", 3, 0, 7), Op("out", 0, 3)), steps=4))
    return [p.message for p in run.problems if p.kind == "safety"]


def test_a_write_between_the_words_of_a_stepped_range_is_seen():
    found = _safety(StepReserves)
    assert len(found) == 1 and f"host word {STRAY:#06x}" in found[0]


def test_a_downward_range_reserves_its_words():
    assert _safety(DownwardReserves) == []


def test_first_change_keeps_exactly_the_words_of_each_range():
    canary = list(range(100, 200))
    for r in (range(-7, 50, 3), range(95, -10, -4), range(-20, -3, 2), range(99, 1000, 7), range(10, 0)):
        M = [0] * 100
        session.first_change(M, canary, [r])
        assert M == [canary[a] if a in r else 0 for a in range(100)], r
