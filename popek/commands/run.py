"""`popek run FILE --profile P`: run a program and print where it ended.

The bare-machine run is one function, `run_bare`; printing is
`state_text.format_state`, shared with the other ways to run (several
guests, host types, snapshots), which all print a guest's final state alike.  A
run under a VMM (``--vmm``) goes through `popek.vmm_runner`, which guards
every call into the plug-in; its options and printing are here.
"""

from __future__ import annotations

import argparse

from popek import guard
from popek.cli import UserError
from popek.model.machine import Machine, RunResult
from popek.program_files import load_program, profile_named
from popek.spec.image import Image
from popek.spec.profiles import Profile
from popek.vmm_runner import format_counters, format_support, run_under_vmm

from . import snapshot_run, storage_view
from .state_text import format_state
from .snapshot_run import add_snapshot_options

DEFAULT_STEPS = 1_000_000
DEFAULT_MEMSIZE = 4096


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a program on the bare machine and print its final state")
    p.add_argument("file", nargs="?", help="assembly source (.s) or image (.json)")
    p.add_argument("--profile", help="instruction-set profile, e.g. pg, hybrid, x86 (required but with --restore)")
    p.add_argument(
        "--steps", type=int, default=DEFAULT_STEPS,
        help=f"stop after this many steps if the program has not halted (default {DEFAULT_STEPS})",
    )  # fmt: skip
    p.add_argument(
        "--memsize", type=int, default=DEFAULT_MEMSIZE,
        help=f"words of physical storage (default {DEFAULT_MEMSIZE})",
    )  # fmt: skip
    add_vmm_options(p)
    storage_view.add_option(p)
    add_snapshot_options(p)
    from popek.commands.run_guests import add_options  # several guests: --guests, --cpus, --pin

    add_options(p)
    from popek.commands.run_host_type import add_options as add_host_type  # --host-type 0|1|2

    add_host_type(p)
    p.set_defaults(func=run)


def run_bare(
    image: Image, profile: Profile, *, steps: int, memsize: int
) -> tuple[Machine, RunResult]:
    """Load ``image`` on a fresh bare machine and run it; traps take the P&G path."""
    if steps < 0:
        raise UserError(f"--steps must be at least 0, got {steps}")
    try:
        machine = Machine(profile, memsize)
        machine.load(image)
    except ValueError as e:
        raise UserError(str(e)) from None
    return machine, machine.run(steps)


def run(args: argparse.Namespace) -> int:
    if args.show_storage is not None and (snapshot_run.wanted(args) or getattr(args, "guests", None)):
        raise UserError("--show-storage shows one program's storage: give FILE, not --restore or --guests")
    if getattr(args, "host_type", None) is not None:
        from popek.commands.run_host_type import run_host_type_command

        return run_host_type_command(args)
    if snapshot_run.wanted(args):
        return snapshot_run.run_lifecycle(args)
    if getattr(args, "guests", None):
        if args.file:
            raise UserError("give one program FILE, or several with --guests A.s,B.s (not both)")
        from popek.commands.run_guests import run_guests_command

        return run_guests_command(args)
    if not args.file or not args.profile:
        raise UserError("give the program FILE and --profile (or --restore F, or --guests A.s,B.s)")
    if args.show_storage not in (None, storage_view.ALL):  # a bad RANGE before the run, not after
        storage_view.parse_range(args.show_storage, args.memsize)
    profile = profile_named(args.profile, vmm=args.vmm)  # a plug-in's profile too
    image = load_program(args.file, profile)
    if args.vmm:
        return print_vmm_run(args, image, profile)
    machine, result = run_bare(image, profile, steps=args.steps, memsize=args.memsize)
    print(f"{args.file}: profile {profile.name}, bare machine, memsize {machine.memsize}")
    print(
        format_state(
            machine.registers(), machine.out,
            steps=result.steps, halted=result.halted, word=profile.arch.word,
        )  # fmt: skip
    )
    if args.show_storage is not None:
        print(storage_view.format_storage(machine.M[: machine.memsize], args.show_storage, profile.arch.word))
    return 0


# -- the `--vmm` option of `popek run` ----------------------------------------
def add_vmm_options(parser) -> None:
    """Add ``--vmm`` and ``--timeout`` to `popek run`'s parser."""
    parser.add_argument(
        "--vmm", metavar="NAME|package.module:Class",
        help="run the program as a guest under this VMM (see `popek list`) instead of bare",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=guard.DEFAULT_TIMEOUT,
        help="seconds any one call into the VMM may take (default %(default)g)",
    )  # fmt: skip


def print_vmm_run(args, image: Image, profile: Profile) -> int:
    """`popek run --vmm`: run, then print the guest's final state and the counters."""
    if args.timeout is not None and args.timeout <= 0:
        raise UserError(f"--timeout must be positive, got {args.timeout}")
    r = run_under_vmm(
        args.vmm, image, profile, steps=args.steps, memsize=args.memsize, timeout=args.timeout
    )
    print(f"{args.file}: profile {profile.name}, VMM {r.vmm}, memsize {len(r.state.memory)}")
    if r.expected is not None:
        print(f"expected on {profile.name}: {format_support(r.expected)}")
    print(
        format_state(
            r.state.regs, r.state.out,
            steps=r.result.steps, halted=r.result.halted, word=profile.arch.word,
        )  # fmt: skip
    )
    print(format_counters(r.counters))
    if getattr(args, "show_storage", None) is not None:  # the guest's storage, as the guest sees it
        print(storage_view.format_storage(list(r.state.memory), args.show_storage, profile.arch.word))
    return 0
