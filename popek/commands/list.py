"""`popek list`: every VMM popek can find, with what it declares.

Built-in designs come first, then plug-ins installed under the entry-point
group ``popek.vmms``.  For each: its name, where it comes from, its summary,
each profile it supports with the expectation it declares (faithful or not,
efficient or not, and why), and its optional capabilities.  A plug-in that
cannot be loaded is one error line; the rest of the list still prints.
"""

from __future__ import annotations

import argparse

from popek import guard, registry
from popek.cli import UserError
from popek.vmm_runner import format_support, load_vmm


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list the VMMs popek knows, with their profiles and capabilities")
    p.add_argument(
        "--timeout", type=float, default=guard.DEFAULT_TIMEOUT,
        help="seconds a plug-in's import may take (default %(default)g)",
    )  # fmt: skip
    p.set_defaults(func=run)


def describe(name: str, target: str, *, timeout: float | None) -> list[str]:
    """The lines `popek list` prints for one VMM (an error line if it is broken)."""
    origin = "built-in" if name in registry.BUILTINS else "plug-in"
    try:
        cls = load_vmm(name, timeout=timeout)
    except UserError as e:
        return [f"{name}  ({origin}, {target})", f"    error: {e}"]
    caps = ", ".join(sorted(cls.capabilities)) or "none"
    lines = [f"{name}  ({origin}, {target})"]
    if cls.summary:
        lines.append(f"    {cls.summary}")
    width = max(len(p) for p in cls.supports)
    for profile, support in cls.supports.items():
        lines.append(f"    {profile:<{width}}  {format_support(support)}")
    lines.append(f"    capabilities: {caps}")
    return lines


def run(args: argparse.Namespace) -> int:
    entries = registry.known()
    if not entries:
        print("no VMMs found")
        return 0
    for name, target in entries.items():
        print("\n".join(describe(name, target, timeout=args.timeout)))
    return 0
