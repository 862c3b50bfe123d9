"""The verdict table: every design on every profile it declares, from runs.

Each cell is one fuzzing campaign (`popek.fuzz.campaign.run_worker`, in a
process of its own so that cells run side by side): what the design
*declares* (`popek.vmm.Support`) against what the campaign *observed*:
unfaithful when it found a fidelity counterexample (or the VMM crashed or
broke its contract), with the counterexample's length and culprit; else
faithful within the budget.  The table is computed, never written down:
change a design and the table changes.

A faithful verdict from fuzzing means "no counterexample found within the
budget"; the proofs (``popek prove``) are what can say "for every program".
Efficiency is judged the same way, from the campaign's counts
(`popek.fuzz.efficiency`), when the caller knows which instructions are
innocuous; a cell matches when both agree with the declaration.
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from .campaign import CampaignConfig
from .efficiency import DOMINANT, judge
from .isa_coverage import IsaCoverage

FAILING_KINDS = ("fidelity", "crash", "contract")


@dataclass
class Cell:
    design: str  # how the VMM was named
    profile: str
    expected_faithful: bool
    expected_efficient: bool
    reason: str
    observed_faithful: bool
    counterexample: int | None  # instructions, when unfaithful
    culprit: str | None  # "insn (mode)" where the states first differ
    kind: str | None  # the finding's kind
    efficiency: float | None  # share of all guest steps run directly
    safety_findings: int
    cases: int
    seconds: float
    finding: str | None  # path of the saved counterexample
    # efficiency (popek.fuzz.efficiency); None where it was not judged
    observed_efficient: bool | None = None
    innocuous_direct: float | None = None  # the most the innocuous steps' direct share can be
    innocuous_steps: int = 0
    emulated_innocuous: int = 0  # at least this many innocuous steps were emulated

    @property
    def match(self) -> bool:
        efficiency_agrees = self.observed_efficient in (None, self.expected_efficient)
        return self.observed_faithful == self.expected_faithful and efficiency_agrees

    def efficiency_text(self) -> str:
        if self.observed_efficient is None:
            if self.innocuous_steps:
                return f"? ({self.innocuous_steps} innocuous steps)"
            return "-" if self.efficiency is None else f"? ({self.efficiency:.0%} of steps direct)"
        word = "efficient" if self.observed_efficient else "not efficient"
        return f"{word} ({self.innocuous_direct:.0%})"

    def observed_text(self) -> str:
        if self.observed_faithful:
            return f"faithful ({self.cases} cases)"
        what = f"unfaithful ({self.counterexample} insns"
        if self.culprit:
            what += f", {self.culprit}"
        if self.kind and self.kind != "fidelity":
            what += f", {self.kind}"
        return what + ")"

    def to_json(self) -> dict:
        d = asdict(self)
        d["match"] = self.match
        return d


def run_cell(args: tuple) -> Cell:
    """One campaign; a top-level function so that a process pool can run it."""
    from popek import registry

    from .campaign import run_worker

    design, profile, seconds, findings_dir, db, seed, innocuous, threshold = args
    cls = registry.load(design)
    support = cls.supports[profile]
    with tempfile.TemporaryDirectory(prefix="popek-cell-") as tmp:
        config = CampaignConfig(
            vmm=design, profile=profile, seconds=seconds, status_dir=str(Path(tmp) / "status"),
            findings_dir=findings_dir, db=db or str(Path(tmp) / "examples"), seed=seed, distinct=False,
        )  # fmt: skip
        started = time.time()
        result = run_worker(config, 0)
        status = _status(Path(tmp) / "status")
    failing = [f for f in result["findings"] if f["kind"] in FAILING_KINDS]
    first = failing[0] if failing else None
    steps = status.get("guest_steps", 0)
    culprit = None
    if first and first.get("culprit"):
        culprit = f"{first['culprit']['insn']} ({first['culprit']['mode']})"
    judged: dict = {}
    if innocuous is not None and steps:
        eff = judge(
            IsaCoverage.from_json(status.get("coverage", [])),
            steps=steps, direct=status.get("direct", 0), innocuous=innocuous,
        )  # fmt: skip
        if eff.direct_share is not None:  # observed_efficient None: too small a sample
            judged = {
                "observed_efficient": eff.efficient(threshold), "innocuous_direct": round(eff.direct_share, 4),
                "innocuous_steps": eff.innocuous, "emulated_innocuous": eff.emulated_innocuous,
            }  # fmt: skip
    return Cell(
        design=design, profile=profile,
        expected_faithful=support.faithful, expected_efficient=support.efficient, reason=support.reason,
        observed_faithful=first is None,
        counterexample=first["instructions"] if first else None, culprit=culprit,
        kind=first["kind"] if first else None,
        efficiency=(status.get("direct", 0) / steps) if steps else None,
        safety_findings=sum(f["kind"] == "safety" for f in result["findings"]),
        cases=result["cases"], seconds=round(time.time() - started, 1),
        finding=first["path"] if first else None, **judged,
    )  # fmt: skip


def _status(status_dir: Path) -> dict:
    import json

    files = sorted(status_dir.glob("worker-*.json"))
    return json.loads(files[0].read_text()) if files else {}


def run_table(
    cells: list[tuple[str, str]],
    *,
    seconds: float,
    workers: int,
    findings_dir: str,
    db: str | None = None,
    seed: int = 1,
    progress=None,
    innocuous: dict[str, frozenset[str]] | None = None,
    efficiency: float = DOMINANT,
) -> list[Cell]:
    """Campaigns for (design, profile) pairs, ``workers`` at a time.
    ``innocuous``: per profile, the names of its innocuous instructions
    (efficiency is judged where given); ``efficiency``: the threshold."""
    innocuous = innocuous or {}
    jobs = [(d, p, seconds, findings_dir, db, seed, innocuous.get(p), efficiency) for d, p in cells]
    out: list[Cell] = []
    if workers <= 1:
        for job in jobs:
            out.append(run_cell(job))
            if progress:
                progress(out[-1])
        return out
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for cell in pool.map(run_cell, jobs):
            out.append(cell)
            if progress:
                progress(cell)
    return out


def format_table(cells: list[Cell]) -> str:
    rows = [("design", "profile", "observed", "efficiency", "expected", "verdict")]
    for c in cells:
        expected = ("faithful" if c.expected_faithful else "unfaithful") + (
            ", efficient" if c.expected_efficient else ", not efficient"
        )
        rows.append((c.design, c.profile, c.observed_text(), c.efficiency_text(), expected,
                     "MATCH" if c.match else "MISMATCH"))  # fmt: skip
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    lines = ["  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
