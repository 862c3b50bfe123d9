"""The verdict table: every design on every profile it declares, from runs.

Each cell is one fuzzing campaign (`popek.fuzz.worker_loop.run_worker`, in a
process of its own so that cells run side by side): what the design
*declares* (`popek.vmm.Support`: faithful, efficient; every design is
declared safe) against what the campaign *observed*, for each of Popek and
Goldberg's three requirements:

* **fidelity**: unfaithful when the campaign found a fidelity
  counterexample, with the counterexample's length and culprit; a crash or
  a broken plug-in contract counts here too (the VMM's answers cannot be
  trusted, so the guest did not get what the bare machine gives it); else
  faithful within the budget;
* **efficiency**: judged from the campaign's counts (`popek.fuzz.efficiency`)
  when the caller knows which instructions are innocuous, and not efficient
  whatever the counts say when the campaign found an efficiency problem;
* **safety**: unsafe when the campaign found a safety problem (host storage
  outside the allocation changed, real resources changed by guest code, a
  ``run(n)`` that overran its bound), with the shrunk witness; else safe
  within the budget.

A cell MATCHes only when all three agree with the declaration.  A campaign
does not stop at its first finding: it goes on until each requirement it
can break has one (`run_worker`), so a fidelity finding cannot hide a safety
one.  The table is computed, never written down: change a design and the
table changes.

"Faithful" and "safe" from fuzzing mean "no counterexample found within the
budget"; the proofs (``popek prove``) are what can say "for every program".
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from .campaign_config import CampaignConfig, requirement_of
from .efficiency import DOMINANT, DirectLedger, DirectRule, Figures, figures, judge
from .isa_coverage import IsaCoverage

FAILING_KINDS = ("fidelity", "crash", "contract")  # the kinds that break fidelity
HEAD = 60  # characters of a safety finding's message shown in the table


def message_head(message: str) -> str:
    """The gist of a finding's message, for a table cell: parenthesized
    detail dropped, cut at ``HEAD`` characters."""
    kept, depth = [], 0
    for ch in message:  # "[a, b)" is an interval: it opens with "[" and may close with ")"
        if ch in "([":
            depth += 1
        elif ch in ")]" and depth:
            depth -= 1
        elif not depth:
            kept.append(ch)
    text = " ".join("".join(kept).split())
    return text if len(text) <= HEAD else text[: HEAD - 3].rstrip() + "..."


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
    # the lowest direct share of an innocuous instruction (host's record), and which
    innocuous_direct: float | None = None
    lowest_direct: str | None = None
    innocuous_steps: int = 0
    emulated_innocuous: int = 0  # at least this many innocuous steps were emulated
    expected_promise: str = ""  # the efficiency declaration in words (its modes, paging)
    # safety: every design is declared safe
    expected_safe: bool = True
    observed_safe: bool = True
    safety_counterexample: int | None = None  # instructions, when unsafe
    safety_message: str | None = None
    safety_finding: str | None = None  # path of the saved witness
    efficiency_finding: str | None = None  # an efficiency problem's witness, if any
    # the budget: cases asked for (None: a time budget), and whether the time
    # cap cut the campaign short of it
    budget: int | None = None
    time_capped: bool = False
    refused: int = 0  # guests the design declined (GuestRefused): not cases
    # per requirement, generated cases that had a problem breaking it
    problem_cases: dict | None = None
    errors: list | None = None  # the campaign could not run as asked (a harness failure)
    # the efficiency figures under the names every output uses (`popek.fuzz.efficiency.Figures`)
    efficiency_figures: dict | None = None
    # what the report plots: [seconds, cases, ISA coverage, situation coverage]
    # after each batch, and each innocuous instruction's direct share
    timeline: list | None = None
    direct_shares: dict | None = None
    fidelity_message: str | None = None  # what the first fidelity-breaking finding said
    # declared capabilities (snapshot, migration, ...) whose checks failed on
    # this profile (`popek check` fills it in after the campaign)
    capabilities_failed: list | None = None

    def agrees(self) -> dict[str, bool]:
        """Per requirement: does what was observed agree with the declaration?"""
        return {
            "fidelity": self.observed_faithful == self.expected_faithful,
            # not judged (too small a sample): the cell rests on the others
            "efficiency": self.observed_efficient in (None, self.expected_efficient),
            "safety": self.observed_safe == self.expected_safe,
            "capabilities": not self.capabilities_failed,
        }

    @property
    def match(self) -> bool:
        """All three agree, the declared capabilities held, the plug-in kept
        the contract, and the campaign ran as asked (an error in it leaves the
        verdict unfounded: no MATCH)."""
        return all(self.agrees().values()) and not self.errors and not self.contract_broken

    @property
    def contract_broken(self) -> bool:
        """The fidelity finding is the plug-in breaking the contract (or
        crashing), not a guest that ran differently."""
        return self.kind in ("contract", "crash")

    def verdict_text(self) -> str:
        """MATCH only when every observation agrees with the declaration;
        else the requirements (or the contract, or the capabilities) that do not."""
        wrong = [r for r, ok in self.agrees().items() if not ok] + (["error"] if self.errors else [])
        if self.contract_broken:
            wrong = ["contract" if r == "fidelity" else r for r in wrong]
            if "contract" not in wrong:  # declared unfaithful: a broken contract is still no match
                wrong.insert(0, "contract")
        return "MATCH" if not wrong else f"MISMATCH ({', '.join(wrong)})"

    def cases_text(self) -> str:
        if self.time_capped and self.budget is not None:
            return f"{self.cases} of {self.budget} cases, time cap"
        return f"{self.cases} cases"

    def safety_text(self) -> str:
        if self.observed_safe:
            return f"safe ({self.cases_text()})"
        head = message_head(self.safety_message or "")
        return f"UNSAFE ({self.safety_counterexample} insns, {head})"

    def expected_text(self) -> str:
        return ", ".join((
            "faithful" if self.expected_faithful else "unfaithful",
            self.expected_promise or ("efficient" if self.expected_efficient else "not efficient"),
            "safe" if self.expected_safe else "unsafe",
        ))  # fmt: skip

    def efficiency_text(self) -> str:
        """The efficiency column, worded as every campaign summary words it."""
        return Figures(
            efficient=self.observed_efficient, lowest_insn=self.lowest_direct, lowest_share=self.innocuous_direct,
            all_steps=self.efficiency, innocuous_steps=self.innocuous_steps,
        ).verdict_text()  # fmt: skip

    def observed_text(self) -> str:
        """The fidelity column."""
        if self.observed_faithful:
            return f"faithful ({self.cases_text()})"
        if self.contract_broken:
            word = "contract broken" if self.kind == "contract" else "plug-in crashed"
            return f"{word} ({self.counterexample} insns, {message_head(self.fidelity_message or '')})"
        what = f"unfaithful ({self.counterexample} insns"
        if self.culprit:
            what += f", {self.culprit}"
        if self.kind and self.kind != "fidelity":
            what += f", {self.kind}"
        return what + ")"

    def summary_text(self) -> str:
        """One line: the three observations and the verdict (progress lines)."""
        return f"{self.observed_text()}; {self.efficiency_text()}; {self.safety_text()}: {self.verdict_text()}"

    def to_json(self) -> dict:
        d = asdict(self)
        d["match"] = self.match
        agrees = self.agrees()
        d["requirements"] = {
            "fidelity": {"expected": self.expected_faithful, "observed": self.observed_faithful,
                         "match": agrees["fidelity"], "finding": self.finding},
            "efficiency": {"expected": self.expected_efficient, "observed": self.observed_efficient,
                           "match": agrees["efficiency"], "finding": self.efficiency_finding},
            "safety": {"expected": self.expected_safe, "observed": self.observed_safe,
                       "match": agrees["safety"], "finding": self.safety_finding},
        }  # fmt: skip
        return d


def rule_for(support, innocuous: frozenset[str]) -> DirectRule:
    """What ``support`` (a `popek.vmm.Support`) promises, as popek checks it."""
    return DirectRule(frozenset(innocuous), support.modes, support.direct_paged)


def run_cell(args: tuple) -> Cell:
    """One campaign; a top-level function so that a process pool can run it.

    ``args``: (design, profile, seconds, findings_dir, db, seed, innocuous,
    threshold[, cases]): with ``cases``, a case budget and ``seconds`` its
    time cap; without, a time budget of ``seconds``."""
    from popek import isolation

    from .worker_loop import run_worker

    design, profile, seconds, findings_dir, db, seed, innocuous, threshold, *rest = args
    cases = rest[0] if rest else None
    cls = isolation.load(design)
    support = cls.supports[profile]
    with tempfile.TemporaryDirectory(prefix="popek-cell-") as tmp:
        rule = rule_for(support, innocuous) if innocuous is not None else None
        config = CampaignConfig(
            vmm=design, profile=profile, seconds=seconds, status_dir=str(Path(tmp) / "status"),
            findings_dir=findings_dir, db=db or str(Path(tmp) / "examples"), seed=seed, distinct=False,
            first=False, max_cases=cases, direct=rule.to_json() if rule else None, innocuous_share=threshold,
        )  # fmt: skip
        started = time.time()
        result = run_worker(config, 0)
        status = _status(Path(tmp) / "status")
    by_req: dict[str, list[dict]] = {}
    for f in result["findings"]:
        by_req.setdefault(f.get("requirement") or requirement_of(f["kind"]), []).append(f)
    failing = by_req.get("fidelity", [])
    first = failing[0] if failing else None
    unsafe = by_req.get("safety", [])
    safety = min(unsafe, key=lambda f: f["instructions"]) if unsafe else None
    inefficient = by_req.get("efficiency", [])
    steps = status.get("guest_steps", 0)
    culprit = None
    if first and first.get("culprit"):
        culprit = f"{first['culprit']['insn']} ({first['culprit']['mode']})"
    judged: dict = {}
    eff = None
    if innocuous is not None and steps:
        # the totals' bound (docs/efficiency.md), kept as a figure beside the verdict
        eff = judge(
            IsaCoverage.from_json(status.get("coverage", [])),
            steps=steps, direct=status.get("direct", 0), innocuous=innocuous,
        )  # fmt: skip
        judged = {"innocuous_steps": eff.innocuous, "emulated_innocuous": eff.emulated_innocuous}
    # the verdict: each innocuous instruction's direct share, from the host's
    # record; a witness of inefficiency outweighs totals that look fine
    ledger = DirectLedger.from_json(rule, status["direct_ledger"]) \
        if rule is not None and status.get("direct_ledger") else None
    fig = figures(ledger=ledger, threshold=threshold, steps=steps, direct=status.get("direct", 0), bound=eff,
                  inefficient_finding=bool(inefficient))  # fmt: skip
    if fig.efficient is not None:
        judged["observed_efficient"] = fig.efficient
    if fig.lowest_insn is not None:
        judged.update(innocuous_direct=round(fig.lowest_share, 4), lowest_direct=fig.lowest_insn)
    judged["efficiency_figures"] = fig.to_json()
    if ledger is not None:
        judged["direct_shares"] = ledger.grid()
    return Cell(
        design=design, profile=profile,
        expected_faithful=support.faithful, expected_efficient=support.efficient, reason=support.reason,
        expected_promise=support.promise(),
        observed_faithful=first is None,
        counterexample=first["instructions"] if first else None, culprit=culprit,
        kind=first["kind"] if first else None, fidelity_message=first.get("message") if first else None,
        efficiency=(status.get("direct", 0) / steps) if steps else None,
        safety_findings=len(unsafe),
        cases=result["cases"], seconds=round(time.time() - started, 1),
        finding=first["path"] if first else None, **judged,
        observed_safe=safety is None,
        safety_counterexample=safety["instructions"] if safety else None,
        safety_message=safety["message"] if safety else None,
        safety_finding=safety["path"] if safety else None,
        efficiency_finding=inefficient[0]["path"] if inefficient else None,
        budget=cases, time_capped=bool(result.get("time_capped")), refused=result.get("refused", 0),
        problem_cases=result.get("problem_cases") or {}, errors=list(result.get("errors") or []),
        timeline=result.get("timeline"),
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
    innocuous_share: float = DOMINANT,
    cases: int | None = None,
) -> list[Cell]:
    """Campaigns for (design, profile) pairs, ``workers`` at a time.
    ``cases``: the case budget per cell, with ``seconds`` its time cap (None:
    a time budget of ``seconds``); ``innocuous``: per profile, the names of
    its innocuous instructions (efficiency is judged where given);
    ``innocuous_share``: the efficiency threshold."""
    innocuous = innocuous or {}
    jobs = [
        (d, p, seconds, findings_dir, db, seed, innocuous.get(p), innocuous_share, cases) for d, p in cells
    ]  # fmt: skip
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
    rows = [("design", "profile", "fidelity", "efficiency", "safety", "expected", "verdict")]
    for c in cells:
        rows.append((c.design, c.profile, c.observed_text(), c.efficiency_text(), c.safety_text(),
                     c.expected_text(), c.verdict_text()))  # fmt: skip
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    lines = ["  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def notes(cells: list[Cell]) -> list[str]:
    """Lines below the table: budgets the time cap cut short, refusals."""
    out = []
    capped = [c for c in cells if c.time_capped]
    if capped:
        out.append("time cap reached before the case budget: " + ", ".join(
            f"{c.design}/{c.profile} ({c.cases} of {c.budget} cases)" for c in capped
        ) + "; those verdicts rest on fewer cases than asked for")  # fmt: skip
    for c in cells:
        for e in c.errors or []:
            out.append(f"error in {c.design}/{c.profile}: {e.splitlines()[0] if e else e}")
    refused = [c for c in cells if c.refused]
    if refused:
        out.append("refused guests (GuestRefused; not cases, no verdict on them): " + ", ".join(
            f"{c.design}/{c.profile} {c.refused}" for c in refused
        ))  # fmt: skip
    return out
