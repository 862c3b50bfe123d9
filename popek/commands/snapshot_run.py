"""`popek run`'s snapshot options: ``--snapshot-at N --snapshot-file F``
saves the guest after N guest steps (then runs on); ``--restore F`` starts a
fresh VMM on a fresh host from that file and runs on.  The file format is
`popek.snapshot_file` (docs/lifecycle.md); a bad file is refused in one
line before anything is restored."""

from __future__ import annotations

import argparse

from popek.cli import UserError


def add_snapshot_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--snapshot-at", type=int, default=None, metavar="N",
                   help="with --vmm: save the guest after N guest steps to --snapshot-file, then run on")  # fmt: skip
    p.add_argument("--snapshot-file", default=None, metavar="F", help="where --snapshot-at writes")
    p.add_argument("--restore", default=None, metavar="F",
                   help="restore the guest saved in F on a fresh host and run it (no FILE needed)")  # fmt: skip


def wanted(args: argparse.Namespace) -> bool:
    return args.restore is not None or args.snapshot_at is not None or args.snapshot_file is not None


def run_lifecycle(args: argparse.Namespace) -> int:
    from popek import snapshot_file
    from popek.program_files import load_program, profile_named
    from popek.session import Session, SessionError
    from popek.vmm import GuestRefused
    from popek.vmm_runner import format_counters, load_vmm

    from popek.commands.state_text import format_state  # the one-guest printer

    try:
        if args.restore is not None:
            if args.file or args.snapshot_at is not None:
                raise UserError("--restore starts from the file alone: give no program and no --snapshot-at")
            header, snap = snapshot_file.read(args.restore)
            cls = load_vmm(args.vmm or header.vmm)
            header, snap = snapshot_file.read(args.restore, profile=args.profile or header.profile, vmm_cls=cls)
            profile = profile_named(header.profile)
            if "snapshot" not in cls.capabilities:
                raise UserError(f"VMM {cls.name!r} does not declare the snapshot capability")
            with Session(cls, profile, label=cls.name, watch=False) as s:
                s.call("restore", s.vmm.restore, snap)
                s.take_sizes((header.memsize, header.memsize, {}))
                r = s.run(args.steps)
                state, counters = s.state(), s.counters(totals=False)
            print(f"{args.restore}: restored on a fresh host ({cls.name}, profile {profile.name}"
                  + (f", saved after {header.steps} guest steps" if header.steps is not None else "") + ")")  # fmt: skip
        else:
            if args.snapshot_at is None or args.snapshot_file is None or not args.vmm:
                raise UserError("--snapshot-at N needs --snapshot-file F and --vmm V")
            if not args.file or not args.profile:
                raise UserError("give the program FILE and --profile")
            if args.snapshot_at < 0:
                raise UserError(f"--snapshot-at must be at least 0, got {args.snapshot_at}")
            profile = profile_named(args.profile)
            image = load_program(args.file, profile)
            cls = load_vmm(args.vmm)
            if "snapshot" not in cls.capabilities:
                raise UserError(f"VMM {cls.name!r} does not declare the snapshot capability")
            with Session(cls, profile, label=cls.name, watch=False) as s:
                s.load(image, memsize=args.memsize)
                first = s.run(min(args.snapshot_at, args.steps))
                snap = s.call("snapshot", s.vmm.snapshot)
                snapshot_file.write(args.snapshot_file, snap, profile=profile.name, vmm_cls=cls,
                                    memsize=args.memsize, steps=first.steps)  # fmt: skip
                rest = s.run(args.steps - first.steps)
                r = type(rest)(first.steps + rest.steps, rest.halted)
                state, counters = s.state(), s.counters(totals=False)
            print(f"{args.file}: profile {profile.name}, VMM {cls.name}; saved after {first.steps} guest steps "
                  f"to {args.snapshot_file}")  # fmt: skip
    except snapshot_file.SnapshotFileError as e:
        raise UserError(str(e)) from None
    except SessionError as e:
        raise UserError(str(e)) from None
    except GuestRefused as e:
        raise UserError(f"the VMM refuses this guest: {e}") from None
    print(format_state(state.regs, state.out, steps=r.steps, halted=r.halted, word=profile.arch.word))
    print(format_counters(counters))
    return 0
