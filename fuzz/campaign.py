"""Fuzzing campaigns: many processes, one example database, findings on disk.

A campaign is one VMM on one profile for a case budget or a time budget.
This module is its parent process (`run_campaign`, behind ``popek fuzz``):
it checks that the example database and the findings directory can take
what the campaign will write, writes the configuration for the workers to
read (`popek.fuzz.campaign_config`), starts pytest with pytest-xdist,
``-n WORKERS --dist each``, on ``popek/fuzz/worker.py``, prints the live
progress line while they run, stops them at the deadline or on Ctrl-C, and
gathers the report from the status files they left
(`popek.fuzz.campaign_report`).

Why pytest-xdist: it starts, feeds and reaps the worker processes, and
every worker is then an ordinary pytest process, running `run_worker`
(`popek.fuzz.worker_loop`) as its one test.  The workers share nothing with
the parent but files: the configuration going in, a status document per
worker (`popek.fuzz.worker_status`) and the findings coming out, so a
worker that is killed takes nothing with it.  A cluster runs the same
workers as tasks instead (`popek.cluster`, `popek.fuzz.remote`).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from .campaign_config import CONFIG_ENV, CampaignConfig, new_campaign_id
from .campaign_report import (
    CampaignReport,
    combine_code_coverage,
    progress_line,
    read_statuses,
    report_from_statuses,
)
from .example_db import check_database, check_directory, is_redis

WORKER_FILE = Path(__file__).with_name("worker.py")


def run_campaign(
    config: CampaignConfig, *, progress: TextIO | None = sys.stderr, env: dict | None = None
) -> CampaignReport:
    """Run the campaign in pytest-xdist workers and gather the report."""
    from popek.spec import profiles

    prof = profiles.get(config.profile)
    if not config.seed:
        config.seed = random.SystemRandom().randrange(1, 1 << 31)
    own_tmp = None
    if not config.status_dir:
        own_tmp = tempfile.mkdtemp(prefix="popek-campaign-")
        config.status_dir = own_tmp
    status_dir = Path(config.status_dir)
    status_dir.mkdir(parents=True, exist_ok=True)
    config.findings_dir = str(Path(config.findings_dir).resolve())
    if config.db and not is_redis(config.db):
        config.db = str(Path(config.db).resolve())
    if not config.campaign_id:
        config.campaign_id = new_campaign_id()
    if config.deadline is None:  # the command may have started the clock earlier
        config.deadline = time.time() + config.seconds
    # before the first case: where findings and examples go must take them
    check_database(config.db)
    check_directory(Path(config.findings_dir), "findings directory")
    cfg_path = status_dir / "config.json"
    cfg_path.write_text(json.dumps(config.to_json()), encoding="utf-8")
    (status_dir / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    cmd = [
        sys.executable, "-m", "pytest", str(WORKER_FILE),
        "-c", str(status_dir / "pytest.ini"), "--rootdir", str(status_dir),
        "-p", "no:cacheprovider", "-q", "-x", "--no-header",
        "-n", str(config.workers), "--dist", "each",
    ]  # fmt: skip
    child_env = dict(os.environ if env is None else env)
    child_env[CONFIG_ENV] = str(cfg_path)
    started = time.time()
    interrupted = False
    log = open(status_dir / "pytest.log", "w", encoding="utf-8")
    proc = subprocess.Popen(cmd, env=child_env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    tty = progress is not None and progress.isatty()
    last_print = 0.0
    try:
        while proc.poll() is None:
            time.sleep(0.25)
            if progress is not None and time.time() - last_print >= (0.5 if tty else 5.0):
                last_print = time.time()
                line = progress_line(read_statuses(status_dir), prof, started)
                progress.write(("\r" + line + "   ") if tty else line + "\n")
                progress.flush()
            if time.time() > started + config.seconds + 120:
                os.killpg(proc.pid, signal.SIGTERM)  # workers past their deadline: stuck
    except KeyboardInterrupt:
        interrupted = True
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    finally:
        log.close()
    if tty:
        progress.write("\n")
    elapsed = time.time() - started
    statuses = read_statuses(status_dir)
    report = report_from_statuses(config, elapsed, statuses, interrupted=interrupted)
    for s in statuses:
        report.warnings += s.get("warnings", [])
        report.db_skipped += s.get("db_skipped", 0)
    if proc.returncode not in (0, None) and not report.findings and not interrupted:
        tail = (status_dir / "pytest.log").read_text(encoding="utf-8", errors="replace")[-2000:]
        report.errors.append(f"worker processes exited with {proc.returncode}:\n{tail}")
    if len(statuses) < config.workers and not interrupted:
        report.errors.append(f"only {len(statuses)} of {config.workers} workers reported")
    if config.code_coverage:
        report.code_coverage = combine_code_coverage(status_dir)
    return report
