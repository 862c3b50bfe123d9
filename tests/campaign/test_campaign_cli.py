"""`popek fuzz` end to end: workers, report, findings on disk, replay,
interruption, argument errors."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from campaign_helpers import popek, start_popek


@pytest.mark.campaign
def test_two_worker_campaign_reports_and_replays(tmp_path):
    r = popek(
        # --first: each worker stops at its first finding (OddR3 takes 12-250 cases by seed)
        "fuzz", "--vmm", "tiny_vmms:OddR3", "--profile", "pg", "--workers", "2", "--time", "30s", "--first",
        "--findings", "found", "--db", "examples", "--json", "report.json", "--seed", "3", "--quiet",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert "campaign: VMM tiny_vmms:OddR3 on profile pg, 2 worker(s)" in r.stdout
    assert "finding: fidelity" in r.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["workers"] == 2 and report["cases"] > 0 and report["cases_per_second"] > 0
    assert report["findings"] and report["isa_coverage"]["fraction"] > 0.3
    assert set(report["isa_coverage"]["table"]["li"]) == {"supervisor", "user"}
    files = sorted((tmp_path / "found").glob("*.json"))
    assert files
    doc = json.loads(files[0].read_text())
    assert doc["shrunk"] and doc["vmm"] == "tiny_vmms:OddR3" and "halt" in doc["assembly"]
    # the replay command printed in the finding works as it stands
    replay = doc["replay"].split()
    assert replay[:2] == ["popek", "fuzz"]
    again = popek(*replay[1:], cwd=tmp_path)
    assert again.returncode == 1, again.stderr
    assert again.stdout.startswith("FIDELITY") and "r3" in again.stdout
    # so does the one-word form of the case
    blob = popek("fuzz", "--vmm", "tiny_vmms:OddR3", "--profile", "pg", "--replay", doc["blob"], cwd=tmp_path)
    assert blob.returncode == 1 and blob.stdout.startswith("FIDELITY"), blob.stderr
    bad = popek("fuzz", "--vmm", "tiny_vmms:OddR3", "--profile", "pg", "--replay", "popek1:xyz", cwd=tmp_path)
    assert bad.returncode == 2 and "not a popek finding or case blob" in bad.stderr
    # the example database holds it: the next campaign starts by replaying it
    assert any((tmp_path / "examples").rglob("*"))


@pytest.mark.campaign
def test_interrupted_campaign_keeps_its_findings(tmp_path):
    """Ctrl-C mid-campaign: the finding written at detection is on disk and
    whole, and the summary says the campaign was interrupted."""
    p = start_popek(
        "fuzz", "--vmm", "tiny_vmms:OddR3", "--profile", "pg", "--time", "120s",
        "--findings", "found", "--db", "examples", "--quiet",
        cwd=tmp_path,
    )  # fmt: skip
    deadline = time.time() + 100
    while time.time() < deadline and not list((tmp_path / "found").glob("*.json")):
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=60)
    files = list((tmp_path / "found").glob("*.json"))
    assert files, err
    for f in files:
        assert json.loads(f.read_text())["kind"] == "fidelity"
    # the summary names what was found (as shrunk so far), and the exit
    # status says a finding, not a clean run
    assert "interrupted" in out and "findings: none" not in out, out
    assert any(f.name in out for f in files), out
    assert p.returncode == 1, out + err


def test_killed_campaign_keeps_its_findings(tmp_path):
    """SIGKILL of the whole process group: no half-written finding."""
    p = start_popek(
        "fuzz", "--vmm", "tiny_vmms:OddR3", "--profile", "pg", "--time", "120s",
        "--findings", "found", "--db", "examples", "--quiet",
        cwd=tmp_path,
    )  # fmt: skip
    deadline = time.time() + 100
    while time.time() < deadline and not list((tmp_path / "found").glob("*.json")):
        time.sleep(0.1)
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate(timeout=30)
    # the workers are in their own session (the campaign's pytest); end them too
    time.sleep(0.5)
    files = list((tmp_path / "found").glob("*.json"))
    assert files
    for f in files:
        json.loads(f.read_text())


@pytest.mark.parametrize(
    "args,message",
    [
        (["--shard", "3/2"], "--shard '3/2': need 1 <= i <= n"),
        (["--shard", "x"], "expected i/n"),
        (["--time", "soon"], "--time 'soon'"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--efficiency", "2"], "--efficiency must be between 0 and 1"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, args, message):
    r = popek("fuzz", "--vmm", "emulator", "--profile", "pg", *args, cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_unknown_vmm_and_profile(tmp_path):
    r = popek("fuzz", "--vmm", "no.such:VMM", "--profile", "pg", cwd=tmp_path)
    assert r.returncode == 2 and "cannot import" in r.stderr and "Traceback" not in r.stderr
    r = popek("fuzz", "--vmm", "emulator", "--profile", "nope", cwd=tmp_path)
    assert r.returncode == 2 and "unknown profile" in r.stderr


@pytest.mark.campaign
def test_code_coverage_is_combined_across_workers(tmp_path):
    r = popek(
        "fuzz", "--vmm", "tiny_vmms:Interpreter", "--profile", "pg", "--workers", "2", "--time", "3s",
        "--code-coverage", "--json", "report.json", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["workers"] == 2 and not report["errors"]
    assert 5 < report["code_coverage"] < 100
    assert "code coverage (popek packages):" in r.stdout


def test_ctrl_c_in_our_own_shrinking_pass_keeps_the_finding(tmp_path, monkeypatch):
    """Ctrl-C after Hypothesis has shrunk a finding, while popek's own pass
    runs: the worker's report still names the finding, as shrunk so far."""
    from campaign_helpers import TINY

    from popek.fuzz import worker_findings
    from popek.fuzz.campaign_config import CampaignConfig
    from popek.fuzz.worker_loop import run_worker

    monkeypatch.syspath_prepend(TINY)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(worker_findings, "minimize_finding", interrupted)
    config = CampaignConfig(
        vmm="tiny_vmms:OddR3", profile="pg", seconds=120, status_dir=str(tmp_path / "status"),
        findings_dir=str(tmp_path / "found"), db=str(tmp_path / "db"), seed=1, distinct=False, first=True,
    )  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        run_worker(config, 0)
    (status,) = [json.loads(p.read_text()) for p in (tmp_path / "status").glob("worker-*.json")]
    (finding,) = status["findings"]
    assert finding["kind"] == "fidelity" and os.path.exists(finding["path"])
