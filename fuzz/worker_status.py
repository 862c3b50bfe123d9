"""What one worker has done, in the file its parent reads.

Workers talk to the parent only through files in the campaign's status
directory: ``worker-N.json`` (cases, ISA coverage, findings, efficiency),
rewritten atomically about twice a second, so the live progress line and the
final report (`popek.fuzz.campaign_report`) need nothing from a worker that
was killed, and a cluster's task relays the same document
(`popek.fuzz.remote`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .campaign_config import CampaignConfig

if TYPE_CHECKING:
    from popek.spec.profiles import Profile


def worker_deadline(config: CampaignConfig, started: float) -> float:
    """When a worker that started at ``started`` stops starting work: its
    time budget from its own start, or the campaign's end if that comes
    first.  (Its first case runs whatever the clock says: a loaded machine
    can take longer than a short --time to start pytest's workers, and a
    campaign that ran no case would report nothing.)"""
    own = started + config.seconds
    return own if config.deadline is None else min(own, config.deadline)


class WorkerStatus:
    """What one worker has done; written to worker-N.json (`write`)."""

    def __init__(self, path: Path, config: CampaignConfig, index: int):
        from .isa_coverage import IsaCoverage

        self.path = path
        self.config = config
        self.index = index
        self.started = time.time()
        self.deadline = worker_deadline(config, self.started)
        self.cases = 0
        self.coverage = IsaCoverage()
        self.findings: list[dict] = []
        self.direct = 0
        self.guest_steps = 0
        self.refused = 0  # guests the VMM declined (GuestRefused)
        # runs of cases while Hypothesis shrank a finding (not in ``cases``)
        self.shrink_runs = 0
        # per requirement: cases with a problem breaking it, counted whether
        # or not they were raised (a requirement already found is not again)
        self.problem_cases: dict[str, int] = {}
        self.budget = config.max_cases
        self.time_capped = False  # the time cap stopped it short of its case budget
        self.errors: list[str] = []
        self.warnings: list[str] = []  # what did not stop the campaign (skipped database entries)
        self.db_skipped = 0  # example-database entries skipped as corrupt
        self.done = False
        self._last_write = 0.0
        self.ledger = None  # `DirectLedger`, when efficiency is judged per instruction
        # [seconds, cases, ISA coverage, situation coverage] after each batch:
        # the report's coverage-over-time plot (popek.report)
        self.timeline: list[list[float]] = []
        self.late_witness = None  # (case, Problem): a long run whose end ran emulated

    def mark(self, profile: Profile) -> None:
        """One point of the timeline, after a batch."""
        from . import situations

        self.coverage.settle()
        reached = situations.to_json(dict(self.coverage.situations), self.coverage.observed, profile)
        self.timeline.append([round(time.time() - self.started, 2), self.cases,
                              round(self.coverage.fraction(profile), 4), reached.get("fraction", 0.0)])  # fmt: skip

    def write(self, force: bool = False) -> None:
        """The status file rewritten, at most twice a second unless ``force``."""
        now = time.time()
        if not force and now - self._last_write < 0.5:
            return
        self._last_write = now
        doc = {
            "worker": self.index,
            "pid": os.getpid(),
            "started": self.started,
            "elapsed": now - self.started,
            "cases": self.cases,
            "coverage": self.coverage.to_json(),
            "situations": self.coverage.situations_json(),
            "findings": self.findings,
            "direct": self.direct,
            "guest_steps": self.guest_steps,
            "refused": self.refused,
            "shrink_runs": self.shrink_runs,
            "problem_cases": self.problem_cases,
            "direct_ledger": None if self.ledger is None else self.ledger.to_json(),
            "budget": self.budget,
            "time_capped": self.time_capped,
            "errors": self.errors,
            "warnings": self.warnings,
            "db_skipped": self.db_skipped,
            "timeline": self.timeline,
            "done": self.done,
        }
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(doc), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as e:  # a full disk: the worker goes on, its result still returned
            tmp.unlink(missing_ok=True)
            note = f"status file {self.path} not written: {e.strerror or e}"
            if note not in self.errors:
                print(f"popek: worker {self.index}: {note}", file=sys.stderr)
