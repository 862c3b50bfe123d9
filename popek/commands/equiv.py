"""`popek equiv A B`: two VMMs against each other on the same guests.

A plays the reference (the bare machine's role); a counterexample is a
guest whose state under B differs from its state under A.  Useful to check
a fast design against a simple one, or a rewrite against the original.

    $ popek equiv emulator mypkg.vmm:Fast --profile pg --time 30s

Exit status 0 when no difference was found, 1 when one was.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from popek.cli import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("equiv", help="fuzz two VMMs against each other")
    p.add_argument("a", help="the reference VMM (name or package.module:Class)")
    p.add_argument("b", help="the VMM compared with it")
    p.add_argument("--profile", action="append",
                   help="profile (repeatable; default every profile both declare)")  # fmt: skip
    p.add_argument("--time", default="20s", help="budget per profile (default 20s)")
    p.add_argument("--findings", default=None, metavar="DIR", help="counterexamples (default .popek/findings)")
    p.add_argument("--seed", type=int, default=1, help="campaign seed")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tempfile

    from popek.fuzz import findings
    from popek.fuzz.campaign import CampaignConfig, parse_duration, run_worker
    from popek.spec.profiles import all_profiles
    from popek.vmm_runner import load_vmm

    a, b = load_vmm(args.a), load_vmm(args.b)
    registered = {p.name for p in all_profiles()}
    profiles = args.profile or [p for p in a.supports if p in b.supports and p in registered]
    if not profiles:
        raise UserError(f"{args.a!r} and {args.b!r} declare no registered profile in common")
    for p in profiles:
        if p not in registered:
            raise UserError(f"profile {p!r} is not registered")
    try:
        seconds = parse_duration(args.time)
    except ValueError as e:
        raise UserError(str(e)) from None
    results = []
    status = 0
    for profile in profiles:
        with tempfile.TemporaryDirectory(prefix="popek-equiv-") as tmp:
            config = CampaignConfig(
                vmm=args.b, reference=args.a, profile=profile, seconds=seconds,
                status_dir=str(Path(tmp) / "status"), db=str(Path(tmp) / "examples"),
                findings_dir=str(Path(args.findings or findings.DEFAULT_DIR).resolve()),
                seed=args.seed, distinct=False,
            )  # fmt: skip
            result = run_worker(config, 0)
        diff = next((f for f in result["findings"] if f["kind"] in ("fidelity", "crash", "contract")), None)
        if diff:
            status = 1
            report = findings.read(diff["path"])["report"]
            print(f"{profile}: DIFFERENT after {result['cases']} cases ({diff['instructions']} instructions)")
            print(report)
        else:
            print(f"{profile}: no difference in {result['cases']} cases")
        results.append({"profile": profile, "cases": result["cases"], "difference": diff})
        sys.stdout.flush()
    if args.json:
        Path(args.json).write_text(json.dumps({"a": args.a, "b": args.b, "results": results}, indent=1) + "\n")
    return status
