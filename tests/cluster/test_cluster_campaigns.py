"""`popek verify --cluster` and `popek fuzz --cluster` on a real Dask cluster
on loopback (a scheduler and two workers, conftest.py) sharing a real Redis:
the same table as a local run, no finding lost with a worker, and a killed
client leaves nothing running."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from cluster_helpers import popek, start_popek

DESIGNS = "trap-and-emulate,hybrid"  # on profile hybrid: unfaithful (jru runs as a plain jump), and faithful


def _table_lines(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("design "))
    end = next(i for i in range(start, len(lines)) if not lines[i].strip())
    return lines[start:end]


def _comparable(cell: dict) -> dict:
    """A cell's JSON without what differs between any two runs (its wall
    times, its campaign id) or between machines (where its findings
    directory is)."""
    out = {k: v for k, v in cell.items() if k not in ("seconds", "requirements")}
    out["timeline"] = [point[1:] for point in out.get("timeline", [])]  # each point's wall time dropped
    for key in ("finding", "safety_finding", "efficiency_finding"):
        if out.get(key):  # its name without the campaign's random id (docs/file-formats.md)
            *front, _campaign, digest = Path(out[key]).name.split("-")
            out[key] = "-".join([*front, digest])
    return out


def _campaign_children(proc: psutil.Process) -> list[psutil.Process]:
    """The campaign processes a Dask worker runs for its tasks (`popek.fuzz.remote`)."""
    try:
        return [c for c in proc.children(recursive=True) if "popek.fuzz.remote" in " ".join(c.cmdline())]
    except psutil.Error:
        return []


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.mark.campaign
def test_verify_on_the_cluster_gives_the_local_table(tmp_path, dask_cluster, redis_server):
    host, port = redis_server
    common = ["verify", "--designs", DESIGNS, "--profiles", "hybrid", "--cases", "60", "--seed", "2", "--no-proofs",
              "--json", "table.json"]  # fmt: skip
    here, there = tmp_path / "local", tmp_path / "cluster"
    here.mkdir()
    there.mkdir()
    local = popek(*common, cwd=here)  # each cell on a fresh example directory of its own
    remote = popek(*common, "--cluster", dask_cluster.address, "--db", f"redis://{host}:{port}/1", cwd=there)
    assert remote.returncode == local.returncode == 0, remote.stdout + remote.stderr + dask_cluster.tail()
    assert f"on the Dask cluster at {dask_cluster.address}" in remote.stdout
    assert _table_lines(remote.stdout) == _table_lines(local.stdout)
    cells = json.loads((there / "table.json").read_text())["table"]
    assert [_comparable(c) for c in cells] == [_comparable(c) for c in json.loads((here / "table.json").read_text())["table"]]
    assert cells[0]["finding"] and not cells[1]["finding"]  # trap-and-emulate's jru was found; hybrid is faithful
    # the counterexample is on the client's disk, the same case as the local run's, naming its own path
    local_cells = json.loads((here / "table.json").read_text())["table"]
    ours, theirs = Path(cells[0]["finding"]), Path(local_cells[0]["finding"])
    assert ours.parent == there / ".popek" / "findings"
    doc = json.loads(ours.read_text())
    assert doc["case"] == json.loads(theirs.read_text())["case"]
    assert str(ours) in doc["replay"]


@pytest.mark.campaign
def test_a_lost_worker_loses_no_finding(tmp_path, dask_cluster, redis_server):
    host, port = redis_server
    proc = start_popek(
        "fuzz", "--vmm", "trap-and-emulate", "--profile", "hybrid", "--workers", "2", "--cases", "200", "--seed", "4",
        "--cluster", dask_cluster.address, "--db", f"redis://{host}:{port}/2", "--json", "report.json",
        cwd=tmp_path,
    )  # fmt: skip
    findings = tmp_path / ".popek" / "findings"
    workers = [psutil.Process(w.pid) for w in dask_cluster.workers if w.poll() is None]
    try:
        # wait until a finding has reached the client (both tasks' if they come close together)
        deadline, seen, first = time.time() + 180, set(), None
        while proc.poll() is None and time.time() < deadline:
            seen = {p.name for p in findings.glob("*.json")}
            if seen and first is None:
                first = time.time()
            if len(seen) >= 2 or (first is not None and time.time() > first + 3):
                break
            time.sleep(0.1)
        assert seen and proc.poll() is None, "no finding reached the client before the campaign ended"
        busy = [w for w in workers if _campaign_children(w)]
        assert busy, "no Dask worker was running a campaign"
        victim = busy[0]
        orphans = _campaign_children(victim)
        victim.kill()  # SIGKILL: the worker is lost, with whatever it had not sent
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        dask_cluster.start_worker(f"replacement-{int(time.time())}")  # for the tests after this one
    assert proc.returncode == 1, out + err + dask_cluster.tail()
    assert "running again (its worker was lost)" in err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["errors"] == [] and not report["interrupted"]
    assert report["cases"] == 200  # the lost task ran again to its budget elsewhere
    on_disk = {p.name for p in findings.glob("*.json")}
    assert seen <= on_disk  # nothing the client had was taken back
    assert {Path(f["path"]).name for f in report["findings"]} == on_disk  # and the report names every one
    assert all(json.loads((findings / n).read_text())["kind"] == "fidelity" for n in on_disk)
    # the lost worker's campaign process did not outlive it
    deadline = time.time() + 10
    while any(_alive(p) for p in orphans) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in orphans)


@pytest.mark.campaign
def test_killing_the_client_cancels_the_tasks(tmp_path, dask_cluster, redis_server):
    """SIGTERM (SIGINT takes the same path: KeyboardInterrupt in the client)."""
    host, port = redis_server
    proc = start_popek(
        "fuzz", "--vmm", "trap-and-emulate", "--profile", "pg", "--workers", "2", "--time", "10m",
        "--cluster", dask_cluster.address, "--db", f"redis://{host}:{port}/3", cwd=tmp_path,
    )  # fmt: skip
    workers = [psutil.Process(w.pid) for w in dask_cluster.workers if w.poll() is None]
    before = {c.pid for w in workers for c in _campaign_children(w)}
    err_lines: list[str] = []
    reader = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline, running = time.time() + 120, []
        while time.time() < deadline and proc.poll() is None:
            running = [c for w in workers for c in _campaign_children(w) if c.pid not in before]
            if len(running) == 2 and any(line.startswith("[") for line in err_lines):
                break  # both tasks run, and the client is in its loop (its progress line)
            time.sleep(0.1)
        assert running, "the campaign did not start on the cluster"
        proc.send_signal(signal.SIGTERM)
        out = proc.stdout.read()
        proc.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert ", interrupted" in out, f"exit {proc.returncode}\n{out}{''.join(err_lines)}"
    deadline = time.time() + 20
    while any(_alive(c) for c in running) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(c) for c in running), "a campaign went on after its client was killed"
