"""What a campaign did, gathered from its workers' status documents.

The parent never asks a worker anything: it reads the status documents the
workers keep rewriting (`popek.fuzz.worker_status`), whether they are files
in the campaign's status directory or a cluster's stream (`popek.cluster`).
So the live progress line (`progress_line`) and the final `CampaignReport`
(`report_from_statuses`) are computed the same way for a local campaign, a
cluster's, and one whose workers were killed.  The report is what the
summary prints, what ``--json`` writes and what report.json and the HTML
page are built from (`popek.report`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .campaign_config import REQUIREMENTS, CampaignConfig, requirement_of

if TYPE_CHECKING:
    from popek.spec.profiles import Profile

    from .efficiency import DirectLedger, Efficiency, Figures


@dataclass
class CampaignReport:
    """A campaign's outcome: what it was asked (``config``), what each worker
    last reported (``workers``), and what follows from them (the verdicts'
    figures, the summary, the JSON)."""

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

    def direct_ledger(self) -> DirectLedger | None:
        """The workers' `DirectLedger` s merged (efficiency per instruction), or None."""
        from .efficiency import DirectLedger, DirectRule

        if self.config.direct is None:
            return None
        ledger = DirectLedger(DirectRule.from_json(self.config.direct))
        for w in self.workers:
            if w.get("direct_ledger"):
                ledger.merge(DirectLedger.from_json(ledger.rule, w["direct_ledger"]))
        return ledger

    def efficiency_figures(self) -> Figures:
        """`popek.fuzz.efficiency.Figures`: the verdict and figures, named
        as the verdict table and the reports name them."""
        from .efficiency import figures

        return figures(
            ledger=self.direct_ledger(), threshold=self.config.innocuous_share,
            steps=sum(w.get("guest_steps", 0) for w in self.workers),
            direct=sum(w.get("direct", 0) for w in self.workers), bound=self.judged_efficiency(),
            inefficient_finding=any(f["kind"] == "efficiency" for f in self.findings),
        )  # fmt: skip

    def judged_efficiency(self) -> Efficiency | None:
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

    def shortest(self, kinds: tuple[str, ...] = ("fidelity",)) -> dict | None:
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


def read_statuses(status_dir: Path) -> list[dict]:
    """The status documents in ``status_dir`` as they are this instant."""
    out = []
    for p in sorted(status_dir.glob("worker-*.json")):
        try:
            out.append(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue  # being replaced this instant; the next poll sees it
    return out


def progress_line(statuses: list[dict], profile: Profile, started: float) -> str:
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


def combine_code_coverage(status_dir: Path) -> float | None:
    """The workers' coverage.py data combined: popek's packages' line
    coverage in percent (``--code-coverage``), or None if there is none."""
    import coverage

    cov = coverage.Coverage(data_file=str(status_dir / ".coverage"))
    try:
        cov.combine([str(status_dir)])
        cov.save()
        import io

        return cov.report(file=io.StringIO())
    except coverage.exceptions.CoverageException:
        return None


def _efficiency_json(e: Efficiency | None) -> dict | None:
    if e is None:
        return None
    share = None if e.direct_share is None else round(e.direct_share, 4)
    return {"innocuous_steps": e.innocuous, "emulated_innocuous_at_least": e.emulated_innocuous,
            "direct_share_at_most": share}  # fmt: skip
