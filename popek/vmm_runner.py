"""Running a guest under a VMM plug-in from the command line, safely.

`popek run --vmm` and `popek list` reach plug-in code only through here.
Every call is bounded and checked by a `popek.session.Session`, and every
way a plug-in can fail (cannot be imported, raises, loops, returns the wrong
type, breaks the counters' sum) becomes a `popek.cli.UserError`: one line
that names the plug-in, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

from popek import guard, registry
from popek.cli import UserError
from popek.spec.image import Image
from popek.spec.profiles import Profile
from popek.session import Session, SessionError
from popek.vmm import GuestRefused, VMM, Counters, GuestRun, GuestState, Support


@dataclass(frozen=True)
class VMMRun:
    """What a run under a VMM produced."""

    vmm: str  # the class's declared name
    state: GuestState
    result: GuestRun
    counters: Counters
    expected: Support | None  # what the VMM declares for this profile


def load_vmm(spec: str, *, timeout: float | None = guard.DEFAULT_TIMEOUT) -> type[VMM]:
    """The class named by ``spec`` (registered name or ``package.module:Class``)."""

    def find() -> type[VMM] | registry.PluginError:
        try:
            return registry.load(spec)
        except registry.PluginError as e:
            return e

    try:
        found = guard.call(spec, "import", find, timeout=timeout)
    except guard.PluginFailure as e:
        raise UserError(str(e)) from None
    if isinstance(found, registry.PluginError):
        raise UserError(str(found))
    return found


def run_under_vmm(
    spec: str,
    image: Image,
    profile: Profile,
    *,
    steps: int,
    memsize: int,
    timeout: float | None = guard.DEFAULT_TIMEOUT,
) -> VMMRun:
    """Build the VMM named ``spec`` on a fresh host of ``profile``, load
    ``image`` as its guest and run it for ``steps`` guest steps."""
    if steps < 0:
        raise UserError(f"--steps must be at least 0, got {steps}")
    cls = load_vmm(spec, timeout=timeout)
    name = cls.name
    if profile.name not in cls.supports:
        known = ", ".join(sorted(cls.supports))
        raise UserError(f"VMM {name!r} does not support profile {profile.name!r} (it supports: {known})")
    try:
        with Session(cls, profile, label=name, timeout=timeout, watch=False) as vmm:
            vmm.load(image, memsize=memsize)
            result = vmm.run(steps)
            state = vmm.state()
            counters = vmm.counters()
    except SessionError as e:
        raise UserError(str(e)) from None
    except GuestRefused as e:
        raise UserError(f"VMM {name!r} refuses this guest: {e}") from None
    return VMMRun(name, state, result, counters, cls.supports.get(profile.name))


def format_counters(c: Counters) -> str:
    """The counters as a few lines for a terminal."""
    traps = ", ".join(f"{k} {n}" for k, n in sorted(c.traps.items())) or "none"
    rows = [
        f"direct  {c.direct}   emulated {c.emulated}   efficiency {c.efficiency:.2%}",
        f"traps   {traps}",
        f"entries {c.vmm_entries}",
    ]
    if c.extra:
        rows.append("extra   " + ", ".join(f"{k} {n}" for k, n in sorted(c.extra.items())))
    return "\n".join(rows)


def format_support(s: Support) -> str:
    words = ("faithful" if s.faithful else "not faithful", "efficient" if s.efficient else "not efficient")
    return ", ".join(words) + (f" ({s.reason})" if s.reason else "")


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
    from popek.commands.run import format_state  # the bare run's printer, shared

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
    return 0
