"""A real Dask cluster on loopback for these tests: ``dask scheduler`` and two
``dask worker`` processes started with the venv's ``dask`` command, and a
real ``redis-server`` for the example database they share.

Both fixtures always tear down what they started (their own processes, by
id).  A missing ``dask`` command or ``redis-server`` is a failure that says
why, not a skip: running on a cluster is a feature, and an untested feature
is not one.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cluster_helpers import DASK, START_TIMEOUT, cluster_env, free_port


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Cluster:
    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen] = field(default_factory=list)
    logs: Path | None = None

    def start_worker(self, name: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")
        proc = subprocess.Popen(
            [str(DASK), "worker", self.address, "--name", name, "--nthreads", "1", "--no-nanny",
             "--no-dashboard", "--death-timeout", "60"],
            env=cluster_env(), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        self.workers.append(proc)
        return proc

    def wait_for_workers(self, n: int) -> None:
        from distributed import Client

        with Client(self.address, timeout="30s", set_as_default=False) as client:
            client.wait_for_workers(n, timeout=START_TIMEOUT)

    def tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(self.logs.glob("*.log")))


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    if not DASK.exists():
        pytest.fail(f"{DASK} is missing: install the cluster extra (pip install -e '.[dev]')")
    logs = tmp_path_factory.mktemp("dask")
    port = free_port()
    log = open(logs / "scheduler.log", "w")
    scheduler = subprocess.Popen(
        [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        env=cluster_env(), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    cluster = Cluster(f"tcp://127.0.0.1:{port}", scheduler, logs=logs)
    try:
        deadline = time.time() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if scheduler.poll() is not None or time.time() > deadline:
                    pytest.fail("dask scheduler did not start:\n" + cluster.tail())
                time.sleep(0.2)
        cluster.start_worker("w1")
        cluster.start_worker("w2")
        cluster.wait_for_workers(2)
        yield cluster
    finally:
        for proc in cluster.workers:
            _stop(proc)
        _stop(scheduler)


def _redis_server() -> str:
    path = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin:/usr/sbin")
    if not path:
        pytest.fail("redis-server is not installed (.ci/run installs Debian's package)")
    return path


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """(host, port) of a fresh redis-server on loopback."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None:
                    pytest.fail(f"redis-server exited: {proc.stderr.read().decode()[-500:]}")
                time.sleep(0.05)
        else:
            pytest.fail(f"redis-server did not answer on 127.0.0.1:{port}")
        yield "127.0.0.1", port
    finally:
        _stop(proc)
