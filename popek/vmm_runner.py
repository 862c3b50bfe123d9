"""Running a guest under a VMM plug-in for the command line, safely.

`popek run --vmm` and `popek list` reach plug-in code only through here.
Every call is bounded and checked by a `popek.session.Session`, and every
way a plug-in can fail (cannot be imported, raises, loops, returns the wrong
type, breaks the counters' sum) becomes a `popek.errors.UserError`: one line
that names the plug-in, never a traceback.  The options and printing of
`popek run --vmm` are in `popek.commands.run`; this module imports nothing
from the command line.
"""

from __future__ import annotations

from dataclasses import dataclass

from popek import guard, isolation, registry
from popek.errors import UserError
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

    try:
        return isolation.load(spec, timeout=timeout)  # a plug-in popek did not ship: its own process
    except (registry.PluginError, SessionError) as e:
        raise UserError(str(e)) from None


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

