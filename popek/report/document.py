"""``report.json``: what a command computed, as one versioned document.

Every command's results become the same shape: *rows* (one per cell of the
verdict table: design x profile, three requirements each, observed against
declared), *campaigns* (what the plots draw: coverage over time, direct
share per instruction, cases per second), *counterexamples* (read back from
the finding files: assembly, state diff, replay command) and, for ``popek
verify``, *proofs* (per profile, the theorems' verdicts, the offenders with
their witnesses and the whole classification).  The schema is
``report-v1.schema.json`` beside this module; tests validate against it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterable

from popek.report import FORMAT, VERSION
from popek.version import version

if TYPE_CHECKING:
    from popek.fuzz.campaign_report import CampaignReport
    from popek.fuzz.verdict import Cell
    from popek.vmm import Support


def document(command: str, argv: list[str], *, seed: int | None, rows: list[dict], campaigns: list[dict],
             finding_paths: Iterable[tuple[str, str, str]], proofs: dict | None = None,
             migration: dict | None = None) -> dict:
    """The whole report.  ``finding_paths``: (design, profile, path) of each
    counterexample to include, read back from its file."""
    matched = [r["match"] for r in rows if r["match"] is not None]
    return {
        "format": FORMAT,
        "version": VERSION,
        "command": command,
        "argv": list(argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "popek_version": version(),
        "seed": seed,
        "summary": {"rows": len(rows), "match": sum(matched), "mismatch": len(matched) - sum(matched)},
        "rows": rows,
        "campaigns": campaigns,
        "counterexamples": [c for c in (counterexample(*f) for f in _unique(finding_paths)) if c],
        "proofs": proofs,
        "migration": migration,
    }


def _unique(items: Iterable[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    seen, out = set(), []
    for design, profile, path in items:
        if path and path not in seen:
            seen.add(path)
            out.append((design, profile, path))
    return out


def counterexample(design: str, profile: str, path: str) -> dict | None:
    """A finding file as the report shows it; one that cannot be read back
    is listed by path and reason rather than dropped."""
    from popek.fuzz import findings
    from popek.fuzz.campaign_config import requirement_of
    from popek.spec.stored import StoredError

    try:
        doc = findings.read(path)
    except (StoredError, OSError) as e:
        return {"design": design, "profile": profile, "path": path, "kind": None, "requirement": None,
                "message": f"the finding file could not be read: {e}", "instructions": None,
                "assembly": "", "diffs": [], "replay": ""}  # fmt: skip
    return {
        "design": design, "profile": profile, "path": path, "kind": doc["kind"],
        "requirement": requirement_of(doc["kind"]), "message": doc["message"],
        "instructions": doc.get("instructions"), "assembly": doc.get("assembly", ""),
        "diffs": [[str(k), _plain(a), _plain(b)] for k, a, b in doc.get("diffs", [])],
        "replay": f"popek fuzz --replay {path}",
    }  # fmt: skip


def _plain(v: Any) -> Any:
    return v if isinstance(v, (int, str)) or v is None else str(v)


def _requirement(expected: bool | None, observed: bool | None, text: str, finding: str | None,
                 **extra: Any) -> dict:
    match = None if expected is None or observed is None else expected == observed
    return {"expected": expected, "observed": observed, "match": match, "text": text, "finding": finding, **extra}


# -- from verdict-table cells (verify, check) -----------------------------------
def row_from_cell(c: "Cell") -> dict:
    """One `popek.fuzz.verdict.Cell` as a row."""
    return {
        "design": c.design, "profile": c.profile,
        "fidelity": _requirement(c.expected_faithful, c.observed_faithful, c.observed_text(), c.finding),
        "efficiency": _requirement(c.expected_efficient, c.observed_efficient, c.efficiency_text(),
                                   c.efficiency_finding, figures=c.efficiency_figures),
        "safety": _requirement(c.expected_safe, c.observed_safe, c.safety_text(), c.safety_finding),
        "expected": c.expected_text(), "verdict": c.verdict_text(), "match": c.match,
        "cases": c.cases, "budget": c.budget, "seconds": c.seconds, "time_capped": c.time_capped,
    }  # fmt: skip


def campaign_from_cell(c: "Cell") -> dict:
    return {
        "design": c.design, "profile": c.profile, "cases": c.cases, "seconds": c.seconds,
        "cases_per_second": round(c.cases / c.seconds, 2) if c.seconds else None,
        "timeline": c.timeline or [], "direct_shares": c.direct_shares or {},
    }  # fmt: skip


def from_cells(
    command: str, argv: list[str], cells: list["Cell"], *, seed: int | None, proofs: dict | None = None
) -> dict:
    paths = [(c.design, c.profile, p) for c in cells for p in (c.finding, c.safety_finding, c.efficiency_finding)]
    return document(command, argv, seed=seed, rows=[row_from_cell(c) for c in cells],
                    campaigns=[campaign_from_cell(c) for c in cells], finding_paths=paths, proofs=proofs)  # fmt: skip


# -- from one campaign (fuzz) ------------------------------------------------------
def from_campaign(argv: list[str], report: "CampaignReport", support: "Support | None") -> dict:
    """`popek.fuzz.campaign_report.CampaignReport` as a one-row report; ``support``:
    what the VMM declares on the profile (None: nothing declared)."""
    from popek.fuzz.campaign_config import requirement_of

    cfg = report.config
    fig = report.efficiency_figures()
    by_req: dict[str, list[dict]] = {}
    for f in report.findings:
        by_req.setdefault(requirement_of(f["kind"]), []).append(f)
    fid, unsafe, slow = (by_req.get(r, []) for r in ("fidelity", "safety", "efficiency"))
    shortest = min(fid, key=lambda f: f["instructions"] or 0) if fid else None
    fid_text = f"faithful ({report.cases} cases)"
    if shortest:  # worded as the verdict table words it (`popek.fuzz.verdict.Cell.observed_text`)
        c = shortest.get("culprit")
        fid_text = f"unfaithful ({shortest['instructions']} insns" + (f", {c['insn']} ({c['mode']})" if c else "") + ")"
    safe_text = f"safe ({report.cases} cases)" if not unsafe else f"UNSAFE ({unsafe[0]['instructions']} insns)"
    exp_f = None if support is None else bool(support.faithful)
    exp_e = None if support is None else bool(support.efficient)
    row = {
        "design": cfg.vmm, "profile": cfg.profile,
        "fidelity": _requirement(exp_f, not fid, fid_text, shortest["path"] if shortest else None),
        "efficiency": _requirement(exp_e, fig.efficient, fig.verdict_text(), slow[0]["path"] if slow else None,
                                   figures=fig.to_json()),
        "safety": _requirement(True, not unsafe, safe_text, unsafe[0]["path"] if unsafe else None),
        "expected": "-",
        "cases": report.cases, "budget": report.budget, "seconds": round(report.seconds, 1),
        "time_capped": report.time_capped,
    }  # fmt: skip
    if support is not None:
        row["expected"] = ", ".join(("faithful" if support.faithful else "unfaithful", support.promise(), "safe"))
    _verdict(row)
    several = len(report.workers) > 1
    campaigns = [{
        "design": f"{cfg.vmm} worker {w.get('worker', k)}" if several else cfg.vmm,
        "profile": cfg.profile, "cases": w.get("cases", 0), "seconds": round(w.get("elapsed", 0.0), 2),
        "cases_per_second": round(w["cases"] / w["elapsed"], 2) if w.get("elapsed") else None,
        "timeline": w.get("timeline") or [], "direct_shares": {},
    } for k, w in enumerate(report.workers)]  # fmt: skip
    ledger = report.direct_ledger()  # merged over the workers: one entry, the campaign's
    if ledger is not None:
        if several:
            campaigns.append({"design": cfg.vmm, "profile": cfg.profile, "cases": report.cases,
                              "seconds": round(report.seconds, 2), "cases_per_second": None, "timeline": [],
                              "direct_shares": ledger.grid()})  # fmt: skip
        elif campaigns:
            campaigns[0]["direct_shares"] = ledger.grid()
    paths = [(cfg.vmm, cfg.profile, f["path"]) for f in report.findings if f.get("path") and f.get("saved", True)]
    return document("fuzz", argv, seed=cfg.seed, rows=[row], campaigns=campaigns, finding_paths=paths)


def _verdict(row: dict) -> None:
    wrong = [r for r in ("fidelity", "efficiency", "safety") if row[r]["match"] is False]
    known = [row[r]["match"] for r in ("fidelity", "efficiency", "safety") if row[r]["match"] is not None]
    row["match"] = None if not known else not wrong
    row["verdict"] = "-" if not known else "MATCH" if not wrong else f"MISMATCH ({', '.join(wrong)})"


# -- from popek equiv ----------------------------------------------------------------
def from_equiv(argv: list[str], a: str, b: str, results: list[dict], *, seed: int) -> dict:
    rows, campaigns, paths = [], [], []
    for r in results:
        diff, unsafe = r["difference"], r["unsafe"]
        ran = f"{r['cases']} cases"
        row = {
            "design": f"{b} vs {a}", "profile": r["profile"],
            "fidelity": _requirement(True, diff is None, f"different ({diff['instructions']} insns)" if diff
                                     else f"equivalent ({ran})", diff["path"] if diff else None),
            "efficiency": _requirement(None, None, "-", None),
            "safety": _requirement(True, unsafe is None, f"UNSAFE ({unsafe['instructions']} insns)" if unsafe
                                   else f"safe ({ran})", unsafe["path"] if unsafe else None),
            "expected": "equivalent, safe", "cases": r["cases"], "budget": r["budget"],
            "seconds": r.get("seconds"), "time_capped": r["time_capped"],
        }  # fmt: skip
        _verdict(row)
        rows.append(row)
        campaigns.append({"design": f"{b} vs {a}", "profile": r["profile"], "cases": r["cases"],
                          "seconds": r.get("seconds"), "timeline": r.get("timeline") or [], "direct_shares": {},
                          "cases_per_second": round(r["cases"] / r["seconds"], 2) if r.get("seconds") else None})
        paths += [(row["design"], r["profile"], f["path"]) for f in (diff, unsafe) if f and f.get("path")]
    return document("equiv", argv, seed=seed, rows=rows, campaigns=campaigns, finding_paths=paths)
