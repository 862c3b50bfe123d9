"""Counterexamples as people read them, and as a command line replays them.

A report holds: what went wrong, the VMM and the profile, the guest as
assembly (``popek.spec.asm.disassemble``, so it reassembles), the differing
fields side by side (reference | VMM), and the command that replays it.
"""

from __future__ import annotations

import shlex
from typing import Any

from popek.spec import profiles
from popek.spec.asm import disassemble

from .execute import Problem
from .guest import GuestCase


def _fmt(v: Any) -> str:
    if isinstance(v, int):
        return str(v) if v < 10 else f"{v:#06x}"
    if isinstance(v, list):
        text = "[" + ", ".join(_fmt(x) for x in v[:8]) + (", ..." if len(v) > 8 else "") + "]"
        return text
    return str(v)


COUNTS = ("steps run", "timer", "halted", "pend", "ie", "mode")  # printed in decimal


def diff_table(diffs: list[tuple[str, Any, Any]], left: str = "bare", right: str = "vmm") -> str:
    rows = [
        (name, str(a), str(b)) if name in COUNTS else (name, _fmt(a), _fmt(b)) for name, a, b in diffs
    ]
    w0 = max([len("field"), *(len(r[0]) for r in rows)])
    w1 = max([len(left), *(len(r[1]) for r in rows)])
    lines = [f"  {'field':<{w0}}  {left:<{w1}}  {right}"]
    lines += [f"  {n:<{w0}}  {a:<{w1}}  {b}" for n, a, b in rows]
    return "\n".join(lines)


def assembly(case: GuestCase) -> str:
    prof = profiles.get(case.profile)
    return disassemble(case.image(prof), prof)


def replay_command(vmm: str, case: GuestCase, path: str | None) -> str:
    target = path if path else "<saved finding .json>"
    return f"popek fuzz --vmm {shlex.quote(vmm)} --profile {case.profile} --replay {shlex.quote(target)}"


def format_problem(
    problem: Problem,
    case: GuestCase,
    vmm: str,
    *,
    path: str | None = None,
    reference: str = "bare",
) -> str:
    lines = [
        f"{problem.kind.upper()}: {problem.message}",
        f"  VMM {vmm}, profile {case.profile}, memsize {case.memsize}, "
        f"{case.instructions} instructions, step budget {case.steps}"
        + (f", run in chunks {list(case.chunks)}" if case.chunks else ""),
    ]
    if problem.diffs:
        lines += ["", diff_table(problem.diffs, reference, "vmm")]
    lines += ["", "guest (assembly):", assembly(case).rstrip("\n"), ""]
    lines.append("replay: " + replay_command(vmm, case, path))
    return "\n".join(lines)


def format_outcome(outcome, problem: Problem, *, path: str | None = None) -> str:
    return format_problem(problem, outcome.case, outcome.vmm, path=path)
