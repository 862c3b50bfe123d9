"""`Machine.write_words` (a run of storage written from outside, as a
loader or a window does) must drop exactly the decodes it makes stale.

Decodes are invalidated by word: a write beside cached code leaves them, a
write over any word they read drops them, wherever that word lies in the
run written."""

from __future__ import annotations

import pytest

from popek.model.machine import Machine
from popek.model.window import Window
from popek.spec import state as st
from popek.spec.asm import assemble
from popek.spec.profiles import get

PROGRAM = """
start:  li r1, 1
        out r1
        halt
"""


def _ran_twice(patch_at: int, run_start: int, *, windowed: bool) -> list[int]:
    """Run PROGRAM, patch ``li r1, 1`` into ``li r1, 2`` with one
    write_words covering [run_start, patch_at + 2), run again from the top."""
    prof = get("pg")
    image = assemble(PROGRAM, prof)
    if windowed:
        host = Machine(prof, 1 << prof.arch.word)
        m = Machine(prof, 1024, storage=Window(host, 0x1000, 1024))
    else:
        m = Machine(prof, 1024)
    m.load(image)
    m.run(10)
    words = list(m.M[run_start:patch_at + 2])
    words[patch_at + 1 - run_start] = 2  # the li's immediate
    if windowed:
        m.M[run_start:patch_at + 2] = words
    else:
        m.write_words(run_start, words)
    m.S[st.PC], m.S[st.HALTED] = image.entry, 0  # again, with the decode caches kept
    m.out.clear()
    m.run(10)
    return m.out


@pytest.mark.parametrize("windowed", [False, True])
@pytest.mark.parametrize("run_start", [0, 8, 16])
def test_a_run_written_over_cached_code_is_seen(run_start: int, windowed: bool) -> None:
    entry = assemble(PROGRAM, get("pg")).entry
    assert _ran_twice(entry, run_start, windowed=windowed) == [2]
