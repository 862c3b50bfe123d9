"""Fuzzing campaigns: many processes, one example database, findings on disk.

A campaign is one VMM on one profile for a time budget.  The parent process
(`run_campaign`, behind ``popek fuzz``) starts pytest with pytest-xdist,
``-n WORKERS --dist each``, on ``popek/fuzz/worker.py``; every worker runs
`run_worker`: Hypothesis batches under the ``popek-campaign`` settings
profile (a real example database: a directory, or Redis) until the deadline.

Why batches: a Hypothesis test runs to ``max_examples``; a campaign runs to a
clock.  Each batch is one ``@given`` run that replays the database first,
which is how findings of other workers, earlier runs and other machines come
back at once.  The batches' random seeds come from one generator seeded by
the campaign seed, the shard and the worker, so shards and workers draw
different sequences and a campaign with ``--seed`` can be repeated.

Workers talk to the parent only through files in the campaign's status
directory: ``worker-N.json`` (cases, ISA coverage, findings, efficiency),
rewritten atomically about twice a second, so the live progress line and the
final report need nothing from a worker that was killed.  A finding is
written to the findings directory the moment it is seen.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .campaign_config import CONFIG_ENV, REQUIREMENTS, CampaignConfig, new_campaign_id, requirement_of
from .example_db import check_database, check_directory, is_redis

WORKER_FILE = Path(__file__).with_name("worker.py")


# --------------------------------------------------------------------------
# The parent
# --------------------------------------------------------------------------
def _efficiency_json(e) -> dict | None:
    if e is None:
        return None
    share = None if e.direct_share is None else round(e.direct_share, 4)
    return {"innocuous_steps": e.innocuous, "emulated_innocuous_at_least": e.emulated_innocuous,
            "direct_share_at_most": share}  # fmt: skip


@dataclass
class CampaignReport:
    config: CampaignConfig
    seconds: float
    cases: int
    workers: list[dict] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)
    coverage: Any = None  # IsaCoverage
    code_coverage: float | None = None
    interrupted: bool = False
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    db_skipped: int = 0  # example-database entries skipped as corrupt
    # the profile's innocuous instructions (from the proofs), when the caller
    # knows them: the summary then says what the counts prove about P&G's
    # efficiency (popek.fuzz.efficiency)
    innocuous: frozenset[str] | None = None

    @property
    def cases_per_second(self) -> float:
        """Sum over workers of each worker's own rate (start-up excluded)."""
        return sum(w["cases"] / w["elapsed"] for w in self.workers if w.get("elapsed"))

    @property
    def efficiency(self) -> float | None:
        steps = sum(w.get("guest_steps", 0) for w in self.workers)
        return sum(w.get("direct", 0) for w in self.workers) / steps if steps else None

    def direct_ledger(self):
        """The workers' `DirectLedger` s merged (efficiency per instruction), or None."""
        from .efficiency import DirectLedger, DirectRule

        if self.config.direct is None:
            return None
        ledger = DirectLedger(DirectRule.from_json(self.config.direct))
        for w in self.workers:
            if w.get("direct_ledger"):
                ledger.merge(DirectLedger.from_json(ledger.rule, w["direct_ledger"]))
        return ledger

    def efficiency_figures(self):
        """`popek.fuzz.efficiency.Figures`: the verdict and figures, named
        as the verdict table and the reports name them."""
        from .efficiency import figures

        return figures(
            ledger=self.direct_ledger(), threshold=self.config.innocuous_share,
            steps=sum(w.get("guest_steps", 0) for w in self.workers),
            direct=sum(w.get("direct", 0) for w in self.workers), bound=self.judged_efficiency(),
            inefficient_finding=any(f["kind"] == "efficiency" for f in self.findings),
        )  # fmt: skip

    def judged_efficiency(self):
        """`popek.fuzz.efficiency.Efficiency` over the campaign, or None."""
        from .efficiency import judge

        steps = sum(w.get("guest_steps", 0) for w in self.workers)
        if self.innocuous is None or not steps or self.coverage is None:
            return None
        direct = sum(w.get("direct", 0) for w in self.workers)
        return judge(self.coverage, steps=steps, direct=direct, innocuous=self.innocuous)

    @property
    def faithful_so_far(self) -> bool:
        return not any(requirement_of(f["kind"]) == "fidelity" for f in self.findings)

    @property
    def safe_so_far(self) -> bool:
        return not any(requirement_of(f["kind"]) == "safety" for f in self.findings)

    @property
    def budget(self) -> int | None:
        """The case budget asked for (None: a time budget)."""
        if self.config.cases is not None:
            return self.config.cases
        if self.config.max_cases is not None:
            return self.config.max_cases * self.config.workers
        return None

    @property
    def time_capped(self) -> bool:
        """The time cap stopped some worker short of its case budget."""
        return any(w.get("time_capped") for w in self.workers)

    def problem_cases(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for w in self.workers:
            for req, n in (w.get("problem_cases") or {}).items():
                out[req] = out.get(req, 0) + n
        return out

    def shortest(self, kinds=("fidelity",)) -> dict | None:
        fs = [f for f in self.findings if f["kind"] in kinds]
        return min(fs, key=lambda f: f["instructions"]) if fs else None

    def to_json(self) -> dict:
        from popek.spec import profiles

        prof = profiles.get(self.config.profile)
        cov = self.coverage
        return {
            "vmm": self.config.vmm,
            "profile": self.config.profile,
            "workers": self.config.workers,
            "shard": f"{self.config.shard[0] + 1}/{self.config.shard[1]}",
            "seed": self.config.seed,
            "database": self.config.db or str(Path(".popek") / "examples"),
            "seconds": round(self.seconds, 2),
            "cases": self.cases,
            "cases_per_second": round(self.cases_per_second, 1),
            "efficiency": None if self.efficiency is None else round(self.efficiency, 4),
            "innocuous_efficiency": _efficiency_json(self.judged_efficiency()),
            "efficiency_figures": self.efficiency_figures().to_json(),
            "direct_ledger": None if (ledger := self.direct_ledger()) is None else ledger.to_json(),
            "interrupted": self.interrupted,
            "budget": self.budget,
            "time_cap_seconds": self.config.seconds if self.budget is not None else None,
            "time_capped": self.time_capped,
            "refused": sum(w.get("refused", 0) for w in self.workers),
            "shrink_runs": sum(w.get("shrink_runs", 0) for w in self.workers),
            "problem_cases": self.problem_cases(),
            "findings": self.findings,
            "isa_coverage": {
                "fraction": round(cov.fraction(prof), 4),
                "unreached": [f"{n} ({m})" for n, m in cov.unreached(prof)],
                "table": cov.table(prof),
            },
            "situations": cov.situations_json(prof),
            "code_coverage": self.code_coverage,
            "errors": self.errors,
            "warnings": self.warnings,
            "db_skipped": self.db_skipped,
            "unsaved_findings": sum(1 for f in self.findings if f.get("saved") is False),
        }

    def summary(self) -> str:
        from popek.spec import profiles

        from . import situations

        prof = profiles.get(self.config.profile)
        cov = self.coverage
        lines = [
            f"campaign: VMM {self.config.vmm} on profile {self.config.profile}, "
            f"{self.config.workers} worker(s), shard {self.config.shard[0] + 1}/{self.config.shard[1]}, "
            f"seed {self.config.seed}",
            f"  {self.cases} cases in {self.seconds:.1f} s ({self.cases_per_second:.0f} cases/s)"
            + (f", budget {self.budget} cases" if self.budget is not None else "")
            + (", interrupted" if self.interrupted else ""),
            f"  ISA coverage: {cov.fraction(prof):.0%} of instruction x mode pairs reached",
        ]
        unreached = cov.unreached(prof)
        if unreached:
            lines.append("  NOT reached: " + ", ".join(f"{n} ({m})" for n, m in unreached))
        if cov.observed:
            lines.append("  " + situations.summary_line(dict(cov.situations), cov.observed, prof))
        if self.efficiency is not None:  # worded as the verdict table words it
            fig = self.efficiency_figures()
            lines.append(f"  efficiency: {fig.verdict_text()}; {fig.detail_text()}")
        judged = self.judged_efficiency()
        if judged is not None:
            lines.append(f"  innocuous steps: {judged.describe()}")
        ledger = self.direct_ledger()
        if ledger is not None:
            lines.append("  " + ledger.describe(self.config.innocuous_share))
        if self.code_coverage is not None:
            lines.append(f"  code coverage (popek packages): {self.code_coverage:.1f}%")
        refused = sum(w.get("refused", 0) for w in self.workers)
        if refused:
            lines.append(f"  refused: the VMM declined {refused} generated guests (GuestRefused)")
        if self.time_capped:
            lines.append(f"  TIME CAP: {self.config.seconds:g} s ran out after {self.cases} of {self.budget} "
                         "cases; the budget was cut short")  # fmt: skip
        counted = self.problem_cases()
        if counted:
            lines.append("  cases with problems, by requirement: "
                         + ", ".join(f"{r} {counted[r]}" for r in REQUIREMENTS if r in counted))  # fmt: skip
        if not self.findings:
            lines.append("  findings: none")
        for f in self.findings:
            c = f.get("culprit")
            at = f", first differs at step {c['step']}: {c['insn']} in {c['mode']} mode" if c else ""
            where = f"NOT SAVED ({f['save_error']})" if f.get("saved") is False else f["path"]
            lines.append(
                f"  finding: {f['kind']}: {f['message']} ({f['instructions']} instructions{at}, "
                f"after {f['seconds_to_detection']:.1f} s) -> {where}"
            )
            if f.get("saved") is False:  # printed in full: the terminal is the only copy
                lines += ["    " + line for line in f["report"].splitlines()]
        if self.db_skipped:
            lines.append(f"  example database: {self.db_skipped} corrupt entries skipped")
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        for e in self.errors:
            lines.append(f"  error: {e}")
        return "\n".join(lines)


def _read_statuses(status_dir: Path) -> list[dict]:
    out = []
    for p in sorted(status_dir.glob("worker-*.json")):
        try:
            out.append(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue  # being replaced this instant; the next poll sees it
    return out


def progress_line(statuses: list[dict], profile, started: float) -> str:
    """The live line, from the workers' status documents (local files, or a
    cluster's stream: `popek.cluster`), so both kinds of campaign print alike."""
    from .isa_coverage import IsaCoverage

    cov = IsaCoverage()
    for s in statuses:
        cov.merge(IsaCoverage.from_json(s["coverage"]))
    cases = sum(s["cases"] for s in statuses)
    rate = sum(s["cases"] / s["elapsed"] for s in statuses if s.get("elapsed"))
    nfind = sum(len(s["findings"]) for s in statuses)
    return (
        f"[{time.time() - started:6.1f}s] {cases} cases, {rate:.0f} cases/s, "
        f"ISA coverage {cov.fraction(profile):.0%}, findings {nfind}, workers {len(statuses)}"
    )


def report_from_statuses(config: CampaignConfig, elapsed: float, statuses: list[dict], *,
                         interrupted: bool = False) -> CampaignReport:
    """The report of a campaign from its workers' last status documents,
    wherever they ran (here, or on a cluster: `popek.cluster`)."""
    from .isa_coverage import IsaCoverage

    cov = IsaCoverage()
    for s in statuses:
        cov.merge(IsaCoverage.from_json(s["coverage"]))
        cov.add_situations(s.get("situations"))
    report = CampaignReport(
        config, elapsed, sum(s["cases"] for s in statuses), statuses,
        [f for s in statuses for f in s["findings"]], cov, interrupted=interrupted,
    )  # fmt: skip
    for s in statuses:
        report.errors += s.get("errors", [])
    return report


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
                line = progress_line(_read_statuses(status_dir), prof, started)
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
    statuses = _read_statuses(status_dir)
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
        report.code_coverage = _combine_code_coverage(status_dir)
    return report


def _combine_code_coverage(status_dir: Path) -> float | None:
    import coverage

    cov = coverage.Coverage(data_file=str(status_dir / ".coverage"))
    try:
        cov.combine([str(status_dir)])
        cov.save()
        import io

        return cov.report(file=io.StringIO())
    except coverage.exceptions.CoverageException:
        return None
