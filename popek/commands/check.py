"""`popek check package.module:Class`: a user's VMM against the reference.

First the plug-in contract (``popek.conformance.check_vmm``), then one
fuzzing campaign per profile the class declares in ``supports``, each
reported for fidelity, efficiency and safety *against what the class
declares* (every design is declared safe), and last the declared
capabilities, interleaved with guest runs (``popek.fuzz.stateful``):

    $ popek check mypkg.vmm:MyVMM
    design  profile  fidelity                                 efficiency       safety                                 expected                   verdict
    my-vmm  pg       faithful (1000 cases)                    efficient (97%)  safe (1000 cases)                      faithful, efficient, safe  MATCH
    my-vmm  x86      unfaithful (3 insns, popf (supervisor))  efficient (91%)  UNSAFE (27 insns, host word 0x1400...)  faithful, efficient, safe  MISMATCH (fidelity, safety)

Efficiency is judged as `popek.fuzz.efficiency` says, against
``--innocuous-share``.  Each profile has a case budget (``--cases``, default
`DEFAULT_CASES`) capped by ``--time``; ``--time`` alone is a time budget.
A guest the design refuses (`popek.vmm.GuestRefused`) is neither a failure
nor a finding: refusals are counted and reported.

Exit status 0 when every profile matches its declaration (all three
requirements) and the capabilities hold, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

from popek.cli import UserError

DEFAULT_CASES = 1000  # per profile: `popek check` of one VMM on four profiles in under 2 minutes (docs/fuzzing.md)
DEFAULT_CAP = "10m"  # per profile: a cap for a slow VMM, not the budget


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="check a VMM plug-in: the contract, then fidelity, efficiency "
                                     "and safety on every declared profile")  # fmt: skip
    p.add_argument("vmm", help="package.module:Class (or a registered name)")
    add_table_arguments(p, default_cases=DEFAULT_CASES, per="profile")
    p.add_argument("--profile", action="append", help="only this profile (repeatable)")
    p.add_argument("--timeout", type=float, default=CONTRACT_TIMEOUT, metavar="SECONDS",
                   help=f"processor seconds for one call into the plug-in in the contract checks "
                        f"(default {CONTRACT_TIMEOUT:g}; the clock allows 5 times as long)")  # fmt: skip
    p.set_defaults(func=run)


CONTRACT_TIMEOUT = 20.0


def add_table_arguments(p: argparse.ArgumentParser, *, default_cases: int, per: str) -> None:
    p.add_argument(
        "--cases", default=None, metavar="N",
        help=f"case budget per {per} (default {default_cases}): the same seed gives the same cases "
        "and the same verdict on a quiet and on a loaded machine",
    )  # fmt: skip
    p.add_argument(
        "--time", default=None, metavar="T",
        help=f"a time cap per {per}, e.g. 90s, 10m (default {DEFAULT_CAP}), reported when it cuts a "
        "run short of its case budget; given without --cases, a time budget instead of a case budget",
    )  # fmt: skip
    p.add_argument("--workers", type=int, default=2, help="campaigns run side by side (default 2)")
    p.add_argument("--findings", default=None, metavar="DIR", help="counterexamples (default .popek/findings)")
    p.add_argument("--db", default=None, metavar="DIR|redis://HOST:PORT", help="example database")
    p.add_argument("--seed", type=int, default=1, help="campaign seed (default 1: reproducible)")
    p.add_argument("--json", metavar="FILE", help="write the table as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines (stderr); the results as ever")
    p.add_argument("--report", metavar="DIR",
                   help="write report.json and a self-contained index.html into DIR (made if missing)")
    p.add_argument(
        "--innocuous-share", default=None, metavar="FRACTION",
        help="share of the innocuous guest steps that must be able to have run directly for a design "
        "to be called efficient (P&G's 'statistically dominant'; default 0.5)",
    )  # fmt: skip
    p.add_argument("--efficiency", default=None, dest="efficiency_deprecated", metavar="FRACTION",
                   help="deprecated: the old name of --innocuous-share")  # fmt: skip
    p.set_defaults(default_cases=default_cases)


def fraction(text: str | float | None, option: str, default: float) -> float:
    """A command-line fraction between 0 and 1; a one-line error otherwise."""
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{option} {text!r}: expected a fraction between 0 and 1, e.g. 0.5") from None
    if not 0.0 <= value <= 1.0:
        raise UserError(f"{option} must be between 0 and 1, got {value:g}")
    return value


def budget_options(args: argparse.Namespace, default_cases: int | None) -> tuple[int | None, float]:
    """(case budget, seconds) from ``--cases`` and ``--time``: a case budget
    capped by time (the default), or, with ``--time`` alone, a time budget
    (case budget None)."""
    from popek.fuzz.campaign_config import parse_cases, parse_duration

    try:
        if args.cases is not None:
            return parse_cases(args.cases), parse_duration(args.time or DEFAULT_CAP)
        if args.time is not None or default_cases is None:
            return None, parse_duration(args.time or "60s")
        return default_cases, parse_duration(DEFAULT_CAP)
    except ValueError as e:
        raise UserError(str(e)) from None


def budget_text(cases: int | None, seconds: float) -> str:
    if cases is None:
        return f"{seconds:g} s"
    return f"{cases} cases (time cap {seconds:g} s)"


def table_options(args: argparse.Namespace) -> dict:
    from popek.cli import deprecated_option
    from popek.fuzz import findings
    from popek.fuzz.efficiency import DOMINANT

    cases, seconds = budget_options(args, args.default_cases)
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    if args.efficiency_deprecated is not None:
        if args.innocuous_share is not None:
            raise UserError("--efficiency is the old name of --innocuous-share: give only --innocuous-share")
        deprecated_option("--efficiency", "--innocuous-share",
                          "the share of innocuous steps that must run directly")  # fmt: skip
        args.innocuous_share = args.efficiency_deprecated
    share = fraction(args.innocuous_share, "--innocuous-share", DOMINANT)
    from popek.writable import check_campaign_outputs

    check_campaign_outputs(args.findings or findings.DEFAULT_DIR, args.db, args.json)  # before the first case
    from popek.report import files as report_files

    report_files.check(getattr(args, "report", None))
    return {
        "innocuous_share": share,
        "seconds": seconds,
        "cases": cases,
        "workers": args.workers,
        "findings_dir": str(Path(args.findings or findings.DEFAULT_DIR).resolve()),
        "db": args.db,
        "seed": args.seed,
    }


def innocuous_instructions(profiles: list[str]) -> dict[str, frozenset[str]]:
    """Per profile, the instructions the proofs classify as innocuous: what
    the efficiency verdict needs.  Empty (efficiency not judged, and the
    reason printed) when the proofs cannot run."""
    try:
        from popek.proofs.classify import classify_profile
    except ImportError as e:
        print(f"efficiency: not judged (the proofs are not available: {e})")
        return {}
    from popek.spec.profiles import get

    out = {}
    for name in profiles:
        try:
            # innocuous, and not privileged: a privileged instruction traps in
            # user mode, so no VMM that deprivileges its guest can run it directly
            # (P&G's innocuous set includes those that are not sensitive)
            out[name] = frozenset(
                c.insn for c in classify_profile(get(name))
                if c.answer("innocuous") == "yes" and c.answer("privileged") != "yes"
            )  # fmt: skip
        except Exception as e:  # a proof engine bug must not hide the fidelity table
            print(f"efficiency on {name}: not judged (classification failed: {type(e).__name__}: {e})")
    return out


def progress_printer(total: int):
    done = [0]

    def show(cell) -> None:
        done[0] += 1
        print(f"[{done[0]}/{total}] {cell.design} on {cell.profile}: {cell.summary_text()}",
              file=sys.stderr, flush=True)  # fmt: skip

    return show


def run(args: argparse.Namespace) -> int:
    from popek.conformance import ConformanceError, check_vmm
    from popek.fuzz.verdict import format_table, notes, run_table
    from popek.spec.profiles import all_profiles
    from popek.vmm_runner import load_vmm

    if not 0 < args.timeout < 1e6:  # nan and inf fail this too
        raise UserError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    cls = load_vmm(args.vmm, timeout=args.timeout)
    unknown = unknown_profiles(cls.supports)
    if unknown:  # a misspelt declaration must not quietly shrink what is checked
        known = ", ".join(sorted(p.name for p in all_profiles()))
        raise UserError(f"VMM {args.vmm!r} declares {', '.join(map(repr, unknown))} in `supports`, "
                        f"which is no registered profile (known profiles: {known})")  # fmt: skip
    profiles = args.profile or list(cls.supports)
    for p in profiles:
        if p not in cls.supports:
            raise UserError(f"VMM {args.vmm!r} does not declare profile {p!r} in `supports`")
    if not profiles:
        raise UserError(f"VMM {args.vmm!r} declares no profile")
    opts = table_options(args)
    undeclared = [p for p in profiles if cls.supports[p].efficient and cls.supports[p].direct_modes is None]
    if undeclared:  # the deprecation path of Support.direct_modes
        print(f"note: VMM {args.vmm!r} declares itself efficient on {', '.join(undeclared)} without "
              "Support.direct_modes: both virtual modes are assumed (deprecated: declare "
              "direct_modes={'user', 'supervisor'} or {'user'})", file=sys.stderr)  # fmt: skip
    try:
        checks = check_vmm(cls, profiles, timeout=args.timeout)
    except ConformanceError as e:
        print(f"contract: FAILED: {e}")
        return 1
    print(f"contract: {len(checks)} checks passed")
    print(f"fuzzing: {len(profiles)} campaign(s) of {budget_text(opts['cases'], opts['seconds'])} each, "
          f"seed {opts['seed']}", flush=True)  # fmt: skip
    innocuous = innocuous_instructions(profiles)
    progress = None if args.quiet else progress_printer(len(profiles))
    cells = run_table(
        [(args.vmm, p) for p in profiles], progress=progress, innocuous=innocuous, **opts
    )  # fmt: skip
    # the capabilities are checked before the table is printed, so that a
    # profile where one failed cannot show MATCH
    failed: dict[str, list[str]] = {}
    section = io.StringIO()
    with contextlib.redirect_stdout(section):
        if cls.capabilities:
            capabilities_section(cls, profiles, failed=failed, timeout=args.timeout)
        if "multi-guest" in cls.capabilities:  # several guests: isolation and starvation (fuzz/multi_guest.py)
            for p in profiles:
                for passed, line in multi_guest_lines(cls, p, args.seed, args.timeout):
                    print(line)
                    if not passed:
                        failed.setdefault(p, []).append("multi-guest")
    for c in cells:
        c.capabilities_failed = sorted(set(failed.get(c.profile, [])))
    print(format_table(cells))
    for line in notes(cells):
        print(line)
    print(section.getvalue(), end="")
    print_findings(cells)
    if args.json:
        Path(args.json).write_text(json.dumps([c.to_json() for c in cells], indent=1) + "\n")
    if args.report:
        from popek.report import document, files

        files.print_paths(files.write(args.report, document.from_cells("check", args.argv, cells, seed=args.seed)))
    return 0 if all(c.match for c in cells) and not failed else 1


def multi_guest_lines(cls, profile: str, seed: int, timeout: float) -> list[tuple[bool, str]]:
    """`popek.fuzz.multi_guest.check_section` on one profile; for an
    isolated plug-in in its own process, where the guests' host is."""
    from popek.fuzz.multi_guest import check_section
    from popek.isolation import is_isolated, run_remote
    from popek.session import SessionError

    if not is_isolated(cls):
        return check_section(cls, [profile], seed_value=seed)
    try:
        return run_remote(cls, "popek.fuzz.multi_guest:check_section", [profile], timeout=timeout,
                          seed_value=seed)  # fmt: skip
    except SessionError as e:  # its process died, or a call never returned
        return [(False, f"multi-guest on {profile}: FAILED: {e}")]


def unknown_profiles(supports) -> list[str]:
    """The profile names in ``supports`` that no one registers: not the
    shipped ones, not the plug-in's own (registered as it was imported),
    not a ``popek.profiles`` entry point's.  Each is a declaration popek
    could not check, so it is an error, not a row left out."""
    from popek import registry
    from popek.registry import PluginError
    from popek.spec.profiles import ProfileError

    out = []
    for name in supports:
        try:
            registry.profile(name)
        except (ProfileError, PluginError):
            out.append(name)
    return out


def print_findings(cells) -> None:
    """Each cell's witnesses in full: where it is saved, its report (what
    differed, the guest as assembly) and the line that replays it.  A user
    who sees a verdict must see its evidence without opening a file."""
    for c in cells:
        if c.finding:
            what = "contract broken" if c.kind == "contract" else "counterexample"
            print(f"{what} for {c.design} on {c.profile} ({c.kind}): {c.finding}")
            print_witness(c.finding)
        if c.efficiency_finding:
            print(f"efficiency finding for {c.design} on {c.profile}: {c.efficiency_finding}")
            print_witness(c.efficiency_finding)
        if c.safety_finding:
            print(f"safety finding for {c.design} on {c.profile}: {c.safety_finding}")
            print_witness(c.safety_finding)


def print_witness(path: str) -> None:
    """A saved finding's report (with its guest as assembly) and replay line."""
    from popek.fuzz import findings

    try:
        doc = findings.read(path)
    except (OSError, ValueError):
        return  # the path printed is what there is
    report = (doc.get("report") or "").rstrip()
    if report:
        print(report)
    if doc.get("replay") and doc["replay"] not in report:
        print(f"replay: {doc['replay']}")


def accepting(cls, profile: str, guests, refusals: list[str]):
    """``guests`` without the guests ``cls`` refuses (`popek.vmm.GuestRefused`
    from ``load``): each is tried on a fresh instance first, and a refused
    one is filtered out (Hypothesis draws another) and its message kept in
    ``refusals``.  A refusal is the design's declared answer, not a failure
    of a capability; anything else the plug-in does is left to the state
    machine to see."""
    from popek.session import Session, SessionError
    from popek.spec import profiles as _profiles
    from popek.vmm import GuestRefused

    prof = _profiles.get(profile)
    label = getattr(cls, "name", cls.__name__)

    def accepted(case) -> bool:
        try:
            with Session(cls, prof, label=label, timeout=GUEST_CHECK_TIMEOUT, watch=False) as s:
                s.load(case.image(prof), memsize=case.memsize)
        except GuestRefused as e:
            refusals.append(str(e) or type(e).__name__)
            return False
        except SessionError:
            return True  # not a refusal: the state machine will meet it and report it
        return True

    return guests.filter(accepted)


GUEST_CHECK_TIMEOUT = 30.0  # seconds for one trial load (generous: a loaded machine)


# What `popek.fuzz.stateful` checks for each capability, as the table lists it.
LIFECYCLE_CHECKS = {
    "snapshot": "restore in memory, and from a snapshot file on a fresh host, at any step (traps included)",
    "suspend": "a suspended guest runs nothing and resumes as if never stopped",
    "migration": "pre-copy to a fresh host: the guest moves whole, within the traffic cap",
    "multi-guest": "a second guest beside the first, each as on its own machine",
}


def capabilities_table(cls) -> list[str]:
    """The lifecycle checks `capabilities_section` runs, one line a capability."""
    caps = sorted(cls.capabilities)
    width = max(len("capability"), *map(len, caps))
    return [f"{'capability':<{width}}  checked against an uninterrupted bare run"] + [
        f"{c:<{width}}  {LIFECYCLE_CHECKS.get(c, 'declared; no check known')}" for c in caps
    ]


def capabilities_section(
    cls, profiles: list[str], examples: int = 40, *, shrink: bool = True,
    failed: dict[str, list[str]] | None = None, timeout: float = GUEST_CHECK_TIMEOUT,
) -> bool:
    """The declared capabilities (snapshot/restore, several guests), each
    interleaved with guest execution by `popek.fuzz.stateful`, on every
    profile the design is faithful on (elsewhere fidelity already fails).
    An isolated plug-in runs them in its own process, where a migration's
    target host and a restored snapshot's fresh instance live beside it."""
    from popek.isolation import is_isolated, run_remote
    from popek.session import SessionError

    ok = True
    for line in capabilities_table(cls):
        print(line)
    for p in profiles:
        if not cls.supports[p].faithful:
            continue
        if is_isolated(cls):
            try:
                passed, lines = run_remote(cls, "popek.commands.check:capabilities_on", p, examples, shrink,
                                           timeout=timeout)  # fmt: skip
            except SessionError as e:  # its process died, or a call never returned
                caps = ", ".join(sorted(cls.capabilities))
                passed, lines = False, [f"capabilities ({caps}) on {p}: FAILED: {e}"]
        else:
            passed, lines = capabilities_on(cls, p, examples, shrink)
        ok = ok and passed
        if not passed and failed is not None:
            failed.setdefault(p, []).extend(sorted(cls.capabilities))
        for line in lines:
            print(line)
    return ok


def capabilities_on(cls, p: str, examples: int, shrink: bool) -> tuple[bool, list[str]]:
    """One profile of `capabilities_section`: whether it passed, and its
    lines.  Guests the design refuses (`GuestRefused`) are neither failures
    nor findings: they are drawn again, counted and reported."""
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis.reporting import with_reporter

    from popek.fuzz import strategies
    from popek.fuzz.stateful import vmm_state_machine
    from popek.spec import profiles as _profiles
    from popek.vmm import GuestRefused

    caps = ", ".join(sorted(cls.capabilities))
    refusals: list[str] = []
    guests = accepting(cls, p, strategies.from_profile(_profiles.get(p), split_runs=False), refusals)
    test = vmm_state_machine(cls, p, guests=guests).TestCase("runTest")
    # a failing interleaving is shrunk to the shortest sequence of guest
    # runs and lifecycle operations, and printed
    phases = [Phase.generate, Phase.shrink] if shrink else [Phase.generate]
    # derandomized: the same VMM gets the same interleavings, run after run
    test.settings = settings(
        max_examples=examples, stateful_step_count=12, deadline=None, database=None,
        suppress_health_check=list(HealthCheck), phases=phases, derandomize=True,
    )  # fmt: skip
    passed = f"{examples} interleavings with guest runs passed"
    steps: list[str] = []
    try:
        with with_reporter(steps.append):
            test.runTest()
    except GuestRefused as e:  # refused after all (a second guest, say): an answer, not a failure
        refusals.append(str(e) or type(e).__name__)
        passed = "interleavings with guest runs passed until a refusal ended the run"
    except Exception as e:  # a failed property, or the plug-in failing (PluginFailure)
        lines = [f"capabilities ({caps}) on {p}: FAILED: {(str(e).splitlines() or [type(e).__name__])[0]}"]
        notes = [*steps, *getattr(e, "__notes__", ())]
        shortest = [
            "load(guest)" if n.startswith("state.load(") else n.removeprefix("state.")
            for n in map(str, notes)
            if n.startswith("state.") and not n.startswith(("state.faithful()", "state.teardown()"))
        ]  # fmt: skip
        if shortest:
            what = "shortest sequence" if shrink else "failing sequence"
            lines.append(f"  {what} ({len(shortest)} operations): " + "; ".join(shortest))
        return False, lines
    note = ""
    if refusals:
        note = f"; {len(refusals)} generated guests refused (GuestRefused, not failures): {refusals[0][:80]}"
    return True, [f"capabilities ({caps}) on {p}: {passed}{note}"]
