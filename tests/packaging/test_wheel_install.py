"""A real install runs: the built wheel, in a clean venv, without dev extras.

The Makefile installs popek editable with every extra, which hides two
kinds of mistakes: a package left out of the wheel (once, every
subpackage: ``No module named 'popek.commands'``) and a runtime import that
only a dev extra brings in (campaigns run their workers under pytest with
pytest-xdist).  This test builds the wheel from a copy of the source tree,
installs it alone into a new venv (pip resolves only the runtime
dependencies, from the same indexes the Makefile uses) and runs the
campaign the issue names, which must find the x86 popf/pushf
counterexample.  About 28 s of processor time and 50 to 85 s on the clock
(half of it pip), so it is marked ``slow``: ``make test-slow``, which CI
runs after ``make test``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# what a source copy leaves out: local state and build output
IGNORED = shutil.ignore_patterns(".git", ".venv", ".popek", "build", "dist", "*.egg-info", "__pycache__",
                                 ".pytest_cache", "tests", "bench")  # fmt: skip


def run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["wheel", "directory"])
def test_a_real_install_runs_a_campaign_that_finds_popf(tmp_path: Path, source: str) -> None:
    """``pip install`` of the built wheel, or of the source directory (``pip
    install .``, not editable): either way, only the runtime dependencies."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=IGNORED)
    target = "./src"
    if source == "wheel":
        built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), target],
                    tmp_path)  # fmt: skip
        assert built.returncode == 0, built.stderr[-3000:]
        (wheel,) = (tmp_path / "dist").glob("popek-*.whl")
        target = str(wheel)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    installed = run([str(py), "-m", "pip", "install", "-q", target], tmp_path)
    assert installed.returncode == 0, installed.stderr[-3000:]
    listed = run([str(py), "-m", "pip", "list", "--format=freeze"], tmp_path).stdout.lower()
    assert "redis==" not in listed and "coverage==" not in listed, "dev extras leaked into the runtime install"

    work = tmp_path / "work"  # not the source tree: popek must come from the wheel
    work.mkdir()
    popek = str(env_dir / "bin" / "popek")
    assert run([popek, "--version"], work).stdout.strip() == "popek 0.1.0"
    fuzz = run([popek, "fuzz", "--vmm", "trap-and-emulate", "--profile", "x86", "--cases", "300", "--quiet"], work)
    assert fuzz.returncode == 1, fuzz.stdout + fuzz.stderr[-3000:]  # 1: a counterexample
    assert "Traceback" not in fuzz.stderr
    findings = [line for line in fuzz.stdout.splitlines() if line.strip().startswith("finding: fidelity")]
    assert any("popf" in f or "pushf" in f for f in findings), fuzz.stdout

    # the Redis client is an extra: without it, one line naming the extra
    redis = run([popek, "fuzz", "--vmm", "trap-and-emulate", "--profile", "x86", "--cases", "10",
                 "--db", "redis://127.0.0.1:9/0"], work)  # fmt: skip
    assert redis.returncode == 2
    assert redis.stderr.count("\n") == 1 and "popek[redis]" in redis.stderr, redis.stderr
