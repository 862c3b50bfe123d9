"""Where popek writes: checked before the first case, written atomically,
never losing a finding to a full disk or to another campaign with the same
seed; the example database and Redis faults as one line (issue 16 items 2-4,
issue 15's --db and Redis rows)."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from popek.cli import main
from popek.fuzz import example_db, findings
from popek.fuzz.campaign_config import CampaignConfig
from popek.fuzz.campaign_report import CampaignReport
from popek.fuzz.example_db import DatabaseError, check_database
from popek.fuzz.worker_loop import run_worker
from popek.fuzz.isa_coverage import IsaCoverage
from popek.spec import stored
from popek.writable import ensure_writable_file

FUZZ = ("fuzz", "--vmm", "trap-and-emulate", "--profile", "x86", "--cases", "20", "--quiet")


def popek(capsys, *argv: object) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(rc: int, out: str, err: str, *expected: str) -> None:
    """Exit 2 with one line and no campaign run (no summary on stdout)."""
    assert rc == 2 and out == "", (out, err)
    assert err.startswith("popek: error: ") and err.count("\n") == 1, err
    for text in expected:
        assert text in err, err


def _read_only_dir() -> Path | None:
    """A directory even root cannot create files in (a read-only mount)."""
    for d in (Path("/sys"), Path("/proc/sys")):
        try:
            fd = os.open(d / ".popek-probe", os.O_CREAT | os.O_WRONLY, 0o600)
        except OSError:
            return d
        os.close(fd)
        os.unlink(d / ".popek-probe")
    return None


READ_ONLY = _read_only_dir()


# -- checked before the first case ------------------------------------------------
def test_db_naming_a_regular_file(capsys, tmp_path):
    db = tmp_path / "db"
    db.write_text("")
    one_line(*popek(capsys, *FUZZ, "--db", db, "--findings", tmp_path / "f"), "not a directory")


def test_default_database_being_a_file(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".popek").mkdir()
    (tmp_path / ".popek" / "examples").write_text("")
    one_line(*popek(capsys, *FUZZ), ".popek/examples", "not a directory")


def test_findings_directory_being_a_file(capsys, tmp_path):
    (tmp_path / "f").write_text("")
    one_line(*popek(capsys, *FUZZ, "--findings", tmp_path / "f", "--db", tmp_path / "db"), "findings directory")


@pytest.mark.skipif(READ_ONLY is None, reason="no read-only directory on this machine")
@pytest.mark.parametrize("option", ["--db", "--findings"])
def test_read_only_directory(capsys, tmp_path, option):
    other = "--findings" if option == "--db" else "--db"
    one_line(*popek(capsys, *FUZZ, option, READ_ONLY / "popek", other, tmp_path / "x"), "cannot write")


@pytest.mark.parametrize("target, expected", [
    ("/dev/full", "not a regular file"),
    ("{tmp}/missing/report.json", "does not exist"),
    ("{tmp}", "is a directory"),
])  # fmt: skip
def test_unwritable_json_path(capsys, tmp_path, target, expected):
    path = target.format(tmp=tmp_path)
    one_line(*popek(capsys, *FUZZ, "--json", path, "--findings", tmp_path / "f", "--db", tmp_path / "db"),
             "--json", expected)  # fmt: skip


def test_check_and_verify_check_json_before_the_first_case(capsys, tmp_path):
    one_line(*popek(capsys, "check", "trap-and-emulate", "--cases", "10", "--json", "/dev/full",
                    "--findings", tmp_path / "f", "--db", tmp_path / "db"), "--json")  # fmt: skip


def test_ensure_writable_file_accepts_a_new_file(tmp_path):
    assert ensure_writable_file(tmp_path / "r.json", "--report") == tmp_path / "r.json"


# -- Redis ---------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_server():
    """Accepts connections and never answers: a black-holed Redis."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s.getsockname()[1]
    s.close()


@pytest.fixture
def http_server():
    """Answers anything with an HTTP error, as a web server on the port would."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    stop = threading.Event()

    def serve() -> None:
        s.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = s.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.recv(1024)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield s.getsockname()[1]
    stop.set()
    t.join()
    s.close()


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:{free}",  # nothing listening
    "redis://127.0.0.1:99999",  # a bad port
    "redis://no-such-host.invalid:6379",  # an unknown host
    "redis://127.0.0.1:{silent}",  # black-holed: connects, never answers
    "redis://127.0.0.1:{http}",  # a server that speaks HTTP
    "rediss://127.0.0.1:{http}",  # TLS to a server that does not speak it
])  # fmt: skip
def test_redis_faults_are_one_line_exit_2(capsys, tmp_path, monkeypatch, silent_server, http_server, url):
    monkeypatch.setattr(example_db, "REDIS_CONNECT_TIMEOUT", 0.5)
    db = url.format(free=_free_port(), silent=silent_server, http=http_server)
    one_line(*popek(capsys, *FUZZ, "--db", db, "--findings", tmp_path / "f"), f"--db {db}", "no Redis server")


def test_rediss_is_not_taken_for_a_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(example_db, "REDIS_CONNECT_TIMEOUT", 0.5)
    with pytest.raises(DatabaseError, match="no Redis server"):
        check_database(f"rediss://127.0.0.1:{_free_port()}")
    assert not (tmp_path / "rediss:").exists()


# -- the example database's entries ---------------------------------------------------
def test_corrupt_database_entries_are_skipped_counted_and_named(tmp_path):
    db = example_db.make_database(str(tmp_path / "db"))
    db.save(b"key", b"\x00")  # a valid entry
    key_dir = db.wrapped._key_path(b"key")
    (key_dir / "junk").write_bytes(b"\xff\xff\xff\xff")  # does not decode
    (key_dir / "big").write_bytes(b"\x00" * (example_db.MAX_DB_ENTRY + 1))
    if hasattr(os, "mkfifo"):
        os.mkfifo(key_dir / "fifo")  # reading it would block the campaign
    fetched = list(db.fetch(b"key"))
    assert fetched == [b"\x00"]
    assert db.skipped == (3 if hasattr(os, "mkfifo") else 2)
    assert any("junk" in w for w in db.warnings) and any("big" in w for w in db.warnings)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(entries=hs.lists(hs.binary(max_size=64), min_size=1, max_size=5), cut=hs.integers(0, 8))
def test_mutated_database_entries_are_replayed_or_skipped(tmp_path_factory, entries, cut):
    """Entries Hypothesis wrote, then damaged (truncated, replaced by random
    bytes): each is either handed back as it is on disk, when it decodes,
    or skipped and counted; fetching never raises."""
    from hypothesis.database import choices_from_bytes, choices_to_bytes

    db = example_db.make_database(str(tmp_path_factory.mktemp("db")))
    good = choices_to_bytes((True, 5, b"ab", "x", 1.5))
    for raw in [good[: len(good) - cut], *entries]:
        db.save(b"k", raw)
    on_disk = [p.read_bytes() for p in db.wrapped._key_path(b"k").iterdir()]
    fetched = list(db.fetch(b"k"))
    assert sorted(fetched) == sorted(b for b in on_disk if choices_from_bytes(b) is not None)
    assert db.skipped == len(on_disk) - len(fetched)


# -- atomic writes, a full disk ------------------------------------------------------
def test_write_atomic_removes_its_temporary_file_and_keeps_the_old(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    target.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(stored.os, "fsync", full)
    with pytest.raises(OSError):
        stored.write_atomic(target, b"new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_full_disk_keeps_the_finding_in_the_report(tmp_path, monkeypatch, capsys):
    """ENOSPC injected into every finding write: the campaign goes on, leaves
    no temporary file, and its summary prints the finding in full (assembly
    and a replay line that works), never 'findings: none'."""

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(stored.os, "fsync", full)  # a durable write fails at its fsync,
    monkeypatch.setattr(stored.os, "replace", full)  # any write at its rename
    config = CampaignConfig(
        vmm="trap-and-emulate", profile="x86", seconds=60, max_cases=40, seed=7, first=True, distinct=False,
        status_dir=str(tmp_path / "status"), findings_dir=str(tmp_path / "found"), db=str(tmp_path / "db"),
    )  # fmt: skip
    result = run_worker(config, 0)
    monkeypatch.undo()
    assert result["findings"], "trap-and-emulate on x86 has fidelity findings within 40 cases"
    assert list((tmp_path / "found").iterdir()) == []  # nothing saved, no temporary file left
    f = result["findings"][0]
    assert f["saved"] is False and "No space left" in f["save_error"]
    assert any("could not be saved" in e and "--replay popek1:" in e for e in result["errors"])
    report = CampaignReport(config, 1.0, result["cases"], [], result["findings"], IsaCoverage())
    text = report.summary()
    assert "findings: none" not in text
    assert "NOT SAVED" in text and "guest (assembly):" in text
    replay_line = next(line for line in text.splitlines() if "replay: popek fuzz" in line)
    blob = replay_line.split("--replay ")[1].strip()
    assert main(["fuzz", "--vmm", "trap-and-emulate", "--profile", "x86", "--replay", blob]) == 1
    assert capsys.readouterr().out.startswith("FIDELITY")


# -- names never collide ----------------------------------------------------------------
def test_two_campaigns_same_seed_at_once_keep_every_finding(tmp_path):
    """Both campaigns find the same first case (same seed, same options):
    before campaign ids, one file overwrote the other."""
    env = dict(os.environ)
    found = tmp_path / "found"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "popek", *FUZZ[:-3], "--cases", "40", "--first", "--seed", "7",
             "--findings", str(found), "--db", str(tmp_path / f"db{k}"), "--json", str(tmp_path / f"r{k}.json"),
             "--quiet"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for k in range(2)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 1, out + err
    paths = [f["path"] for k in range(2) for f in json.loads((tmp_path / f"r{k}.json").read_text())["findings"]]
    assert len(paths) >= 2 and len(set(paths)) == len(paths)
    for path in paths:
        assert findings.read(path)["case"]  # every finding of both is there and reads back
    assert len(list(found.glob("*.json"))) == len(paths)
