"""Campaigns on a Dask cluster: ``popek fuzz --cluster`` and ``popek verify --cluster``.

A user with several machines runs a Dask scheduler and workers on them
(``dask scheduler``, ``dask worker``; docs/cluster.md) and one Redis server
they all reach.  The client (this module, in the ``popek`` process) sends
each campaign worker (``fuzz``) or each cell (``verify``) to the scheduler
as a task; the task (`shard_task`, `cell_task`) runs it on whichever worker
the scheduler picks, in a child process, as a local run would
(`popek.fuzz.remote`).  Status documents and finding files come back as
Dask events while the task runs, so:

* the client prints the same live line, and builds the same report and
  verdict table from the same status documents, as a local run;
* a finding is on the client's disk the moment its worker has it: when a
  worker is lost, what it sent stays, and the scheduler runs the task
  again on another worker (same seed: the same cases; the shared example
  database replays what the lost attempt found);
* a task's cases do not depend on the worker that runs it (seeds come from
  the campaign seed and the worker index, never from the machine).

SIGINT or SIGTERM to the client cancels the tasks: it sets a Dask event the
tasks poll and cancels their futures; a task whose client is gone (killed
outright) sees its future released and stops too.

Dask is an optional extra (``pip install 'popek[cluster]'``): nothing here
imports it until ``--cluster`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, TextIO

from popek.errors import UserError

INSTALL = "pip install 'popek[cluster]'"
CONNECT_TIMEOUT = "10s"
PROBE_TIMEOUT = 5.0  # seconds to open a TCP connection to the scheduler
TOPIC = "popek-campaign"


# --------------------------------------------------------------------------
# Options (``popek fuzz`` and ``popek verify``)
# --------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", metavar="tcp://HOST:PORT", default=None,
                   help="run the campaigns as tasks on this Dask scheduler's workers (needs "
                        f"{INSTALL!r} and --db redis://...; see docs/cluster.md)")  # fmt: skip
    p.add_argument("--cluster-private-db", action="store_true",
                   help="with --cluster and no Redis --db: each task keeps a throw-away example "
                        "database of its own (findings are not shared between workers or runs)")  # fmt: skip


def check_options(args: argparse.Namespace) -> str | None:
    """The scheduler's address when ``--cluster`` is given (None otherwise),
    after the checks a user can fix: Dask installed, an example database
    every worker reaches (or the explicit opt-out)."""
    address, db, private = args.cluster, args.db, args.cluster_private_db
    if address is None:
        if private:
            raise UserError("--cluster-private-db goes with --cluster")
        return None
    if not address.strip():
        raise UserError("--cluster: expected the scheduler's address, e.g. tcp://10.0.0.5:8786")
    _distributed()
    if db and not db.startswith("redis://"):
        raise UserError(f"--db {db}: a directory is not shared by a cluster's workers; give --db "
                        "redis://HOST:PORT (or --cluster-private-db without --db)")  # fmt: skip
    if db and private:
        raise UserError("--cluster-private-db and --db: give one (the private databases are throw-away)")
    if not db and not private:
        raise UserError("--cluster needs an example database every worker reaches: --db redis://HOST:PORT "
                        "(or --cluster-private-db to give each task a throw-away one)")  # fmt: skip
    if db:
        _ping_redis(db)
    _probe(address)
    return address


def _probe(address: str) -> None:
    """A bad address or a scheduler that is not listening: one line, at once
    (Dask's client would retry for its whole timeout, then complain again
    when it is collected)."""
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
        if scheme not in ("tcp", "tls"):
            return  # another transport: the client's connection says
        host, port = parse_host_port(location)
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT) as conn:
            # a Dask scheduler speaks first (its handshake); something else
            # on that port (a web server, the dashboard) waits for us, and
            # Dask's client would then wait for ever, whatever its timeout
            greeting = _first_bytes(conn) if scheme == "tcp" else b"(tls)"
        if not greeting:
            raise UserError(f"--cluster {address}: something listens there, but not a Dask scheduler "
                            f"(it sent no handshake within {PROBE_TIMEOUT:g} s); the scheduler's port is "
                            "usually 8786, its dashboard's 8787")  # fmt: skip
    except (ValueError, TypeError) as e:
        raise UserError(f"--cluster {address}: not a scheduler address ({e}); expected e.g. "
                        "tcp://10.0.0.5:8786") from None  # fmt: skip
    except OSError as e:
        raise UserError(f"--cluster {address}: cannot reach the Dask scheduler: {e}") from None


def _first_bytes(conn: socket.socket) -> bytes:
    """What the other end sends of its own accord within the probe time."""
    conn.settimeout(PROBE_TIMEOUT)
    try:
        return conn.recv(16)
    except OSError:  # a timeout, or a reset
        return b""


def _distributed():
    try:
        import distributed
    except ImportError:
        raise UserError(f"--cluster needs Dask distributed, which is not installed: {INSTALL}") from None
    return distributed


def _ping_redis(url: str) -> None:
    """The client must reach the database too (it is the same for all): fail
    here with the address rather than in every task."""
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5).ping()
    except ImportError:
        raise UserError(f"--db {url}: the redis client library is not installed: {INSTALL}") from None
    except Exception as e:  # every way a URL or a server can be wrong
        raise UserError(f"--db {url}: cannot reach Redis: {type(e).__name__}: {e}") from None


# --------------------------------------------------------------------------
# The tasks (run on a worker)
# --------------------------------------------------------------------------
def _task_plumbing(topic: str, cancel_name: str) -> tuple[Callable[[dict], None], Callable[[], bool]]:
    """(emit, cancelled) for a task running on a Dask worker."""
    from distributed import Event, get_worker
    from distributed.worker import thread_state

    worker = get_worker()
    key = getattr(thread_state, "key", None)
    event = Event(cancel_name)

    def emit(msg: dict) -> None:
        worker.log_event(topic, msg)

    def cancelled() -> bool:
        if key is not None:  # the client cancelled, or is gone and its futures released
            ts = worker.state.tasks.get(key)
            if ts is None or ts.state in ("cancelled", "released", "forgotten"):
                return True
        try:
            return event.is_set()
        except Exception:  # the scheduler unreachable this instant: go on
            return False

    return emit, cancelled


def shard_task(config_json: dict, index: int, topic: str, cancel_name: str) -> dict:
    """Worker ``index`` of a ``popek fuzz`` campaign, on a cluster worker."""
    from popek.fuzz import remote

    emit, cancelled = _task_plumbing(topic, cancel_name)
    return remote.run_shard(config_json, index, emit=emit, cancelled=cancelled)


def cell_task(job: tuple, index: int, topic: str, cancel_name: str) -> dict:
    """Cell ``index`` of a ``popek verify`` table, on a cluster worker."""
    from popek.fuzz import remote

    emit, cancelled = _task_plumbing(topic, cancel_name)
    return remote.run_cell(job, index, emit=emit, cancelled=cancelled)


# --------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------
class _Mirror:
    """The client's copy of what the tasks sent: finding files written to
    the findings directory as they arrive, the last status of each task,
    and which attempt of each task is the current one (a task run again
    after its worker was lost starts a new attempt)."""

    def __init__(self, findings_dir: Path, note: Callable[[str], None]):
        self.findings_dir = findings_dir
        self.note = note
        self.attempt: dict[int, str] = {}
        self.status: dict[int, dict] = {}
        self.lost: dict[int, list[dict]] = {}  # findings entries of lost attempts
        self.gone: dict[int, set[str]] = {}  # the lost attempts of each task
        self.files: dict[str, str] = {}  # file name -> attempt that wrote it last

    def path(self, name: str) -> Path:
        return self.findings_dir / Path(name).name

    def _attempt(self, index: int, attempt: str) -> bool:
        """False for a message of a stale attempt (sent before its worker was lost)."""
        current = self.attempt.get(index)
        if current == attempt:
            return True
        if current is None:
            self.attempt[index] = attempt
            return True
        if attempt in self.gone.get(index, ()):
            return False
        # a new attempt: the old one's worker was lost and the task resubmitted
        old = self.status.pop(index, None)
        self.lost.setdefault(index, []).extend((old or {}).get("findings", []))
        self.gone.setdefault(index, set()).add(current)
        self.attempt[index] = attempt
        self.note(f"cluster: task {index} is running again (its worker was lost); "
                  "the findings it had sent are kept")  # fmt: skip
        return True

    def handle(self, msg: dict) -> None:
        index, attempt = msg["index"], msg["attempt"]
        if msg["type"] == "file":
            self._file(msg["name"], msg["text"], attempt, keep_stale=not self._attempt(index, attempt))
        elif msg["type"] == "status" and self._attempt(index, attempt):
            self.status[index] = self.localize(msg["doc"])

    def _file(self, name: str, text: str | None, attempt: str, keep_stale: bool = False) -> None:
        path = self.path(name)
        if text is None:
            if self.files.get(name) == attempt and not keep_stale:
                path.unlink(missing_ok=True)
                self.files.pop(name, None)
            return
        if keep_stale and name in self.files and self.files[name] != attempt:
            return  # a newer attempt has written it
        self.findings_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        self.files[name] = attempt

    def localize(self, doc: dict | None) -> dict | None:
        """A status document whose finding paths are the client's."""
        if doc is None:
            return None
        doc = dict(doc)
        doc["findings"] = [dict(f, path=str(self.path(f["path"])) if f.get("path") else f.get("path"))
                           for f in doc.get("findings", [])]  # fmt: skip
        return doc

    def finish(self, result: dict) -> None:
        """A task's result: its final files are the truth for its attempt."""
        index, attempt = result["index"], result["attempt"]
        self._attempt(index, attempt)
        for name, text in result["files"].items():
            self._file(name, text, attempt)
        for name, writer in list(self.files.items()):
            if writer == attempt and name not in result["files"]:
                self.path(name).unlink(missing_ok=True)
                self.files.pop(name)

    def orphans(self, listed: set[str]) -> list[dict]:
        """Report entries for the files of lost attempts that no report names
        (a finding still being shrunk when its worker was lost, which the
        task's next attempt did not find again under that name): a finding
        sent is a finding kept."""
        from popek.fuzz.campaign_config import requirement_of

        gone = set().union(*self.gone.values()) if self.gone else set()
        out = []
        for name, writer in sorted(self.files.items()):
            if writer not in gone or name in listed or not self.path(name).exists():
                continue
            try:
                doc = json.loads(self.path(name).read_text(encoding="utf-8"))
                out.append({
                    "path": str(self.path(name)), "kind": doc["kind"],
                    "requirement": requirement_of(doc["kind"]), "message": doc["message"],
                    "instructions": doc["instructions"], "uses": doc.get("uses", []),
                    "culprit": doc.get("culprit"),
                    "seconds_to_detection": doc.get("seconds_to_detection", 0.0),
                    "cases_to_detection": doc.get("cases_to_detection"), "lost_worker": True,
                })  # fmt: skip
            except (OSError, ValueError, KeyError, TypeError) as e:
                self.note(f"cluster: {self.path(name)}: a finding of a lost worker could not be read: {e}")
        return out

    def lost_findings(self, index: int, kept: list[dict]) -> list[dict]:
        """Findings a lost attempt of task ``index`` sent and the last one did not."""
        have = {Path(f["path"]).name for f in kept if f.get("path")}
        out = []
        for f in self.lost.get(index, []):
            name = Path(f["path"]).name if f.get("path") else None
            if name is None or (name not in have and self.path(name).exists()):
                out.append(dict(f, path=str(self.path(name)) if name else None))
                if name:
                    have.add(name)
        return out


class _Session:
    """A connection to the scheduler, the event stream of this run and the
    way to cancel it; SIGTERM raises KeyboardInterrupt meanwhile, so that
    either signal cancels the tasks."""

    def __init__(self, address: str):
        self.address = address
        self.run_id = uuid.uuid4().hex[:12]
        self.topic = f"{TOPIC}-{self.run_id}"
        self.cancel_name = f"popek-cancel-{self.run_id}"
        self.inbox: queue.Queue = queue.Queue()
        self.client = None
        self._previous = None

    def __enter__(self) -> "_Session":
        distributed = _distributed()
        try:
            self.client = distributed.Client(self.address, timeout=CONNECT_TIMEOUT, set_as_default=False)
        except Exception as e:  # a bad address, nothing listening, a timeout
            first = str(e).splitlines()[0] if str(e) else ""
            raise UserError(f"--cluster {self.address}: cannot reach the Dask scheduler: "
                            f"{type(e).__name__}: {first}") from None  # fmt: skip
        self.client.subscribe_topic(self.topic, lambda event: self.inbox.put(event[1]))
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, _terminate)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        try:
            self.client.close(timeout=10)
        except Exception:
            pass  # closing a connection that broke: nothing left to do

    def messages(self, wait: float) -> list[dict]:
        out = []
        try:
            out.append(self.inbox.get(timeout=wait))
            while True:
                out.append(self.inbox.get_nowait())
        except queue.Empty:
            return out

    def submit(self, func, *args, key: str):
        return self.client.submit(func, *args, self.topic, self.cancel_name, key=f"{key}-{self.run_id}",
                                  pure=False)  # fmt: skip

    def cancel(self, futures) -> None:
        from distributed import Event

        try:
            Event(self.cancel_name, client=self.client).set()
            self.client.cancel(futures, force=True)
        except Exception:
            pass  # the scheduler gone too: the tasks stop when their futures are released


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


def _drain(session: _Session, mirror: _Mirror, wait: float) -> None:
    for msg in session.messages(wait):
        try:
            mirror.handle(msg)
        except (KeyError, TypeError, OSError) as e:  # a malformed message must not end the run
            mirror.note(f"cluster: a message from a task could not be used: {type(e).__name__}: {e}")


def _failure(future) -> str | None:
    """Why a finished task has no result (None: it has one)."""
    if future.status == "finished":
        return None
    try:
        exc = future.exception(timeout=5)
    except Exception as e:
        exc = e
    return f"{type(exc).__name__}: {exc}"


def run_campaign(config, address: str, *, progress: TextIO | None = sys.stderr):
    """``popek fuzz`` on the cluster: one task per campaign worker; the
    same `popek.fuzz.campaign_report.CampaignReport` as `run_campaign` returns."""
    from popek.fuzz.campaign_report import progress_line, report_from_statuses
    from popek.spec import profiles

    prof = profiles.get(config.profile)
    if not config.seed:
        config.seed = random.SystemRandom().randrange(1, 1 << 31)
    findings_dir = Path(config.findings_dir).resolve()
    config.findings_dir = str(findings_dir)
    tty = progress is not None and progress.isatty()

    def note(text: str) -> None:
        if progress is not None:
            progress.write(("\n" if tty else "") + text + "\n")
            progress.flush()

    mirror = _Mirror(findings_dir, note)
    started = time.time()
    interrupted = False
    results: dict[int, dict] = {}
    errors: list[str] = []
    with _Session(address) as session:
        cfg = config.to_json()
        futures = [session.submit(shard_task, cfg, i, key=f"popek-shard-{i}") for i in range(config.workers)]
        last_print = 0.0
        try:
            while not all(f.done() for f in futures):
                _drain(session, mirror, 0.25)
                if progress is not None and time.time() - last_print >= (0.5 if tty else 5.0):
                    last_print = time.time()
                    line = progress_line([mirror.status[i] for i in sorted(mirror.status)], prof, started)
                    progress.write(("\r" + line + "   ") if tty else line + "\n")
                    progress.flush()
            _drain(session, mirror, 0.2)
            for i, f in enumerate(futures):
                why = _failure(f)
                if why is not None:
                    errors.append(f"cluster task {i} failed: {why}")
                    continue
                result = f.result()
                _drain(session, mirror, 0)
                mirror.finish(result)
                results[i] = result
        except KeyboardInterrupt:
            interrupted = True
            session.cancel(futures)
            _drain(session, mirror, 0.5)
    if tty:
        progress.write("\n")
    statuses = []
    for i in range(config.workers):
        result = results.get(i)
        doc = mirror.localize(result["status"]) if result and result["status"] else mirror.status.get(i)
        if result and result["returncode"] and not result["cancelled"] and not (doc and doc.get("findings")):
            errors.append(f"cluster task {i}: the campaign process exited with {result['returncode']}:\n"
                          f"{result['log']}")  # fmt: skip
        if doc is None:
            continue
        doc = dict(doc, findings=doc["findings"] + mirror.lost_findings(i, doc["findings"]))
        statuses.append(doc)
    report = report_from_statuses(config, time.time() - started, statuses, interrupted=interrupted)
    report.findings += mirror.orphans({Path(f["path"]).name for f in report.findings if f.get("path")})
    report.errors += errors
    if len(statuses) < config.workers and not interrupted:
        report.errors.append(f"only {len(statuses)} of {config.workers} workers reported")
    return report


def run_table(cells: list[tuple[str, str]], address: str, *, seconds: float, workers: int, findings_dir: str,
              db: str | None = None, seed: int = 1, progress=None, innocuous: dict | None = None,
              innocuous_share: float | None = None, cases: int | None = None) -> list:
    """``popek verify`` on the cluster: one task per cell, every cell sent at
    once (``workers`` is the cluster's business); the cells of
    `popek.fuzz.verdict.run_table`, in the same order, from the same jobs."""
    from popek.fuzz.efficiency import DOMINANT
    from popek.fuzz.remote import cell_from_json

    innocuous = innocuous or {}
    share = DOMINANT if innocuous_share is None else innocuous_share
    jobs = [(d, p, seconds, findings_dir, db, seed, innocuous.get(p), share, cases) for d, p in cells]
    mirror = _Mirror(Path(findings_dir), lambda text: print(text, file=sys.stderr, flush=True))
    out = []
    with _Session(address) as session:
        futures = [session.submit(cell_task, job, k, key=f"popek-cell-{k}") for k, job in enumerate(jobs)]
        try:
            for k, future in enumerate(futures):
                while not future.done():
                    _drain(session, mirror, 0.25)
                _drain(session, mirror, 0.1)
                why = _failure(future)
                result = future.result() if why is None else None
                if result is not None:
                    mirror.finish(result)
                if result is None or result["cell"] is None:
                    why = why or (f"the campaign process exited with {result['returncode']}: "
                                  f"{result['log'][-300:]}")  # fmt: skip
                    cell = _failed_cell(jobs[k], f"cluster task failed: {why}")
                else:
                    cell = cell_from_json(result["cell"], findings_dir)
                out.append(cell)
                if progress:
                    progress(cell)
        except KeyboardInterrupt:
            session.cancel(futures)
            raise
    return out


def _failed_cell(job: tuple, message: str):
    """A cell whose campaign did not run: its declaration, nothing observed,
    the error (so the verdict says MISMATCH (error), never MATCH)."""
    from popek import registry
    from popek.fuzz.verdict import Cell

    design, profile = job[0], job[1]
    support = registry.load(design).supports[profile]
    return Cell(
        design=design, profile=profile, expected_faithful=support.faithful,
        expected_efficient=support.efficient, reason=support.reason, expected_promise=support.promise(),
        observed_faithful=True, counterexample=None, culprit=None, kind=None, efficiency=None,
        safety_findings=0, cases=0, seconds=0.0, finding=None, budget=job[8], errors=[message],
    )  # fmt: skip


def describe(address: str) -> str:
    """The header's 'where' for ``popek verify``: the cluster's workers."""
    return f"on the Dask cluster at {address}"

