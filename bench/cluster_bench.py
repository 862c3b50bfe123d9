"""Cluster campaigns: four Dask workers on this machine against ``--workers 2`` locally.

The same campaign (trap-and-emulate on pg, faithful, so every case of the
budget runs), the same case budget and seed, once as a local ``popek fuzz
--workers 2`` and once as ``popek fuzz --workers 4 --cluster`` on a
scheduler and four one-thread workers started here on loopback, both on
one Redis database each.  Throughput is the budget over the command's wall
time, start to end (the client's start, the tasks' child processes and the
report included; the cluster's own start is not: it is up before a user
runs popek).  Target (issue 15): the cluster's throughput at least 0.9 of
the local one, i.e. Dask's overhead small.  Rounds alternate local and
cluster so that a change in the machine's load hits both alike; medians.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = 3000
ROUNDS = 3
DASK_WORKERS = 4
LOCAL_WORKERS = 2
CAMPAIGN = ["fuzz", "--vmm", "trap-and-emulate", "--profile", "pg", "--seed", "1", "--quiet", "--time", "10m"]
# as docs/cluster.md advises for popek's mostly-sleeping tasks
QUIET_DASK = {
    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
    "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "1s",
    "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL": "2s",
}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}") from None
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on {port}")


def _timed(args: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "popek", *args], cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        raise RuntimeError(f"popek {' '.join(args)}: exit {r.returncode}: {(r.stderr or r.stdout)[-400:]}")
    return elapsed


def bench():
    redis_server = shutil.which("redis-server")
    dask = Path(sys.executable).with_name("dask")
    if redis_server is None or not dask.exists():
        return [("cluster bench: needs redis-server and popek[cluster] (not run)", 0.0, "")]
    env = dict(os.environ, **QUIET_DASK)
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="popek-cluster-bench-") as tmp:
        root = Path(tmp)
        try:
            rport, sport = _port(), _port()
            procs.append(subprocess.Popen(
                [redis_server, "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
            _wait_port(rport, procs[-1], "redis-server")
            procs.append(subprocess.Popen(
                [str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(sport), "--no-dashboard"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
            _wait_port(sport, procs[-1], "dask scheduler")
            address = f"tcp://127.0.0.1:{sport}"
            for k in range(DASK_WORKERS):
                procs.append(subprocess.Popen(
                    [str(dask), "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                     "--name", f"bench-{k}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                ))  # fmt: skip
            from distributed import Client

            with Client(address, timeout="30s", set_as_default=False) as client:
                client.wait_for_workers(DASK_WORKERS, timeout=60)
            local, remote = [], []
            for k in range(ROUNDS):
                db = f"redis://127.0.0.1:{rport}/"
                run_dir = root / f"round-{k}"
                (run_dir / "local").mkdir(parents=True)
                (run_dir / "cluster").mkdir()
                local.append(_timed([*CAMPAIGN, "--cases", str(CASES), "--workers", str(LOCAL_WORKERS),
                                     "--db", db + str(2 * k)], run_dir / "local", env))  # fmt: skip
                remote.append(_timed([*CAMPAIGN, "--cases", str(CASES), "--workers", str(DASK_WORKERS),
                                      "--cluster", address, "--db", db + str(2 * k + 1)],
                                     run_dir / "cluster", env))  # fmt: skip
        finally:
            for p in reversed(procs):
                p.terminate()
            for p in reversed(procs):
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    here, there = CASES / statistics.median(local), CASES / statistics.median(remote)
    return [
        (f"local --workers {LOCAL_WORKERS}, {CASES} cases (median of {ROUNDS})", here, "cases/s"),
        (f"{DASK_WORKERS} Dask workers, {CASES} cases (median of {ROUNDS})", there, "cases/s"),
        ("cluster / local throughput (target >= 90%)", 100 * there / here, "%"),
    ]


if __name__ == "__main__":
    for row, value, unit in bench():
        print(f"{row:<55} {value:>14,.2f} {unit}")
