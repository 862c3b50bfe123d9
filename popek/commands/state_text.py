"""A machine's final state as `popek run` prints it, from plain register
values, so that a bare run and a guest's view under a VMM
(``popek.vmm.GuestState.regs``), alone or among several guests, print
alike."""

from __future__ import annotations

from typing import Mapping, Sequence

from popek.spec import state as st


def flag_letters(flags: int) -> str:
    """N Z C V, a letter for each flag set and '-' for each clear."""
    masks = ((st.FLAG_N, "N"), (st.FLAG_Z, "Z"), (st.FLAG_C, "C"), (st.FLAG_V, "V"))
    return "".join(letter if flags & mask else "-" for mask, letter in masks)


def _output_text(out: Sequence[int]) -> str:
    text = "".join(chr(w) for w in out) if all(32 <= w < 127 or w == 10 for w in out) else ""
    return f"  {text!r}" if text else ""


def format_state(
    regs: Mapping[str, int], out: Sequence[int], *, steps: int, halted: bool, word: int
) -> str:
    """The final state as a short report; ``regs`` is keyed by state field name."""
    digits = (word + 3) // 4

    def hx(v: int) -> str:
        return f"{v:#0{digits + 2}x}"

    mode = "supervisor" if regs["mode"] == st.SUPERVISOR else "user"
    pending = ", tick pending" if regs["pend"] else ""
    rows = [
        f"steps   {steps}" + (" (halted)" if halted else " (not halted)"),
        f"pc      {hx(regs['pc'])}",
        f"flags   {flag_letters(regs['flags'])}  (NZCV)",
        f"ie      {regs['ie']}",
        f"mode    {mode}",
        f"R       base {hx(regs['base'])}  bound {hx(regs['bound'])}",
        f"ptbr    {hx(regs['ptbr'])}" + ("" if regs["ptbr"] else "  (paging off)"),
        f"timer   {regs['timer']}{pending}",
        f"halted  {'yes' if regs['halted'] else 'no'}",
    ]
    names = [st.FIELD_NAMES[i] for i in range(st.SP + 1)]
    for k in range(0, len(names), 4):
        rows.append("   ".join(f"{n:<2} {hx(regs[n])}" for n in names[k : k + 4]))
    shown = " ".join(str(w) for w in out) if out else "(empty)"
    rows.append(f"output  {shown}{_output_text(out)}")
    return "\n".join(rows)
