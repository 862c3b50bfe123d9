"""`popek run FILE --profile P --host-type 0|1|2 [--vmm V]`: one guest, one host type.

* ``1``: the VMM owns the host (every shipped design as it is); the guest's
  final state and the host steps it took.
* ``2``: the same design as a process of a host OS: every trap first runs
  the host kernel (``examples/host_os/host_os.s``); the guest's final state,
  and the kernel's steps per trap against type 1 (the same guest is run
  under both, so the comparison is of one run each).
* ``0``: no VMM: the guest gets a CPU and a partition of the hardware
  (`popek.model.hosts.partition`); its final state, the steps its CPU ran by
  real mode, and whether it ended as on the bare machine.  With
  ``--guests A.s,B.s``, each program gets a CPU and partition of its own.

The option is validated here, so a wrong value is one line, not argparse's
usage text.  Type 1 and 2 take shipped designs only (a plug-in runs in its
own process, where popek cannot put a host kernel in front of its traps).
"""

from __future__ import annotations

import argparse

from popek import registry
from popek.cli import UserError
from popek.commands import snapshot_run
from popek.model.hosts import HOST_TYPES
from popek.model.machine import Machine
from popek.program_files import load_program, profile_named
from popek.vmm import GuestRefused, GuestState

DEFAULT_VMM = "trap-and-emulate"
NAMES = {0: "partitioning", 1: "bare-metal VMM", 2: "hosted VMM"}


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host-type", metavar="0|1|2",
        help="0: partition the hardware (no VMM); 1: the VMM owns the host; 2: the VMM runs under a host OS",
    )  # fmt: skip


def host_type(value: str) -> int:
    """``--host-type``'s value as a number, or a one-line error."""
    text = str(value).strip()
    if text not in {str(t) for t in HOST_TYPES}:
        choices = ", ".join(f"{t} ({NAMES[t]})" for t in HOST_TYPES)
        raise UserError(f"--host-type must be one of {choices}; got {value!r}")
    return int(text)


def run_host_type_command(args: argparse.Namespace) -> int:
    from popek.commands.state_text import format_state  # the one-guest printer

    kind = host_type(args.host_type)
    if snapshot_run.wanted(args):
        raise UserError("--host-type does not take --restore or snapshot options")
    guests = [f.strip() for f in (getattr(args, "guests", None) or "").split(",") if f.strip()]
    if guests and (kind != 0 or args.file):
        raise UserError("--guests with --host-type 0 only (a partition each; several guests under a VMM: "
                        "leave out --host-type), and no FILE beside them")  # fmt: skip
    if not (args.file or guests) or not args.profile:
        raise UserError("--host-type needs FILE (or, with 0, --guests A.s,B.s) and --profile")
    if args.steps < 0:
        raise UserError(f"--steps must be at least 0, got {args.steps}")
    profile = profile_named(args.profile)
    files = guests or [args.file]
    images = [load_program(f, profile) for f in files]
    word = profile.arch.word
    if kind == 0:
        return _type0(args, profile, list(zip(files, images)), format_state)
    image = images[0]
    from popek.fuzz.host_types import type2_cost
    from popek.model.hosts.hosted import hosted

    name = args.vmm or DEFAULT_VMM
    if name not in registry.BUILTINS:
        raise UserError(f"--host-type {kind} takes a design popek ships ({', '.join(registry.BUILTINS)}), not {name!r}")
    cls = registry.load(name)
    if profile.name not in cls.supports:
        raise UserError(f"VMM {cls.name!r} does not declare profile {profile.name!r}")
    try:
        design = hosted(cls) if kind == 2 else cls
        vmm = design(Machine(profile, 1 << word))
        vmm.load(image, memsize=args.memsize)
        result = vmm.run(args.steps)
        cost = type2_cost(cls, profile, image, steps=args.steps, memsize=args.memsize) if kind == 2 else None
    except TypeError as e:  # a design that cannot be hosted
        raise UserError(str(e)) from None
    except GuestRefused as e:
        raise UserError(f"VMM {cls.name!r} refuses this guest: {e}") from None
    except ValueError as e:
        raise UserError(str(e)) from None
    state = vmm.guest_state()
    c = vmm.counters()
    traps = sum(c.traps.values())
    print(f"{args.file}: profile {profile.name}, VMM {cls.name}, host type {kind} ({NAMES[kind]}), memsize {args.memsize}")
    print(format_state(state.regs, state.out, steps=result.steps, halted=result.halted, word=word))
    kernel = c.extra.get("host_os_steps", 0)
    print(f"host    {c.direct + traps} host steps in the guest's context ({c.direct} direct, {traps} traps)"
          + (f" + {kernel} in the host kernel" if kind == 2 else "") + f"; {c.emulated} guest steps emulated")
    if cost is not None:
        print(
            f"type 2  {cost.traps} traps through the host kernel: {cost.kernel_steps} kernel steps, "
            f"{cost.per_trap:.1f} per trap; {cost.host_steps} host steps under type 1, "
            f"{cost.host_steps + cost.kernel_steps} under type 2 ({cost.step_slowdown:.2f}x)"
        )
        print(f"        the guest ended {'the same' if cost.same_state else 'DIFFERENTLY'} under type 1 and type 2")
    return 0


def _type0(args: argparse.Namespace, profile, programs: list, format_state) -> int:
    """Each program in a partition of its own, on a CPU of its own, run
    to its end or ``--steps``; then each against its bare run."""
    from popek.model.hosts.partition import PartitionManager

    if args.vmm:
        raise UserError("--host-type 0 has no VMM (each guest owns a partition of the hardware): leave out --vmm")
    host = PartitionManager(profile)
    try:
        gids = [host.add_guest(image, memsize=args.memsize) for _, image in programs]
    except ValueError as e:
        raise UserError(str(e)) from None
    for k, ((name, image), gid) in enumerate(zip(programs, gids)):
        twin = Machine(profile, args.memsize)
        twin.load(image)
        result = host.run(gid, args.steps)
        twin.run(args.steps)
        state = host.guest_state(gid)
        part = host.partitions[gid]
        modes = host.mode_steps(gid)
        same = not GuestState.from_machine(twin).differences(state)
        if k:
            print()
        print(f"{name}: profile {profile.name}, host type 0 (partitioning), partition "
              f"[{part.base:#x}, {part.base + part.size:#x}) on CPU {k}")  # fmt: skip
        print(format_state(state.regs, state.out, steps=result.steps, halted=result.halted, word=profile.arch.word))
        emulated = result.steps - modes["supervisor"] - modes["user"]  # steps its CPU did not run itself
        print(f"cpu     {modes['supervisor']} steps in real supervisor mode, {modes['user']} in user mode; "
              f"{emulated} emulated")  # fmt: skip
        print(f"bare    the guest ended {'exactly as' if same else 'DIFFERENTLY from'} the bare machine of {args.memsize} words")
    return 0
