"""`popek fuzz`: a fuzzing campaign for one VMM on one profile, or a replay.

    popek fuzz --vmm trap-and-emulate --profile x86 --workers 2 --time 10m
    popek fuzz --vmm trap-and-emulate --profile x86 --workers 2 --cases 5000 --seed 7
    popek fuzz --vmm mypkg.vmm:MyVMM --profile pg --db redis://10.0.0.5:6379 --shard 2/4
    popek fuzz --replay .popek/findings/X.json     (the path the campaign printed)
    popek fuzz --vmm trap-and-emulate --profile x86 --cases 300 --report out/

Exit status: 0 when the campaign found nothing, 1 when it found a
counterexample (or a replay still fails), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from popek import cluster
from popek.cli import UserError

DEFAULT_TIME = "60s"
CASES_CAP = "1h"  # the time cap of a case budget when --time is not given


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fuzz", help="fuzz a VMM against the bare machine (fidelity, efficiency, safety)")
    add_campaign_arguments(p, vmm_required=False)  # a finding file names its VMM and profile
    p.add_argument("--profile", help="instruction-set profile, e.g. pg, hybrid, x86 (required but with --replay FILE)")
    p.add_argument("--replay", metavar="FINDING",
                   help="re-run one saved finding (the path your campaign printed: the file names its "
                        "VMM and profile), or the 'blob' word it holds (with --vmm and --profile)")  # fmt: skip
    p.add_argument("--json", metavar="FILE", help="write the campaign report as JSON to FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="no live progress line")
    p.add_argument("--report", metavar="DIR",
                   help="write report.json and a self-contained index.html into DIR (made if missing)")
    cluster.add_arguments(p)
    p.set_defaults(func=run)


def add_campaign_arguments(p: argparse.ArgumentParser, *, vmm: bool = True, vmm_required: bool = True) -> None:
    if vmm:
        p.add_argument("--vmm", required=vmm_required, help="registered VMM name or package.module:Class")
    p.add_argument("--workers", type=int, default=1, help="worker processes (pytest-xdist), default 1")
    p.add_argument("--cases", default=None, metavar="N",
                   help="case budget of the campaign, shared among its workers: with --seed, the same "
                        "cases whatever the machine's load (default: a time budget)")  # fmt: skip
    p.add_argument("--time", default=None,
                   help=f"time budget per campaign, e.g. 90s, 10m, 1h (default {DEFAULT_TIME}); with "
                        f"--cases, a time cap (default {CASES_CAP}), reported when it cuts the run short")  # fmt: skip
    p.add_argument("--db", metavar="DIR|redis://HOST:PORT",
                   help="Hypothesis example database (default .popek/examples)")  # fmt: skip
    p.add_argument("--shard", default="1/1", metavar="I/N",
                   help="this machine's share of a multi-machine campaign (default 1/1)")  # fmt: skip
    p.add_argument("--findings", default=None, metavar="DIR",
                   help="where counterexamples are written (default .popek/findings)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="campaign seed (default: random, reported)")
    p.add_argument("--min-direct-share", default=None, metavar="SHARE",
                   help="an efficiency finding for each case whose share of guest steps run directly "
                        "(all steps, per case) is below SHARE (0..1)")  # fmt: skip
    p.add_argument("--efficiency", default=None, dest="efficiency_deprecated", metavar="SHARE",
                   help="deprecated: the old name of --min-direct-share")  # fmt: skip
    p.add_argument("--max-instructions", type=int, default=24, help="longest generated section")
    p.add_argument("--steps", type=int, default=400, help="step budget of each case")
    p.add_argument("--code-coverage", action="store_true",
                   help="measure code coverage of popek's packages with coverage.py (slower)")  # fmt: skip
    p.add_argument("--reuse-only", action="store_true",
                   help="only replay the example database; generate nothing")  # fmt: skip
    p.add_argument("--first", action="store_true",
                   help="stop at the first counterexample (default: exclude each finding's "
                        "culprit instruction and go on looking for distinct ones)")  # fmt: skip


def config_from_args(args: argparse.Namespace, vmm: str, profile: str):
    from popek.cli import deprecated_option
    from popek.fuzz import findings
    from popek.fuzz.campaign_config import CampaignConfig, parse_cases, parse_duration, parse_shard

    try:
        cases = None if args.cases is None else parse_cases(args.cases)
        seconds = parse_duration(args.time or (DEFAULT_TIME if cases is None else CASES_CAP))
        shard = parse_shard(args.shard)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    if cases is not None and cases < args.workers:
        raise UserError(f"--cases {cases} is fewer than --workers {args.workers}: each worker needs a case")
    share = args.min_direct_share
    if args.efficiency_deprecated is not None:
        if share is not None:
            raise UserError("--efficiency is the old name of --min-direct-share: give only --min-direct-share")
        deprecated_option("--efficiency", "--min-direct-share",
                          "the per-case share of all guest steps run directly")  # fmt: skip
        share = args.efficiency_deprecated
    option = "--min-direct-share" if args.efficiency_deprecated is None else "--efficiency"
    if share is not None:
        from .check import fraction

        share = fraction(share, option, 0.0)
    if args.code_coverage:
        import importlib.util

        if importlib.util.find_spec("coverage") is None:
            raise UserError("--code-coverage needs coverage.py, which is not installed: "
                            "pip install 'popek[coverage]'")  # fmt: skip
    if not 1 <= args.steps <= 100_000:
        raise UserError(f"--steps must be between 1 and 100000, got {args.steps}")
    return CampaignConfig(
        vmm=vmm, profile=profile, seconds=seconds, workers=args.workers, db=args.db,
        shard=shard, findings_dir=args.findings or str(findings.DEFAULT_DIR), seed=args.seed,
        efficiency=share, max_instructions=args.max_instructions, steps=args.steps,
        code_coverage=args.code_coverage, reuse_only=args.reuse_only, distinct=not args.first,
        first=args.first, cases=cases,
    )  # fmt: skip


def check_target(vmm: str, profile: str):
    """Load the VMM (guarded) and check the profile exists; user errors otherwise."""
    from popek.program_files import profile_named
    from popek.vmm_runner import load_vmm

    cls = load_vmm(vmm)  # first: its import may register the profile
    profile_named(profile)
    return cls


def direct_rule(cls, profile: str):
    """(innocuous instructions, the `DirectRule` the class's declaration on
    ``profile`` promises), from the proofs; (None, None) without them."""
    from popek.fuzz.verdict import rule_for

    from .check import innocuous_instructions

    innocuous = innocuous_instructions([profile]).get(profile)
    support = cls.supports.get(profile)
    if innocuous is None or support is None:
        return innocuous, None
    return innocuous, rule_for(support, innocuous)


def replay(vmm_spec: str | None, profile: str | None, target: str) -> int:
    """Re-run one finding.  A file holds its VMM and profile, so ``--vmm``
    and ``--profile`` are needed only for a blob (or to replay the case
    under another VMM)."""
    from popek.fuzz import findings, properties
    from popek.fuzz.report import format_problem
    from popek.spec.stored import StoredError

    from popek.program_files import profile_named
    from popek.vmm_runner import load_vmm

    kind = None
    cls = load_vmm(vmm_spec) if vmm_spec else None  # first: its import may register the profile
    try:
        if target.startswith(findings.BLOB_PREFIX):
            if not vmm_spec:
                raise UserError("--replay with a case blob needs --vmm (a blob holds the guest, not the VMM)")
            case = findings.case_from_blob(target)
        else:
            if not Path(target).exists():
                raise UserError(f"{target}: no such finding file: replay the path your campaign printed "
                                f"after 'finding: ... ->' (they differ from run to run)")  # fmt: skip
            doc = findings.read(target)
            case, kind = findings.case_of(doc), doc.get("kind")
            vmm_spec = vmm_spec or doc["vmm"]
    except StoredError as e:  # names the file and the field
        field = f"{e.field}: " if e.field else ""
        raise UserError(f"{e.file}: not a popek finding or case blob: {field}{e.message}") from None
    profile = profile or case.profile
    if cls is None:
        cls = load_vmm(vmm_spec)
    profile_named(profile)
    if case.profile != profile:
        raise UserError(f"{target} was found on profile {case.profile!r}, not {profile!r}")
    # an efficiency witness shows an instruction run emulated: judge per instruction
    rule = direct_rule(cls, profile)[1] if kind == "efficiency" else None
    outcome = properties.check(cls, case, efficiency=None, label=vmm_spec, direct=rule)
    # the saved finding's own kind first (a case can break more than one requirement)
    problem = (outcome.first((kind,)) if kind else None) or outcome.first()
    if problem is None:
        print(f"{target}: passes now (VMM {vmm_spec}, profile {profile}, {case.instructions} instructions)")
        return 0
    print(format_problem(problem, case, vmm_spec, path=target))
    others = [p for p in outcome.problems if p is not problem]
    if others:
        print(f"also: {len(others)} other problem(s): " + "; ".join(f"{p.kind}: {p.message}" for p in others[:3]))
    return 1


def run(args: argparse.Namespace) -> int:
    from popek.fuzz.campaign import run_campaign

    if args.replay:
        return replay(args.vmm, args.profile, args.replay)
    missing = [o for o, v in (("--vmm", args.vmm), ("--profile", args.profile)) if not v]
    if missing:
        raise UserError(f"a campaign needs {' and '.join(missing)} (only --replay FILE does without)")
    import time

    started = time.time()  # --time counts from here: loading and the proofs' classification too
    cls = check_target(args.vmm, args.profile)
    config = config_from_args(args, args.vmm, args.profile)
    from popek.writable import check_campaign_outputs

    address = cluster.check_options(args)  # first: its errors name the cluster's needs
    check_campaign_outputs(config.findings_dir, config.db, args.json)  # before the first case
    from popek.report import files as report_files

    report_files.check(args.report)
    innocuous, rule = direct_rule(cls, args.profile)
    if rule is not None:
        config.direct = rule.to_json()
    if not address:  # a cluster's machines keep their own clocks: each worker times itself there
        config.deadline = started + config.seconds
    if address:
        report = cluster.run_campaign(config, address, progress=None if args.quiet else sys.stderr)
    else:
        report = run_campaign(config, progress=None if args.quiet else sys.stderr)
    report.innocuous = innocuous
    print(report.summary())
    if args.json:
        from popek.spec.stored import write_atomic

        try:
            write_atomic(args.json, (json.dumps(report.to_json(), indent=1) + "\n").encode("utf-8"))
        except OSError as e:
            raise UserError(f"--json {args.json}: cannot write: {e.strerror or e} (the summary above is the report)")
    if args.report:
        from popek.report import document

        doc = document.from_campaign(args.argv, report, cls.supports.get(args.profile))
        report_files.print_paths(report_files.write(args.report, doc))
    if report.findings:
        return 1
    if report.interrupted:  # nothing found before Ctrl-C: not a clean bill
        return 130
    if report.errors:
        raise UserError("the campaign could not run: " + report.errors[0].splitlines()[0])
    return 0
