"""`popek run --snapshot-at/--restore` and `popek migrate`, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from popek.cli import main

ROOT = Path(__file__).resolve().parents[2]
TIMER = ROOT / "tests" / "guests" / "timer.s"


def popek(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _final(out: str) -> list[str]:
    """The state lines after 'steps', which a restored run shares with a straight one."""
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("steps "))
    return [ln for ln in lines[start + 1 :] if not ln.startswith(("direct", "entries", "extra", "traps"))]


def test_snapshot_then_restore_in_another_run_ends_where_one_run_does(capsys, tmp_path):
    snap = tmp_path / "t.snap"
    rc, straight, _ = popek(capsys, "run", TIMER, "--profile", "pg", "--vmm", "trap-and-emulate", "--steps", 120)
    assert rc == 0
    rc, saved, _ = popek(capsys, "run", TIMER, "--profile", "pg", "--vmm", "trap-and-emulate",
                         "--snapshot-at", 45, "--snapshot-file", snap, "--steps", 120)  # fmt: skip
    assert rc == 0 and "saved after 45 guest steps" in saved
    rc, restored, _ = popek(capsys, "run", "--restore", snap, "--steps", 75)
    assert rc == 0 and "restored on a fresh host (trap-and-emulate, profile pg, saved after 45" in restored
    assert _final(restored) == _final(straight) == _final(saved)


@pytest.mark.parametrize("cut", [10, 200, -1])
def test_restore_of_a_damaged_file_is_one_line(capsys, tmp_path, cut):
    snap = tmp_path / "t.snap"
    popek(capsys, "run", TIMER, "--profile", "pg", "--vmm", "emulator", "--snapshot-at", 9, "--snapshot-file", snap)
    data = snap.read_bytes()
    snap.write_bytes(data[:cut])
    rc, out, err = popek(capsys, "run", "--restore", snap)
    assert rc == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert str(snap) in err and ("truncated" in err or "corrupt" in err)


def test_snapshot_options_need_each_other(capsys, tmp_path):
    rc, out, err = popek(capsys, "run", TIMER, "--profile", "pg", "--snapshot-at", 3)
    assert rc == 2 and "--snapshot-file" in err and err.count("\n") == 1


def test_migrate_prints_the_report_and_the_guest_is_unchanged(capsys):
    rc, out, _ = popek(capsys, "migrate", TIMER, "--vmm", "hybrid", "--profile", "pg", "--at", 40,
                       "--bandwidth", 16, "--max-rounds", 4)  # fmt: skip
    assert rc == 0, out
    assert "pre-copy rounds:" in out and "downtime:" in out and "x guest storage" in out
    assert "identical to the unmigrated run" in out


def test_migrate_quiet_says_only_whether_the_guest_is_unchanged(capsys):
    rc, out, _ = popek(capsys, "migrate", TIMER, "--vmm", "hybrid", "--profile", "pg", "--at", 40, "-q")
    assert rc == 0 and out.splitlines() == ["after 1000 more steps on the target: identical to the unmigrated run"]


def test_migrate_json(capsys):
    rc, out, _ = popek(capsys, "migrate", TIMER, "--vmm", "trap-and-emulate", "--at", 10, "--max-rounds", 0, "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["rounds"] == 0 and doc["stopped_by"] == "stop-and-copy" and doc["faithful"] is True
    assert doc["downtime"] == doc["total_time"] and doc["words_sent"] == doc["link_words"] <= doc["traffic_cap"]


def test_migrate_needs_the_capability(capsys):
    rc, out, err = popek(capsys, "migrate", TIMER, "--vmm", "hardware-assisted+shadow", "--at", 1)
    assert rc == 2 and "does not declare the migration capability" in err


def test_a_snapshot_file_restores_in_a_fresh_process(capsys, tmp_path):
    """Written here, restored by another Python process: the file is all it needs."""
    import subprocess
    import sys

    snap = tmp_path / "t.snap"
    rc, straight, _ = popek(capsys, "run", TIMER, "--profile", "pg", "--vmm", "hybrid", "--steps", 150)
    popek(capsys, "run", TIMER, "--profile", "pg", "--vmm", "hybrid", "--snapshot-at", 61, "--snapshot-file", snap)
    r = subprocess.run([sys.executable, "-m", "popek", "run", "--restore", str(snap), "--steps", "89"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert _final(r.stdout) == _final(straight)
