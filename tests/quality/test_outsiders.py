"""`popek check` catches buggy plug-ins written by outsiders (outsider_bugs.py)
at its default budget and seed, run as a user runs it: a separate process,
the plug-in named by import path (so popek runs it in a process of its
own), a fresh example database.

Each bug here was missed once (popek printed MATCH); the module docstrings
of the fixes say what changed.  A finding must never print MATCH, and its
evidence (the guest as assembly, a replay line) is printed, not just a path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

QUALITY = str(Path(__file__).resolve().parent)


def popek_check(cls: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    """``popek check outsider_bugs:CLS`` at the default budget (seed 1 unless ``extra`` says)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [QUALITY, os.environ.get("PYTHONPATH")])))
    return subprocess.run(
        [sys.executable, "-m", "popek", "check", f"outsider_bugs:{cls}", "--findings", str(tmp_path / "found"),
         "--db", str(tmp_path / "db"), *extra],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip


def pg_row(stdout: str, cls: str) -> str:
    rows = [line for line in stdout.splitlines() if line.startswith(f"outsider_bugs:{cls} ")]
    assert len(rows) == 1, stdout
    return rows[0]


@pytest.mark.campaign
def test_a_correct_outsider_plugin_matches(tmp_path):
    """The design the others fork passes everything, its capabilities
    included: they run in the plug-in's own process (once they failed
    there on a session attribute the remote session lacked, and the table
    still said MATCH)."""
    r = popek_check("OutsiderTE", tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert pg_row(r.stdout, "OutsiderTE").endswith(" MATCH")
    assert "capabilities (snapshot, suspend) on pg: 40 interleavings with guest runs passed" in r.stdout


# (class, what the pg row's verdict names): each found at seed 1, default budget
CAUGHT = [
    ("UndefinedAsPrivileged", "fidelity"),
    ("StateRoundedToPages", "fidelity"),
    ("ShadowKeptWhenPagingOff", "fidelity"),
    ("InterpretsUserMode", "efficiency"),
    ("SlowsDownAfterAWhile", "efficiency"),
]


@pytest.mark.campaign
@pytest.mark.parametrize("cls,requirement", CAUGHT, ids=[c for c, _ in CAUGHT])
def test_outsider_bug_is_caught(cls, requirement, tmp_path):
    r = popek_check(cls, tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    row = pg_row(r.stdout, cls)
    verdict = row.rsplit("  ", 1)[1]
    assert verdict.startswith("MISMATCH (") and requirement in verdict, row
    # the evidence is printed, not only a path
    assert "guest (assembly):" in r.stdout and "\nreplay: popek fuzz --vmm " in r.stdout, r.stdout
    print(row)


# Found at most seeds, not all: a primed operand must meet the one value that
# matters (0xFFFF for `out`; a popped V kept until a checkpoint for `popf`).
# Seeds 1-5 at c2a5350: `out` found at all 5, `popf` at 3 (seeds 1, 2 and 4;
# docs/fuzzing.md); here, found at 2 of the 3 seeds 2-4 at least.
SOMETIMES = ["OutPortAllOnesDropped", "PopfLosesOverflow"]


@pytest.mark.slow  # three default checks each: about a minute
@pytest.mark.parametrize("cls", SOMETIMES)
def test_outsider_bug_is_caught_at_most_seeds(cls, tmp_path):
    caught = []
    for seed in (2, 3, 4):
        r = popek_check(cls, tmp_path / str(seed), "--seed", str(seed))
        row = pg_row(r.stdout, cls)
        assert " MATCH" in row or "MISMATCH (fidelity)" in row, row  # nothing else goes wrong
        caught.append(r.returncode == 1 and "MISMATCH (fidelity)" in row)
    assert sum(caught) >= 2, caught
    print(cls, caught)


def test_a_misspelt_profile_is_an_error(tmp_path):
    """A declared profile nobody registers is one line and exit 2, before
    any campaign: not a row silently left out."""
    r = popek_check("MisspeltProfile", tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout == "" and "Traceback" not in r.stderr
    assert "'x68'" in r.stderr and "no registered profile" in r.stderr and r.stderr.count("\n") == 1
