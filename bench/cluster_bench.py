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

On a machine shared with other work the wall-time ratio says as much about
the kernel's scheduler as about Dask: four processes get a larger share of
a busy machine than two.  So the CPU each run cost is measured too (the
command's process tree, plus, for the cluster, what the scheduler, the
workers and the campaign processes they reaped used meanwhile), and cases
per CPU second compared: that ratio is Dask's overhead whatever the load.
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

CASES = 2000
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


def _cpu(pids: list[int]) -> float:
    """CPU seconds of these processes and of the children they reaped."""
    import psutil

    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system + t.children_user + t.children_system
    return total


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _timed(args: list[str], cwd: Path, env: dict, servers: list[int]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one ``popek`` command; ``servers``:
    the long-running processes whose CPU meanwhile counts too."""
    cpu0, own0 = _cpu(servers), _children_cpu()
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "popek", *args], cwd=cwd, env=env,
                       capture_output=True, text=True)  # fmt: skip
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        raise RuntimeError(f"popek {' '.join(args)}: exit {r.returncode}: {(r.stderr or r.stdout)[-400:]}")
    return elapsed, (_children_cpu() - own0) + (_cpu(servers) - cpu0)


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
            redis_pid = [procs[0].pid]
            dask_pids = [q.pid for q in procs[1:]]
            local, remote = [], []
            for k in range(ROUNDS):
                db = f"redis://127.0.0.1:{rport}/"
                run_dir = root / f"round-{k}"
                (run_dir / "local").mkdir(parents=True)
                (run_dir / "cluster").mkdir()
                local.append(_timed([*CAMPAIGN, "--cases", str(CASES), "--workers", str(LOCAL_WORKERS),
                                     "--db", db + str(2 * k)], run_dir / "local", env, redis_pid))  # fmt: skip
                remote.append(_timed([*CAMPAIGN, "--cases", str(CASES), "--workers", str(DASK_WORKERS),
                                      "--cluster", address, "--db", db + str(2 * k + 1)],
                                     run_dir / "cluster", env, redis_pid + dask_pids))  # fmt: skip
        finally:
            for p in reversed(procs):
                p.terminate()
            for p in reversed(procs):
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    here = CASES / statistics.median(w for w, _ in local)
    there = CASES / statistics.median(w for w, _ in remote)
    here_cpu = CASES / statistics.median(c for _, c in local)
    there_cpu = CASES / statistics.median(c for _, c in remote)
    return [
        (f"local --workers {LOCAL_WORKERS}, {CASES} cases (median of {ROUNDS})", here, "cases/s"),
        (f"{DASK_WORKERS} Dask workers, {CASES} cases (median of {ROUNDS})", there, "cases/s"),
        ("cluster / local throughput (target >= 90%)", 100 * there / here, "%"),
        (f"local --workers {LOCAL_WORKERS}: cases per CPU second", here_cpu, "cases/CPU s"),
        (f"{DASK_WORKERS} Dask workers: cases per CPU second", there_cpu, "cases/CPU s"),
        ("cluster / local cases per CPU second", 100 * there_cpu / here_cpu, "%"),
    ]


if __name__ == "__main__":
    for row, value, unit in bench():
        print(f"{row:<55} {value:>14,.2f} {unit}")
