"""`popek migrate FILE --vmm V --at N`: move a running guest to another host.

The guest runs ``N`` guest steps under the VMM, then moves to a fresh
instance on a fresh host over a `popek.model.migration.Link` of
``--bandwidth`` words per guest step, with Clark et al.'s round cap
(``--max-rounds``; 0 is stop-and-copy) and traffic cap (three guest
storages and the CPU state).  Printed: the migration report (rounds, pages
per round, words sent / guest storage, downtime and total time in guest
steps), and whether the guest, run on for ``--then`` steps on the target,
ends exactly as one that never moved (the bare machine).
"""

from __future__ import annotations

import argparse
import json

from popek.cli import UserError

DEFAULT_MEMSIZE = 4096
STATE_ALLOWANCE = 4096  # words the cap allows beyond three guest storages


def register(sub: argparse._SubParsersAction) -> None:
    from popek.model.migration import DEFAULT_BANDWIDTH, DEFAULT_MAX_ROUNDS

    p = sub.add_parser("migrate", help="live-migrate a running guest to another host and print the report")
    p.add_argument("file", help="assembly source (.s) or image (.json)")
    p.add_argument("--vmm", required=True, metavar="NAME|package.module:Class", help="a VMM declaring migration")
    p.add_argument("--profile", default=None, help="instruction-set profile (default: the VMM's first faithful one)")
    p.add_argument("--at", type=int, required=True, metavar="N", help="guest steps run before the migration starts")
    p.add_argument("--bandwidth", type=int, default=DEFAULT_BANDWIDTH, metavar="W",
                   help=f"link bandwidth in words per guest step (default {DEFAULT_BANDWIDTH})")  # fmt: skip
    p.add_argument("--max-rounds", type=int, default=DEFAULT_MAX_ROUNDS, metavar="K",
                   help=f"pre-copy round cap; 0 is stop-and-copy (default {DEFAULT_MAX_ROUNDS})")  # fmt: skip
    p.add_argument("--then", type=int, default=1000, metavar="S",
                   help="guest steps run on the target afterwards, compared with the bare machine (default 1000)")
    p.add_argument("--memsize", type=int, default=DEFAULT_MEMSIZE, help=f"guest storage (default {DEFAULT_MEMSIZE})")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="only whether the guest ran on as if never moved (and any traffic over the cap)")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from popek.model.machine import Machine
    from popek.model.migration import Link, LinkError, MigrationReport
    from popek.program_files import load_program, profile_named
    from popek.session import Session, SessionError
    from popek.vmm import GuestRefused, GuestState
    from popek.vmm_runner import load_vmm

    cls = load_vmm(args.vmm)
    if "migration" not in cls.capabilities:
        raise UserError(f"VMM {cls.name!r} does not declare the migration capability")
    if args.profile is None:
        faithful = [p for p, s in cls.supports.items() if s.faithful] or list(cls.supports)
        args.profile = faithful[0]
    profile = profile_named(args.profile)
    if profile.name not in cls.supports:
        raise UserError(f"VMM {cls.name!r} does not support profile {profile.name!r}")
    for opt, value, low in (("--at", args.at, 0), ("--bandwidth", args.bandwidth, 1),
                            ("--max-rounds", args.max_rounds, 0), ("--then", args.then, 0)):  # fmt: skip
        if value < low:
            raise UserError(f"{opt} must be at least {low}, got {value}")
    image = load_program(args.file, profile)
    try:
        link = Link(args.bandwidth, cap=3 * args.memsize + STATE_ALLOWANCE, max_rounds=args.max_rounds)
        with Session(cls, profile, label=cls.name, watch=False) as source, \
                Session(cls, profile, label=cls.name, watch=False) as target:  # fmt: skip
            source.load(image, memsize=args.memsize)
            source.run(args.at)
            report = source.call("migrate_to", source.vmm.migrate_to, target.vmm, link, returns=MigrationReport)
            target.take_sizes((args.memsize, args.memsize, {}))
            target.run(args.then)
            moved = target.state()
    except (SessionError, LinkError, ValueError) as e:
        raise UserError(str(e)) from None
    except GuestRefused as e:
        raise UserError(f"VMM {cls.name!r} refuses this guest: {e}") from None
    bare = Machine(profile, args.memsize)
    bare.load(image)
    bare.run(args.at + report.guest_steps + args.then)
    diffs = GuestState.from_machine(bare).differences(moved, limit=5)
    over = link.over_cap()
    if args.json:
        doc = {"vmm": cls.name, "profile": profile.name, "at": args.at, "bandwidth": args.bandwidth,
               "max_rounds": args.max_rounds, **report.as_dict(), "link_words": link.words,
               "traffic_cap": link.cap, "faithful": not diffs}  # fmt: skip
        print(json.dumps(doc, indent=1))
    else:
        if not args.quiet:
            print(f"{args.file}: {cls.name} on {profile.name}, memsize {args.memsize}, migrated at guest step "
                  f"{args.at} over a link of {args.bandwidth} words per guest step")  # fmt: skip
            print(report.text())
        if diffs:
            print(f"after {args.then} more steps on the target: DIFFERS from the unmigrated run: {diffs}")
        else:
            print(f"after {args.then} more steps on the target: identical to the unmigrated run")
        if over:
            print(f"traffic: {link.words} words sent, over the cap of {link.cap}")
    return 1 if diffs or over else 0
