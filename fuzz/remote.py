"""A campaign's share run away from its client: the side a cluster worker runs.

`popek.cluster` sends a task to a worker of a Dask cluster; the task calls
`run_shard` (one worker of a ``popek fuzz`` campaign) or `run_cell` (one
cell of ``popek verify``).  Neither runs the campaign in the task's own
thread: a Dask task runs in a thread, and the campaign needs a process's
main thread (the plug-in guard's time bounds are signals,
`popek.guard`), its own Hypothesis state and a process that can be killed
when the client cancels.  So each starts a child process (``python -m
popek.fuzz.remote``) that runs the campaign exactly as a local run does,
with its status and findings in a private temporary directory, and relays
them: every change of the status document and of a finding's file goes to
``emit`` as a message, as it happens, so the client has every finding seen
so far even if this worker is lost the next instant (then the scheduler
runs the task again elsewhere; with the same seed it draws the same cases).

Nothing here knows about Dask: ``emit`` and ``cancelled`` are the cluster's
(`popek.cluster`), which keeps the layers one way.

Messages (dicts): ``{"type": "status", "attempt", "index", "doc"}`` with a
worker's status document (`popek.fuzz.worker_status`), and ``{"type": "file",
"attempt", "index", "name", "text"}`` with a finding file's whole text
(``text`` None: the file was removed, e.g. the finding shrank to another
kind under another name).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import fields
from pathlib import Path
from typing import Callable

from .campaign_config import CampaignConfig
from .worker_loop import run_worker

POLL = 0.25  # seconds between looks at the child's files
STATUS_EVERY = 1.0  # seconds between two status messages of one task (findings go at once)
CANCEL_EVERY = 1.0  # seconds between two calls of ``cancelled`` (it may ask the scheduler)
LOG_TAIL = 2000  # characters of a failed child's output kept for the error

Emit = Callable[[dict], None]


class _Relay:
    """What has been sent of one child's files, so that only changes go."""

    def __init__(self, emit: Emit, attempt: str, index: int, findings_dir: Path, status_file: Path | None,
                 target_dir: str):
        self.emit = emit
        self.target_dir = target_dir
        self.attempt = attempt
        self.index = index
        self.findings_dir = findings_dir
        self.status_file = status_file
        self.files: dict[str, tuple[int, int]] = {}  # name -> (mtime_ns, size) sent
        self.status_sent: int | None = None
        self.status_time = 0.0

    def findings(self) -> None:
        seen = {}
        for path in sorted(self.findings_dir.glob("*.json")):
            try:
                st = path.stat()
                stamp = (st.st_mtime_ns, st.st_size)
                if self.files.get(path.name) == stamp:
                    seen[path.name] = stamp
                    continue
                text = self._text(path)
            except OSError:
                continue  # replaced this instant: the next look sees it
            seen[path.name] = stamp
            self.emit({"type": "file", "attempt": self.attempt, "index": self.index,
                       "name": path.name, "text": text})  # fmt: skip
        for name in set(self.files) - set(seen):
            self.emit({"type": "file", "attempt": self.attempt, "index": self.index,
                       "name": name, "text": None})  # fmt: skip
        self.files = seen

    def status(self, force: bool = False) -> dict | None:
        if self.status_file is None:
            return None
        try:
            stamp = self.status_file.stat().st_mtime_ns
            if stamp == self.status_sent or (not force and time.time() - self.status_time < STATUS_EVERY):
                return None
            doc = json.loads(self.status_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        self.status_sent, self.status_time = stamp, time.time()
        self.emit({"type": "status", "attempt": self.attempt, "index": self.index, "doc": doc})
        return doc

    def _text(self, path: Path) -> str:
        """A finding file as the client will hold it: the replay command and
        the report in it name the client's findings directory, not ours."""
        return path.read_text(encoding="utf-8").replace(str(self.findings_dir), self.target_dir)

    def final_files(self) -> dict[str, str]:
        out = {}
        for path in sorted(self.findings_dir.glob("*.json")):
            try:
                out[path.name] = self._text(path)
            except OSError:
                continue
        return out


def _supervise(
    argv: list[str], relay: _Relay, cancelled: Callable[[], bool], log_path: Path
) -> tuple[int, bool]:
    """Run the child to its end (or until ``cancelled``), relaying as it
    goes; (exit status, cancelled)."""
    env = dict(os.environ)
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen([sys.executable, "-m", "popek.fuzz.remote", *argv], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        stop = False
        last_check = time.time()
        try:
            while proc.poll() is None:
                time.sleep(POLL)
                relay.findings()
                relay.status()
                if time.time() - last_check >= CANCEL_EVERY:
                    last_check = time.time()
                    if cancelled():
                        stop = True
                        break
        finally:
            if proc.poll() is None:  # cancelled, or this thread interrupted: the child goes too
                proc.kill()
            proc.wait()
    relay.findings()
    relay.status(force=True)
    return proc.returncode, stop


def _tail(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL:]
    except OSError:
        return ""


def run_shard(
    config_json: dict, index: int, *, emit: Emit, cancelled: Callable[[], bool] = lambda: False
) -> dict:
    """Worker ``index`` of the campaign ``config_json`` (`CampaignConfig.to_json`),
    relayed through ``emit``; returns its last status document, its finding
    files (name -> text) and how the child ended."""
    attempt = uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="popek-shard-") as tmp:
        root = Path(tmp)
        config = CampaignConfig.from_json(config_json)
        target = config.findings_dir
        config.status_dir = str(root / "status")
        config.findings_dir = str(root / "findings")
        if not config.db:  # no shared database (the user opted out): a private one
            config.db = str(root / "examples")
        Path(config.status_dir).mkdir()
        Path(config.findings_dir).mkdir()
        cfg = root / "config.json"
        cfg.write_text(json.dumps(config.to_json()), encoding="utf-8")
        status_file = Path(config.status_dir) / f"worker-{index}.json"
        relay = _Relay(emit, attempt, index, Path(config.findings_dir), status_file, target)
        code, stopped = _supervise(["shard", str(cfg), str(index)], relay, cancelled, root / "child.log")
        doc = relay.status(force=True)
        if doc is None:
            try:
                doc = json.loads(relay.status_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                doc = None
        return {"attempt": attempt, "index": index, "status": doc, "files": relay.final_files(),
                "returncode": code, "cancelled": stopped,
                "log": _tail(root / "child.log") if code else ""}  # fmt: skip


def run_cell(
    job: tuple, index: int, *, emit: Emit, cancelled: Callable[[], bool] = lambda: False
) -> dict:
    """One cell of the verdict table (`popek.fuzz.verdict.run_cell`'s ``job``,
    its findings directory replaced by a private one), relayed through
    ``emit``; returns the cell (`Cell` fields), its finding files and how
    the child ended."""
    attempt = uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="popek-cell-") as tmp:
        root = Path(tmp)
        findings = root / "findings"
        findings.mkdir()
        job = list(job)
        target, job[3] = job[3], str(findings)
        if job[6] is not None:
            job[6] = sorted(job[6])  # innocuous instructions: JSON has no sets
        (root / "job.json").write_text(json.dumps(job), encoding="utf-8")
        relay = _Relay(emit, attempt, index, findings, None, target)
        argv = ["cell", str(root / "job.json"), str(root / "cell.json")]
        code, stopped = _supervise(argv, relay, cancelled, root / "child.log")
        try:
            cell = json.loads((root / "cell.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cell = None
        return {"attempt": attempt, "index": index, "cell": cell, "files": relay.final_files(),
                "returncode": code, "cancelled": stopped,
                "log": _tail(root / "child.log") if code else ""}  # fmt: skip


def cell_from_json(d: dict, findings_dir: str):
    """A `popek.fuzz.verdict.Cell` from what `run_cell` returned, its finding
    paths moved to ``findings_dir`` (where the client wrote the files)."""
    from .verdict import Cell

    names = {f.name for f in fields(Cell)}
    kept = {k: v for k, v in d.items() if k in names}
    for key in ("finding", "safety_finding", "efficiency_finding"):
        if kept.get(key):
            kept[key] = str(Path(findings_dir) / Path(kept[key]).name)
    return Cell(**kept)


def _die_with_parent() -> None:
    """The child ends when the task that started it is gone (its worker
    killed): a campaign must not outlive the worker that relays it."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, daemon=True, name="popek-parent-watch").start()


def main(argv: list[str]) -> int:
    """The child: ``shard CONFIG INDEX`` or ``cell JOB RESULT``."""
    from dataclasses import asdict

    _die_with_parent()
    what, *rest = argv
    if what == "shard":
        config = CampaignConfig.from_json(json.loads(Path(rest[0]).read_text(encoding="utf-8")))
        result = run_worker(config, int(rest[1]))
        ran = result["cases"] > 0 or result["findings"] or config.reuse_only or result.get("budget") == 0
        return 0 if ran else 1
    if what == "cell":
        from .verdict import run_cell as verdict_cell

        job = tuple(json.loads(Path(rest[0]).read_text(encoding="utf-8")))
        if job[6] is not None:
            job = job[:6] + (frozenset(job[6]),) + job[7:]  # innocuous instructions: a set again
        cell = verdict_cell(job)
        tmp = Path(rest[1]).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(cell)), encoding="utf-8")
        os.replace(tmp, rest[1])
        return 0
    print(f"popek.fuzz.remote: unknown task {what!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
