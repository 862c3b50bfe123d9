"""A worker's findings: written the moment they are seen, made final, reported.

A finding is a file (`popek.fuzz.findings`) from the first case that shows
it, so a killed campaign keeps it; Hypothesis's shrinking rewrites it under
the same name.  When the batch ends, `conclude` makes it final (popek's own
shrinking pass, the culprit, a focused search for a short guest:
`popek.fuzz.minimize`) and adds it to the worker's status, where the parent
and the reports read it.

Efficiency is different: no single case breaks it.  The campaign's faithful
cases, added up per innocuous instruction, judge it at the end of the
worker's run (`efficiency_finding`), and the finding is a guest that shows
the verdict: a short one sought afresh (`popek.fuzz.witness`), or, when only
late steps ran emulated, the long run kept as it was seen
(`keep_late_witness`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from . import findings as fnd
from .campaign_config import CampaignConfig, requirement_of
from .efficiency import DirectRule, EmulatedInnocuous, declared_executions
from .execute import Problem, Run
from .guest import GuestCase
from .minimize import FOCUS_ABOVE, MINIMIZE_CAP, culprit_of, focus, minimize_finding
from .witness import describe_share, efficiency_witness
from .worker_status import WorkerStatus

if TYPE_CHECKING:
    from popek.vmm import VMM

    from .properties import Outcome


def finding_path(directory: Path, config: CampaignConfig, kind: str, tag: str, case: GuestCase) -> Path:
    """Where a finding of this campaign goes: its id and the case's digest
    in the name, so campaigns with the same seed never overwrite each other."""
    return fnd.finding_path(directory, config.vmm, config.profile, kind, tag,
                            campaign=config.campaign_id, digest=case.digest())  # fmt: skip


def conclude(entry: dict[str, Any], vmm_cls: type[VMM], config: CampaignConfig,
             reference: Callable[[GuestCase], Run] | None, excluded: list[str], *,
             shrunk: bool, status: WorkerStatus) -> tuple[str, dict | None]:  # fmt: skip
    """A batch's finding made final: our own shrinking pass, the culprit
    (fidelity), a focused search for a short one, the file rewritten, and
    the entry in the worker's status.  Returns (requirement, culprit)."""
    # past the campaign's deadline, the finding is kept as shrunk so far:
    # --time is a promise about when the command ends
    left = status.deadline - time.time()
    minimize_finding(entry, vmm_cls, config, reference, seconds=min(MINIMIZE_CAP, max(left, 0.5)))
    culprit = None
    if reference is None:
        culprit = culprit_of(vmm_cls, entry["case"], entry["problem"])
        if culprit and entry["case"].instructions > FOCUS_ABOVE and time.time() < status.deadline:
            focus(entry, vmm_cls, config, culprit, excluded)
    earlier = Path(entry["path"])
    path = earlier  # shrunk: the same name, so that a path already printed or mirrored stays good
    if entry.get("path_kind") != entry["problem"].kind:  # shrunk into another kind: that kind's name
        path = finding_path(earlier.parent, config, entry["problem"].kind, entry["tag"], entry["case"])
    doc = fnd.write(
        path, vmm=config.vmm, case=entry["case"], problem=entry["problem"],
        seconds=entry["seconds"], cases=entry["cases"], shrunk=shrunk,
        reference=config.reference or "bare", culprit=culprit,
    )  # fmt: skip
    if earlier != path and doc.get("saved", True):  # shrunk further, or to another kind: the new file replaces it
        earlier.unlink(missing_ok=True)
    req = requirement_of(doc["kind"])
    status.findings.append(_status_entry(doc, str(path), req, culprit, status))
    status.write(force=True)
    return req, culprit


def keep_unconcluded(current: dict[str, Any], pending: dict[str, dict], done: set[str], tag: str,
                     config: CampaignConfig, findings_dir: Path, status: WorkerStatus) -> None:
    """Ctrl-C before a batch's findings are concluded (while Hypothesis or
    our own pass shrinks them): each is kept as it stands, the smallest
    case so far, and entered in the worker's status, so that the summary
    names it and the command does not end as if nothing were found."""
    entered = {f["path"] for f in status.findings}
    for req, entry in (("", current), *pending.items()):
        if req in done or (req and req == current["req"]) or str(entry.get("path")) in entered:
            continue
        entry.setdefault("tag", tag + "p")
        _keep_as_found(entry, config, findings_dir, status)


def _keep_as_found(entry: dict[str, Any], config: CampaignConfig, findings_dir: Path, status: WorkerStatus) -> None:
    if entry.get("case") is None or entry.get("problem") is None:
        return
    path = entry.get("path")
    if path is None or entry.get("path_kind") != entry["problem"].kind:
        path = finding_path(findings_dir, config, entry["problem"].kind, entry["tag"], entry["case"])
    doc = fnd.write(
        path, vmm=config.vmm, case=entry["case"], problem=entry["problem"],
        seconds=entry["seconds"], cases=entry["cases"], shrunk=False,
        reference=config.reference or "bare",
    )  # fmt: skip
    status.findings.append(_status_entry(doc, str(path), requirement_of(doc["kind"]), None, status))


def _status_entry(doc: dict, path: str, req: str, culprit: dict | None, status: WorkerStatus) -> dict:
    """A finding as the worker reports it.  One that could not be saved
    carries its whole report (assembly, and a replay line with the case
    blob), so that the campaign's summary prints it and nothing is lost."""
    entry = {
        "path": path, "kind": doc["kind"], "requirement": req, "message": doc["message"],
        "instructions": doc["instructions"], "uses": doc["uses"],
        "culprit": culprit,
        "seconds_to_detection": doc["seconds_to_detection"],
        "cases_to_detection": doc["cases_to_detection"],
    }  # fmt: skip
    if not doc.get("saved", True):
        entry.update(saved=False, save_error=doc["save_error"], report=doc["report"], replay=doc["replay"])
        # also as an error: `popek check`/`verify` print a cell's errors, with the replay line
        status.errors.append(f"the {doc['kind']} finding could not be saved ({doc['save_error']}); "
                             f"replay it with: {doc['replay']}")  # fmt: skip
        print(f"popek: could not save the {doc['kind']} finding ({doc['save_error']}); "
              f"it is:\n{doc['report']}", file=sys.stderr, flush=True)  # fmt: skip
    return entry


def long_run(case: GuestCase) -> bool:
    """Is the last chunk of ``case`` late enough in its run to be judged on
    its own for efficiency (`DirectLedger.add_late`)?"""
    from .strategies import LATE_FROM

    return len(case.chunks) > 1 and sum(case.chunks[:-1]) >= LATE_FROM


def keep_late_witness(status: WorkerStatus, rule: DirectRule, case: GuestCase, outcome: Outcome,
                      threshold: float) -> None:  # fmt: skip
    """A long run whose last chunk ran innocuous instructions emulated
    (below ``threshold`` of their executions there) is the witness of a
    late-efficiency verdict: no short guest can show it."""
    want = declared_executions(rule, outcome.reference.last)
    low = [
        (name, sum(modes.values()), outcome.run.last.get(name, 0)) for name, modes in sorted(want.items())
        if outcome.run.last.get(name, 0) < threshold * sum(modes.values())
    ]  # fmt: skip
    if low:
        at = sum(case.chunks[:-1])
        said = "; ".join(f"{n} ran directly in {min(d, k)} of {k} executions" for n, k, d in low[:3])
        status.late_witness = (case, Problem("efficiency", f"after guest step {at} (the last {case.chunks[-1]} "
                                                           f"steps of {sum(case.chunks)}): {said}"))  # fmt: skip


def efficiency_finding(status: WorkerStatus, vmm_cls: type[VMM], config: CampaignConfig,
                       findings_dir: Path) -> None:  # fmt: skip
    """The campaign's cases judged an innocuous instruction emulated (its
    direct share below ``innocuous_share``): find a short guest that shows
    it and write it as a finding, like any other (`popek.fuzz.witness`)."""
    low = status.ledger.emulated(config.innocuous_share)
    if not low:
        return
    worst = low[0]
    if worst.late and status.late_witness is not None:  # the long run itself is the witness
        found = status.late_witness
    else:
        found = _short_witness(status, vmm_cls, config, worst)
    verdict = (
        f"not efficient: {describe_share(worst)} over {status.ledger.cases} faithful cases "
        f"(needs {config.innocuous_share:.0%})"
    )
    _write_efficiency_finding(status, config, findings_dir, low, worst, found, verdict)


def _short_witness(status: WorkerStatus, vmm_cls: type[VMM], config: CampaignConfig,
                   worst: EmulatedInnocuous) -> tuple[GuestCase, Problem] | None:  # fmt: skip
    """A short guest in which ``worst``'s instruction ran emulated, or None."""
    try:
        rule = status.ledger.rule  # the witness is sought in the modes the share was judged in
        rule = DirectRule(rule.innocuous, frozenset(worst.modes), rule.paged)
        found = efficiency_witness(
            vmm_cls, config.profile, rule, worst.insn, steps=config.steps, seed=config.seed,
            label=config.vmm,
        )  # fmt: skip
    except Exception as e:  # a harness failure: said, and the verdict stands without a witness
        status.errors.append(f"efficiency witness search failed: {type(e).__name__}: {e}")
        found = None
    return found


def _write_efficiency_finding(status: WorkerStatus, config: CampaignConfig, findings_dir: Path,
                              low: list[EmulatedInnocuous], worst: EmulatedInnocuous,
                              found: tuple[GuestCase, Problem] | None, verdict: str) -> None:  # fmt: skip
    """Write the efficiency verdict's finding (with its witness, if any)."""
    entry = {
        "path": None, "kind": "efficiency", "requirement": "efficiency", "message": verdict,
        "instructions": None, "uses": [], "culprit": None, "emulated_insn": worst.insn,
        "seconds_to_detection": round(time.time() - status.started, 2), "cases_to_detection": status.cases,
        "emulated": [describe_share(e) for e in low[:5]],
    }  # fmt: skip
    if found is not None:
        case, problem = found
        problem.message = f"{problem.message}; campaign: {verdict}"
        tag = f"s{config.shard[0]}w{status.index}eff-{config.seed & 0xFFFF:04x}"
        path = finding_path(findings_dir, config, "efficiency", tag, case)
        doc = fnd.write(
            path, vmm=config.vmm, case=case, problem=problem, seconds=entry["seconds_to_detection"],
            cases=status.cases, shrunk=not worst.late, reference="bare",  # a long run is kept whole
        )  # fmt: skip
        entry.update(path=str(path), message=doc["message"], instructions=doc["instructions"], uses=doc["uses"])
        if not doc.get("saved", True):
            saved = _status_entry(doc, str(path), "efficiency", None, status)
            entry.update({k: saved[k] for k in ("saved", "save_error", "report", "replay")})
    status.findings.append(entry)
    status.write(force=True)
