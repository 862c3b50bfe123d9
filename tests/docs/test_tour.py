"""The README's five-minute tour, run exactly as written.

Each ``$ `` line of the tour's block runs in bash, in a fresh directory
that has the checkout's ``examples/`` (the tour's files) and popek's
``bin`` first on PATH, as after ``make``; then what each step promises is
checked.  About 30 s of processor time: marked ``slow`` (``make test-slow``,
which CI runs).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def tour_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Five-minute tour", 1)[1]
    block = re.search(r"```console\n(.*?)```", section, re.S).group(1)
    return [line[2:] for line in block.splitlines() if line.startswith("$ ")]


def test_the_tour_has_its_steps():
    commands = tour_commands()
    assert [c.split("popek ", 1)[1].split()[0] for c in commands] == ["prove", "fuzz", "check", "check"]


@pytest.mark.slow
def test_the_tour_runs_as_written(tmp_path):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    runs = [subprocess.run(["bash", "-c", c], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
            for c in tour_commands()]  # fmt: skip
    for r in runs:
        assert "Traceback" not in r.stderr, r.stderr
    prove, fuzz, bt, toy = runs
    assert prove.returncode == 0 and re.search(r"^popf on x86: privileged=no.*sensitive=yes", prove.stdout, re.M)
    assert fuzz.returncode == 1, fuzz.stdout + fuzz.stderr
    assert re.search(r"finding: fidelity: .*(popf|pushf) in supervisor mode", fuzz.stdout), fuzz.stdout
    assert fuzz.stdout.splitlines()[-1] == f"report: {tmp_path / 'tour' / 'index.html'}"
    assert (tmp_path / "tour" / "index.html").is_file()
    assert bt.returncode == 0 and "MATCH" in bt.stdout and "MISMATCH" not in bt.stdout, bt.stdout + bt.stderr
    assert toy.returncode == 0 and "contract: " in toy.stdout and "MISMATCH" not in toy.stdout, toy.stdout + toy.stderr
