"""`popek run --guests A.s,B.s[,...] --cpus K [--pin]`: several guests on one host.

The guests are loaded side by side under a VMM that declares
"multi-guest" (default trap-and-emulate), time-shared over K host CPUs by
`popek.model.scheduler` (pinned round robin with ``--pin``: guest i on CPU
i mod K), and each one's final state is printed as `popek run` prints one
guest's, followed by the schedule: each guest's share of the host's CPU
time and its slowdown against running alone.
"""

from __future__ import annotations

import argparse

from popek import registry
from popek.cli import UserError
from popek.model.machine import Machine
from popek.model.scheduler import host_cpus, run_guests
from popek.program_files import load_program, profile_named
from popek.vmm import GuestRefused

DEFAULT_VMM = "trap-and-emulate"
DEFAULT_SLICE = 200


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--guests", metavar="A.s,B.s", help="run these programs as guests side by side")
    parser.add_argument("--cpus", type=int, default=1, help="host CPUs for --guests (default 1)")
    parser.add_argument("--pin", action="store_true", help="--guests: guest i only on CPU i mod K")
    parser.add_argument("--slice", type=int, default=DEFAULT_SLICE, help="--guests: steps per time slice")


def run_guests_command(args: argparse.Namespace) -> int:
    from popek.commands.state_text import format_state  # the one-guest printer

    profile = profile_named(args.profile)
    files = [f for f in args.guests.split(",") if f.strip()]
    if not files:
        raise UserError("--guests needs at least one program")
    if args.cpus < 1 or args.slice < 1 or args.steps < 0:
        raise UserError("--cpus and --slice must be at least 1, --steps at least 0")
    try:
        cls = registry.load(args.vmm or DEFAULT_VMM)
    except registry.PluginError as e:
        raise UserError(str(e)) from None
    if "multi-guest" not in cls.capabilities:
        raise UserError(f"VMM {cls.name!r} does not declare multi-guest: it runs one guest")
    if profile.name not in cls.supports:
        raise UserError(f"VMM {cls.name!r} does not declare profile {profile.name!r}")
    images = [load_program(f.strip(), profile) for f in files]
    vmm = cls(Machine(profile, 1 << profile.arch.word))
    try:
        vmm.load(images[0], memsize=args.memsize)
        gids = [vmm.guests()[0]] + [vmm.add_guest(im, memsize=args.memsize) for im in images[1:]]
        cpus = host_cpus(vmm, args.cpus)
        pin = {gid: k % args.cpus for k, gid in enumerate(gids)} if args.pin else None
        sched = run_guests(vmm, {gid: args.steps for gid in gids}, cpus=cpus, slice_steps=args.slice, pin=pin)
    except GuestRefused as e:
        raise UserError(f"VMM {cls.name!r} refused a guest: {e}") from None
    except ValueError as e:
        raise UserError(str(e)) from None
    for k, (gid, f) in enumerate(zip(gids, files), 1):
        vmm.select_guest(gid)
        state = vmm.guest_state()
        share = sched.guests[gid]
        print(f"guest {k}: {f.strip()} (profile {profile.name}, VMM {cls.name}, memsize {len(state.memory)})")
        print(format_state(state.regs, state.out, steps=share.steps, halted=share.halted, word=profile.arch.word))
        print()
    print(sched.format())
    return 0
