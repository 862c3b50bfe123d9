"""Running popek against the loopback cluster of conftest.py, as a user would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

DASK = Path(sys.executable).with_name("dask")
START_TIMEOUT = 60.0  # seconds for the scheduler and workers to come up


# Dask's own bookkeeping turned down as docs/cluster.md advises: a popek task
# is a thread that mostly sleeps, so the worker's sampling profiler and a
# 20 ms tick cost more CPU than they tell (about 3% of a core per idle worker)
QUIET_DASK = {
    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
    "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "1s",
    "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL": "2s",
}


def cluster_env() -> dict:
    env = dict(os.environ)
    env.update(QUIET_DASK)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def popek(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "popek", *args], cwd=cwd, env=cluster_env(),
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def start_popek(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "popek", *args], cwd=cwd, env=cluster_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
