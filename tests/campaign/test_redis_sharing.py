"""Two campaign processes share findings through one Redis example database.

A real ``redis-server`` runs on loopback for this module.  If it is not on
PATH the fixture installs Debian's package with apt-get (as .ci/run does);
if that is impossible the test fails and says why: sharing through Redis is
a feature, and an untested feature is not one.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time

import pytest
from hypothesis.database import choices_to_bytes

from campaign_helpers import popek


def _redis_server() -> str:
    path = shutil.which("redis-server")
    if path:
        return path
    steps = (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "redis-server"])
    log = []
    for cmd in steps:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                               env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as e:
            log.append(f"{' '.join(cmd)}: {e}")
            break
        log.append(f"{' '.join(cmd)}: exit {r.returncode} {r.stderr.strip()[-300:]}")
        if r.returncode:
            break
    path = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin:/usr/sbin")
    if not path:
        pytest.fail("redis-server is not installed and could not be installed with apt-get:\n" + "\n".join(log))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    server = _redis_server()
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None:
                pytest.fail(f"redis-server exited: {proc.stderr.read().decode()[-500:]}")
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not answer on 127.0.0.1:%d" % port)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.campaign
def test_two_campaigns_share_findings_through_redis(tmp_path, redis_url):
    a, b = tmp_path / "machine-a", tmp_path / "machine-b"
    a.mkdir()
    b.mkdir()
    common = ["fuzz", "--vmm", "tiny_vmms:OddR3", "--profile", "pg", "--db", redis_url, "--quiet"]
    # machine A: a campaign (shard 1 of 2) finds the bug and stores it in Redis
    first = popek(*common, "--shard", "1/2", "--time", "60s", "--first", "--json", "a.json", cwd=a)
    assert first.returncode == 1, first.stdout + first.stderr
    import redis

    keys = redis.Redis.from_url(redis_url).keys(b"popek-example:*")
    assert keys, "the campaign stored nothing in Redis"
    # machine B: shares nothing with A but the Redis URL; generating nothing,
    # only replaying the database, it reports the same bug at once
    second = popek(*common, "--shard", "2/2", "--reuse-only", "--json", "b.json", cwd=b)
    assert second.returncode == 1, second.stdout + second.stderr
    report = json.loads((b / "b.json").read_text())
    assert report["findings"] and report["findings"][0]["kind"] == "fidelity"
    assert report["shard"] == "2/2"
    assert list((b / ".popek" / "findings").glob("*.json"))


def test_entries_hypothesis_never_wrote_are_skipped_and_counted(redis_url):
    """Anyone who reaches the server can store anything under popek's keys;
    a campaign skips it, as it skips a damaged file, and says so."""
    import redis

    from popek.fuzz.example_db import MAX_DB_ENTRY, make_database

    db = make_database(redis_url)
    good = choices_to_bytes((7, b"guest"))
    db.save(b"entries-test", good)
    redis.Redis.from_url(redis_url).sadd(
        b"popek-example:entries-test", b"\xff\xfe not a choice sequence", choices_to_bytes((b"x" * MAX_DB_ENTRY,))
    )  # fmt: skip
    assert list(db.fetch(b"entries-test")) == [good]
    assert db.skipped == 2
    assert any("more than" in w for w in db.warnings) and any("not an entry" in w for w in db.warnings)
