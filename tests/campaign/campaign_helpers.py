"""Running `popek fuzz` as a user would: a separate process, its own environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TINY = str(Path(__file__).resolve().parent.parent / "fuzz")  # tiny_vmms.py
HERE = str(Path(__file__).resolve().parent)  # planted_unsafe.py
QUALITY = str(Path(__file__).resolve().parent.parent / "quality")  # planted_bugs.py


def popek_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([TINY, HERE, QUALITY, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def popek(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "popek", *args],
        cwd=cwd, env=popek_env(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def start_popek(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "popek", *args],
        cwd=cwd, env=popek_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
