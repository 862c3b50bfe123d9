"""`popek prove --profile P --host-type 0`: what partitioning does to the theorems.

Prints `popek.proofs.partition.format_report`: every instruction of P and
the trap mechanism proved native inside a partition of P's partitioned
machine (or not, with what differs), the instructions P's classification
makes a VMM's problem and which of them stop being one, the resources a
partitioned guest owns outright, and the one resource no guest gets at all,
the partition register.  Types 1 and 2 change no instruction's semantics:
their proofs are the ones `popek prove` prints without the option.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from popek.cli import UserError
from popek.spec.profiles import Profile


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host-type", metavar="0",
        help="0: prove which instructions run natively in a partition (type 0 host), and what is not virtualized",
    )  # fmt: skip


def run_partition(args: argparse.Namespace, profiles: list[Profile]) -> int:
    from popek.commands.run_host_type import host_type
    from popek.proofs.partition import format_report, partition_report

    if host_type(args.host_type) != 0:
        raise UserError("--host-type 1 and 2 change no instruction's semantics: prove without --host-type")
    if args.explain or args.vmm:
        raise UserError("--host-type 0 takes no --explain or --vmm")
    skipped = [p.name for p in profiles if p.arch.vtx]  # the feature is not combined with vtx
    if skipped and len(skipped) == len(profiles):
        raise UserError(f"profile {skipped[0]!r}: the partition feature is not combined with vtx")
    reports = [partition_report(p) for p in profiles if not p.arch.vtx]
    if args.json:
        print(json.dumps([asdict(r) for r in reports], indent=2))
    else:
        text = [format_report(r) for r in reports]
        text += [f"{name}: not partitioned (the partition feature is not combined with vtx)" for name in skipped]
        print("\n\n".join(text))
    return 0
