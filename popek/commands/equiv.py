"""`popek equiv A B`: two VMMs against each other on the same guests.

A plays the reference (the bare machine's role); a counterexample is a
guest whose state under B differs from its state under A.  Useful to check
a fast design against a simple one, or a rewrite against the original.

    $ popek equiv emulator mypkg.vmm:Fast --profile pg --cases 2000

B is also watched for safety as in any campaign (A runs unwatched: it is
the reference).  The table at the end has, per profile, fidelity (B against
A), efficiency (not judged here: ``popek check`` judges it against the bare
machine) and safety (B), each against what is expected (the same as A, and
safe).  Each profile has a case budget (``--cases``, default
`DEFAULT_CASES`) with a time cap (``--time``); ``--time`` alone is a time
budget, as before.

Exit status 0 when no difference and nothing unsafe was found, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from popek.cli import UserError

from .check import DEFAULT_CAP, budget_options

DEFAULT_CASES = 1000  # per profile: each case runs both VMMs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("equiv", help="fuzz two VMMs against each other")
    p.add_argument("a", help="the reference VMM (name or package.module:Class)")
    p.add_argument("b", help="the VMM compared with it")
    p.add_argument("--profile", action="append",
                   help="profile (repeatable; default every profile both declare)")  # fmt: skip
    p.add_argument("--cases", default=None, metavar="N",
                   help=f"case budget per profile (default {DEFAULT_CASES})")  # fmt: skip
    p.add_argument("--time", default=None, metavar="T",
                   help=f"a time cap per profile (default {DEFAULT_CAP}), reported when it cuts a run short "
                        "of its case budget; given without --cases, a time budget instead")  # fmt: skip
    p.add_argument("--findings", default=None, metavar="DIR", help="counterexamples (default .popek/findings)")
    p.add_argument("--seed", type=int, default=1, help="campaign seed")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="accepted for symmetry: equiv prints no progress lines")
    p.add_argument("--report", metavar="DIR",
                   help="write report.json and a self-contained index.html into DIR (made if missing)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tempfile

    from popek.fuzz import findings
    from popek.fuzz.campaign_config import CampaignConfig, requirement_of
    from popek.fuzz.worker_loop import run_worker
    from popek.fuzz.verdict import message_head
    from popek.spec.profiles import all_profiles
    from popek.vmm_runner import load_vmm

    cases, seconds = budget_options(args, DEFAULT_CASES)
    a, b = load_vmm(args.a), load_vmm(args.b)
    registered = {p.name for p in all_profiles()}
    profiles = args.profile or [p for p in a.supports if p in b.supports and p in registered]
    if not profiles:
        raise UserError(f"{args.a!r} and {args.b!r} declare no registered profile in common")
    for p in profiles:
        if p not in registered:
            raise UserError(f"profile {p!r} is not registered")
    from popek.writable import check_campaign_outputs

    check_campaign_outputs(args.findings or findings.DEFAULT_DIR, None, args.json)  # before the first case
    from popek.report import files as report_files

    report_files.check(args.report)
    print(f"equiv: {args.b} against {args.a} on {', '.join(profiles)}, "
          f"{cases if cases is not None else seconds} {'cases' if cases is not None else 's'} per profile, "
          f"seed {args.seed}", flush=True)  # fmt: skip
    results = []
    rows = [("profile", "fidelity (B vs A)", "efficiency", "safety (B)", "expected", "verdict")]
    status = 0
    for profile in profiles:
        with tempfile.TemporaryDirectory(prefix="popek-equiv-") as tmp:
            config = CampaignConfig(
                vmm=args.b, reference=args.a, profile=profile, seconds=seconds, max_cases=cases,
                status_dir=str(Path(tmp) / "status"), db=str(Path(tmp) / "examples"),
                findings_dir=str(Path(args.findings or findings.DEFAULT_DIR).resolve()),
                seed=args.seed, distinct=False, first=False,
            )  # fmt: skip
            began = time.time()
            result = run_worker(config, 0)
            spent = round(time.time() - began, 2)
        diff = next((f for f in result["findings"] if requirement_of(f["kind"]) == "fidelity"), None)
        unsafe = next((f for f in result["findings"] if requirement_of(f["kind"]) == "safety"), None)
        capped = bool(result.get("time_capped"))
        ran = f"{result['cases']} of {cases} cases, time cap" if capped else f"{result['cases']} cases"
        if diff:
            status = 1
            report = (diff.get("report") or findings.read(diff["path"])["report"])
            print(f"{profile}: DIFFERENT after {result['cases']} cases ({diff['instructions']} instructions)")
            print(report)
        else:
            print(f"{profile}: no difference in {ran}")
        if unsafe:
            status = 1
            print(f"{profile}: {args.b} UNSAFE ({unsafe['instructions']} instructions): {unsafe['message']}")
            print((unsafe.get("report") or findings.read(unsafe["path"])["report"]))
        if capped:
            print(f"{profile}: TIME CAP: {seconds:g} s ran out after {result['cases']} of {cases} cases")
        rows.append((
            profile,
            f"different ({diff['instructions']} insns)" if diff else f"equivalent ({ran})",
            "-",
            f"UNSAFE ({unsafe['instructions']} insns, {message_head(unsafe['message'])})" if unsafe
            else f"safe ({ran})",
            "equivalent, safe",
            "MATCH" if not diff and not unsafe
            else "MISMATCH (" + ", ".join(r for r, f in (("fidelity", diff), ("safety", unsafe)) if f) + ")",
        ))  # fmt: skip
        results.append({
            "profile": profile, "cases": result["cases"], "budget": cases, "time_capped": capped,
            "difference": diff, "unsafe": unsafe, "seconds": spent, "timeline": result.get("timeline") or [],
            "requirements": {
                "fidelity": {"expected": True, "observed": diff is None, "match": diff is None},
                "efficiency": {"expected": None, "observed": None, "match": True},
                "safety": {"expected": True, "observed": unsafe is None, "match": unsafe is None},
            },
            "match": diff is None and unsafe is None,
        })  # fmt: skip
        sys.stdout.flush()
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    print()
    for k, r in enumerate(rows):
        print("  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
    if args.json:
        Path(args.json).write_text(json.dumps({"a": args.a, "b": args.b, "results": results}, indent=1) + "\n")
    if args.report:
        from popek.report import document

        doc = document.from_equiv(args.argv, args.a, args.b, results, seed=args.seed)
        report_files.print_paths(report_files.write(args.report, doc))
    return status
