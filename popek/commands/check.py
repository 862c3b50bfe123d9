"""`popek check package.module:Class`: a user's VMM against the reference.

First the plug-in contract (``popek.conformance.check_vmm``), then one
fuzzing campaign per profile the class declares in ``supports``, each
reported as faithful or unfaithful *against what the class declares*, and
last the declared capabilities, interleaved with guest runs
(``popek.fuzz.stateful``):

    $ popek check mypkg.vmm:MyVMM --time 30s
    design  profile  observed                                 efficiency         expected             verdict
    my-vmm  pg       faithful (2210 cases)                    efficient (97%)    faithful, efficient  MATCH
    my-vmm  x86      unfaithful (3 insns, popf (supervisor))  ? (212 innocuous steps)  faithful, efficient  MISMATCH

Efficiency is judged as `popek.fuzz.efficiency` says, against ``--efficiency``.

Exit status 0 when every profile matches its declaration, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from popek.cli import UserError

DEFAULT_TIME = "20s"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="check a VMM plug-in: the contract, then fidelity on every declared profile")
    p.add_argument("vmm", help="package.module:Class (or a registered name)")
    add_table_arguments(p)
    p.add_argument("--profile", action="append", help="only this profile (repeatable)")
    p.set_defaults(func=run)


def add_table_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--time", default=DEFAULT_TIME, help=f"budget per profile (default {DEFAULT_TIME})")
    p.add_argument("--workers", type=int, default=2, help="campaigns run side by side (default 2)")
    p.add_argument("--findings", default=None, metavar="DIR", help="counterexamples (default .popek/findings)")
    p.add_argument("--db", default=None, metavar="DIR|redis://HOST:PORT", help="example database")
    p.add_argument("--seed", type=int, default=1, help="campaign seed (default 1: reproducible)")
    p.add_argument("--json", metavar="FILE", help="write the table as JSON")
    p.add_argument(
        "--efficiency", type=float, default=0.5, metavar="FRACTION",
        help="share of innocuous guest steps that must run directly to call a design efficient "
        "(P&G's 'statistically dominant'; default 0.5)",
    )  # fmt: skip


def table_options(args: argparse.Namespace) -> dict:
    from popek.fuzz import findings
    from popek.fuzz.campaign import parse_duration

    try:
        seconds = parse_duration(args.time)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    if not 0.0 <= args.efficiency <= 1.0:
        raise UserError(f"--efficiency must be a fraction between 0 and 1, got {args.efficiency:g}")
    return {
        "efficiency": args.efficiency,
        "seconds": seconds,
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
            out[name] = frozenset(c.insn for c in classify_profile(get(name)) if c.answer("innocuous") == "yes")
        except Exception as e:  # a proof engine bug must not hide the fidelity table
            print(f"efficiency on {name}: not judged (classification failed: {type(e).__name__}: {e})")
    return out


def progress_printer(total: int):
    done = [0]

    def show(cell) -> None:
        done[0] += 1
        print(f"[{done[0]}/{total}] {cell.design} on {cell.profile}: {cell.observed_text()}",
              file=sys.stderr, flush=True)  # fmt: skip

    return show


def run(args: argparse.Namespace) -> int:
    from popek.conformance import ConformanceError, check_vmm
    from popek.fuzz.verdict import format_table, run_table
    from popek.spec.profiles import all_profiles
    from popek.vmm_runner import load_vmm

    cls = load_vmm(args.vmm)
    registered = {p.name for p in all_profiles()}
    profiles = args.profile or [p for p in cls.supports if p in registered]
    for p in profiles:
        if p not in cls.supports:
            raise UserError(f"VMM {args.vmm!r} does not declare profile {p!r} in `supports`")
        if p not in registered:
            raise UserError(f"profile {p!r} is not registered")
    if not profiles:
        raise UserError(f"VMM {args.vmm!r} declares no registered profile")
    opts = table_options(args)
    try:
        checks = check_vmm(cls, profiles)
    except ConformanceError as e:
        print(f"contract: FAILED: {e}")
        return 1
    print(f"contract: {len(checks)} checks passed")
    innocuous = innocuous_instructions(profiles)
    cells = run_table(
        [(args.vmm, p) for p in profiles], progress=progress_printer(len(profiles)), innocuous=innocuous, **opts
    )  # fmt: skip
    print(format_table(cells))
    stateful_ok = True
    if cls.capabilities:
        stateful_ok = capabilities_section(cls, profiles)
    for c in cells:
        if c.finding:
            print(f"counterexample for {c.profile}: {c.finding}")
    if args.json:
        Path(args.json).write_text(json.dumps([c.to_json() for c in cells], indent=1) + "\n")
    return 0 if all(c.match for c in cells) and stateful_ok else 1


def capabilities_section(cls, profiles: list[str], examples: int = 40) -> bool:
    """The declared capabilities (snapshot/restore, several guests), each
    interleaved with guest execution by `popek.fuzz.stateful`, on every
    profile the design is faithful on (elsewhere fidelity already fails)."""
    from hypothesis import HealthCheck, Phase, settings

    from popek.fuzz.stateful import vmm_state_machine

    ok = True
    caps = ", ".join(sorted(cls.capabilities))
    for p in profiles:
        if not cls.supports[p].faithful:
            continue
        test = vmm_state_machine(cls, p).TestCase("runTest")
        # no shrinking: the verdict is what matters here; `popek.fuzz.stateful`
        # in a test suite shrinks a failing interleaving
        test.settings = settings(
            max_examples=examples, stateful_step_count=12, deadline=None, database=None,
            suppress_health_check=list(HealthCheck), phases=[Phase.generate],
        )  # fmt: skip
        try:
            test.runTest()
        except Exception as e:  # a failed property, or the plug-in failing (PluginFailure)
            ok = False
            print(f"capabilities ({caps}) on {p}: FAILED: {(str(e).splitlines() or [type(e).__name__])[0]}")
        else:
            print(f"capabilities ({caps}) on {p}: {examples} interleavings with guest runs passed")
    return ok
