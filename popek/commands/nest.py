"""`popek nest`: recursive virtualization, with a monitor written in guest code.

The monitor (default examples/monitor/monitor.s) hosts inner guests; this
command checks that they run under it as they do alone (P&G's Theorem 2,
as a run): either generated inner guests, a bounded Hypothesis search, or
one program given with ``--program``.  With ``--under VMM`` the monitor
and its guest run under a Python VMM and are compared, one level up, with
the bare machine (two deep; ``--depth 2`` puts a monitor under the monitor).
The machinery is `popek.fuzz.nesting`; docs/guests-and-nesting.md says how.
"""

from __future__ import annotations

import argparse

from popek import registry
from popek.cli import UserError
from popek.fuzz import nesting as N
from popek.program_files import load_program, profile_named, read_text
from popek.spec.asm import AsmError

DEFAULT_CASES = 200
DEFAULT_STEPS = 2000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("nest", help="check a monitor written in guest code (recursive virtualization)")
    p.add_argument("--monitor", default=str(N.DEFAULT_MONITOR), help="the monitor's assembly source")
    p.add_argument("--profile", required=True, help="instruction-set profile, e.g. pg, x86")
    p.add_argument("--under", metavar="VMM", help="run the monitor and its guest under this VMM (two deep)")
    p.add_argument("--depth", type=int, default=1, help="monitors nested under --under (default 1)")
    p.add_argument("--program", help="one inner guest (.s or .json) instead of generated ones")
    p.add_argument("--memsize", type=int, default=0x400, help="the --program's storage (default 1024)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="the --program's step budget")
    p.add_argument("--cases", type=int, default=DEFAULT_CASES, help=f"generated inner guests (default {DEFAULT_CASES})")
    p.add_argument("--seed", type=int, default=0, help="the search's seed")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="only the verdict and any counterexample, not what was run")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    profile = profile_named(args.profile)
    for name, value, low in (("--cases", args.cases, 1), ("--steps", args.steps, 1), ("--depth", args.depth, 1)):
        if value < low:
            raise UserError(f"{name} must be at least {low}, got {value}")
    if args.depth > 1 and not args.under:
        raise UserError("--depth needs --under (on the bare machine, nest the monitor yourself)")
    try:
        monitor = N.Monitor.from_source(read_text(args.monitor), profile, file=args.monitor)
    except (AsmError, N.NestingError) as e:
        raise UserError(str(e)) from None
    vmm = None
    if args.under:
        try:
            vmm = registry.load(args.under)
        except registry.PluginError as e:
            raise UserError(str(e)) from None
        if profile.name not in vmm.supports:
            raise UserError(f"VMM {args.under!r} does not declare profile {profile.name!r}")
    where = "on the bare machine"
    if vmm is not None:
        where = f"under {args.under}" + (f", {args.depth} monitors deep" if args.depth > 1 else "")
    say = (lambda text: None) if args.quiet else print
    say(f"nest: monitor {args.monitor} on {profile.name}, {where}")
    try:
        if args.program:
            image = load_program(args.program, profile)
            if vmm is None:
                finding = N.compare_program(image, args.memsize, monitor, [args.steps])
            else:
                finding = N.check_under_vmm(image, args.memsize, args.steps, monitor, vmm, args.depth)
            summary = f"  {args.program}: {args.steps} step budget"
        else:
            if vmm is None:
                check = lambda case: N.compare_inner(case, monitor)  # noqa: E731
            else:
                check = lambda case: N.check_two_deep(case, monitor, vmm, args.depth)  # noqa: E731
            result = N.search(check, profile, cases=args.cases, seed_value=args.seed)
            finding = result.finding
            if finding is None and result.refused == result.cases:
                finding = N.Finding("refused", "the monitor refused every inner guest: nothing was compared")
            summary = (f"  {result.cases} inner guests in {result.seconds:.1f} s"
                       f" ({result.refused} refused by the monitor: timer or paging)")  # fmt: skip
    except N.NestingError as e:
        raise UserError(str(e)) from None
    say(summary)
    if finding is None:
        print("  faithful: every compared run matched the bare machine")
        return 0
    if finding.kind == "refused":  # not a pass: nothing was compared
        print(f"  refused: {finding.message}")
        return 1
    print(finding.report())
    return 1
