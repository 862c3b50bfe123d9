"""The machine's reference manual, generated from the spec.

``docs/isa.md`` is the output of `manual` (``popek isa --markdown --all``).
Everything that could drift is read from ``popek.spec``: parameters from
`Arch`, state fields and widths from ``state``, trap causes from the `Cause`
enum (and the comment beside each member), fixed addresses from the
constants, the prose of the effect rules, trap mechanism, translation, timer,
encoding and assembly syntax from those modules' docstrings, and every
instruction's row from its `Insn` (mnemonic, opcode, syntax, docstring).  The little prose
written here says what a field is *for*, never what an instruction does.
A test regenerates the manual and fails when the committed copy is stale.
"""

from __future__ import annotations

import inspect
import re
from typing import Iterable, Sequence

from popek.spec import asm, encoding, memory, sem, state, trap
from popek.spec.instructions import Insn
from popek.spec.profiles import Profile
from popek.spec.sem import ILEN

REGENERATE = "popek isa --markdown --all > docs/isa.md"

# What each state field is for, by field name (behaviour lives in spec/, not
# here).  A field missing from this table is listed with an empty purpose.
FIELD_PURPOSE = {
    "pc": "program counter (a virtual address)",
    "flags": "arithmetic flags N Z C V",
    "ie": "interrupt enable: a pending timer tick is taken only when set",
    "mode": "1 = supervisor, 0 = user",
    "base": "relocation base: virtual address a names linear address base + a",
    "bound": "relocation bound: virtual addresses at or above it trap MEMORY",
    "ptbr": "page-table base; 0 = paging off",
    "timer": "instructions left before a timer tick; 0 = stopped",
    "pend": "a timer tick is pending",
    "halted": "the machine has stopped",
    "guest": "vtx: the machine is in guest mode",
    "vmcs": "vtx: address of the current VMCS",
    "xctl": "vtx: exit controls, one bit per event that exits guest mode",
    "nptbr": "vtx: nested page-table base (guest-physical to host-physical)",
}

# What each fixed storage location holds; addresses come from spec/state.py.
FIXED_PURPOSE = (
    ("OLD_PSW", "old PSW word (flags, IE, mode) stored by a trap"),
    ("OLD_PC", "old PC: the trapping instruction's, or for an interrupt the next one's"),
    ("OLD_BASE", "old relocation base"),
    ("OLD_BOUND", "old relocation bound"),
    ("OLD_CAUSE", "trap cause (table above)"),
    ("OLD_INFO", "trap info: the faulting virtual address, the `sys` immediate, ..."),
    ("NEW_PSW", "new PSW word loaded by a trap"),
    ("NEW_PC", "new PC: the trap handler"),
    ("NEW_BASE", "new relocation base"),
    ("NEW_BOUND", "new relocation bound"),
    ("FIRST_FREE", "lowest address a program may use freely; the assembler starts here"),
)

# The worked example of "Defining your own profile"; tests/docs runs it and
# compares what it prints with PROFILE_EXAMPLE_OUTPUT.
PROFILE_EXAMPLE = '''\
from popek.model.machine import Machine
from popek.spec import instructions as I, profiles, state
from popek.spec.asm import assemble

# pg, except that popf is the x86 definition: unprivileged, silent about IE.
silent = profiles.register(
    profiles.PG.derive("pg-silent-popf", "pg, but popf is x86's", replace=[I.popf])
)

program = """
start:  li   sp, 0x800
        push r0
        popf            ; privileged in pg
        halt            ; privileged in every profile
"""

def first_trap(profile):
    machine = Machine(profile)
    machine.load(assemble(program, profile))
    machine.S[state.MODE] = state.USER  # run the program in user mode
    seen = []
    hook = lambda m, cause, info: seen.append((cause, m.S[state.PC])) or True
    machine.run(100, on_trap=hook)  # the hook returns True: stop at the first trap
    cause, pc = seen[0]
    return f"{profile.name}: {state.Cause(cause).name} at pc {pc}"

print(first_trap(profiles.get("pg")))
print(first_trap(profiles.get("pg-silent-popf")))
'''
PROFILE_EXAMPLE_OUTPUT = """\
pg: PRIVILEGED at pc 20
pg-silent-popf: PRIVILEGED at pc 22
"""


# --------------------------------------------------------------------------
# Rows and tables
# --------------------------------------------------------------------------
def one_line(text: str) -> str:
    return " ".join(text.split())


def insn_row(insn: Insn) -> tuple[str, str, str, str]:
    """mnemonic, opcode, operands, description."""
    return insn.name, f"{insn.opcode:#04x}", insn.syntax or "-", one_line(insn.doc)


def _sorted(profile: Profile) -> list[Insn]:
    return sorted(profile.insns, key=lambda i: i.opcode)


def text_table(profile: Profile) -> str:
    """The instruction table as aligned plain text (``popek isa``)."""
    rows = [("mnemonic", "opcode", "operands", "description")]
    rows += [insn_row(i) for i in _sorted(profile)]
    w = [max(len(r[k]) for r in rows) for k in range(3)]
    lines = [f"profile {profile.name}: {profile.summary}"]
    lines += [f"{a:<{w[0]}}  {b:<{w[1]}}  {c:<{w[2]}}  {d}" for a, b, c, d in rows]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    out += ["| " + " | ".join(_cell(str(c)) for c in r) + " |" for r in rows]
    return "\n".join(out)


def insn_markdown(profile: Profile) -> str:
    """The instruction table of one profile as Markdown (``popek isa --markdown``)."""
    rows = [
        (f"`{name}`", opcode, f"`{syntax}`" if syntax != "-" else "-", doc)
        for name, opcode, syntax, doc in map(insn_row, _sorted(profile))
    ]
    return markdown_table(("mnemonic", "opcode", "operands", "description"), rows)


# --------------------------------------------------------------------------
# Facts read from the spec
# --------------------------------------------------------------------------
def member_comments(cls: type) -> dict[str, str]:
    """``NAME = value  # comment`` lines of a class body: the comment per name."""
    found = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s*([A-Z_][A-Z0-9_]*)\s*=\s*[^#]+#\s*(.+)$", line)
        if m:
            found[m.group(1)] = m.group(2).strip()
    return found


def docstring(obj: object) -> str:
    """A docstring as Markdown: RST's ``::`` becomes ``:``, indentation kept."""
    text = inspect.cleandoc(inspect.getdoc(obj) or "")
    return text.replace("::\n", ":\n")


def differences(base: Profile, other: Profile) -> list[str]:
    """How ``other``'s table differs from ``base``'s, as Markdown lines.

    Instructions are matched by name; one whose definition is not the same
    function (or whose opcode or syntax changed) is listed with both docstrings.
    """
    mine, theirs = base.by_name, other.by_name
    out = []
    for name in sorted(set(theirs) - set(mine), key=lambda n: theirs[n].opcode):
        out.append(f"- adds `{name}` ({theirs[name].opcode:#04x}): {one_line(theirs[name].doc)}")
    for name in sorted(set(mine) - set(theirs), key=lambda n: mine[n].opcode):
        out.append(f"- removes `{name}`")
    if other.features != base.features:
        out.append(f"- features: {', '.join(sorted(other.features)) or 'none'}")
    changed = [
        (f"`{n}`", one_line(mine[n].doc), one_line(theirs[n].doc))
        for n in sorted(set(mine) & set(theirs), key=lambda n: mine[n].opcode)
        if (mine[n].run, mine[n].opcode, mine[n].syntax)
        != (theirs[n].run, theirs[n].opcode, theirs[n].syntax)
    ]
    if changed:
        if out:
            out.append("")
        headers = ("instruction", f"in `{base.name}`", f"in `{other.name}`")
        out.append(markdown_table(headers, changed))
    return out or ["- the same instructions and features"]


# --------------------------------------------------------------------------
# The manual
# --------------------------------------------------------------------------
def manual(profiles: Sequence[Profile]) -> str:
    """docs/isa.md for ``profiles`` (the first one is the baseline for differences)."""
    if not profiles:
        raise ValueError("the manual needs at least one profile")
    arch = profiles[0].arch
    s: list[str] = []
    add = s.append

    add("# The popek machine: reference manual")
    add("")
    add(f"<!-- Generated from spec/ by `{REGENERATE}`. Do not edit by hand. -->")
    add("")
    add(
        "This manual is generated from the spec (`spec/`, package `popek.spec`), "
        "which is also what the concrete machine and the proofs are built from; "
        "a test fails when this file is stale. Each instruction's description is "
        "the docstring of its one definition in `spec/instructions.py`."
    )
    add("")
    add("## Parameters")
    add("")
    add(markdown_table(("parameter", "value", "meaning"), [
        ("word", arch.word, "bits in a word; registers and addresses are one word"),
        ("nregs", arch.nregs, f"general registers r0..r{arch.nregs - 1}; r{state.SP} is sp"),
        ("page_bits", arch.page_bits, f"a page is {arch.page_size} words"),
        ("instruction length", ILEN, "words per instruction (opcode word, immediate word)"),
    ]))  # fmt: skip
    add("")
    add("## State")
    add("")
    add(docstring(state))
    add("")
    rows = [(f"r0..r{arch.nregs - 1}", arch.word, "", f"general registers; r{state.SP} = sp")]
    for slot in range(arch.nregs, state.NSLOTS):
        rows.append((
            state.FIELD_NAMES[slot],
            state.field_width(slot, arch),
            "yes" if slot in state.RESOURCES else "",
            FIELD_PURPOSE.get(state.FIELD_NAMES[slot], ""),
        ))  # fmt: skip
    add(markdown_table(("field", "bits", "resource", "purpose"), rows))
    add("")
    add(
        "A *resource* is state that an instruction must not change without trapping "
        "if it is to be innocuous (P&G's control sensitivity, extended to interrupts, "
        "paging, timer and halt)."
    )
    add("")
    add("## Program status word")
    add("")
    psw = [
        (f"{bit}", name)
        for bit, name in sorted(
            [(m.bit_length() - 1, f"flag {n}") for m, n in
             ((state.FLAG_V, "V"), (state.FLAG_C, "C"), (state.FLAG_Z, "Z"), (state.FLAG_N, "N"))]
            + [(state.PSW_IE_BIT, "IE (interrupt enable)"),
               (state.PSW_MODE_BIT, f"mode ({state.SUPERVISOR} = supervisor)")]
        )
    ]  # fmt: skip
    add("The PSW word a trap stores (and `rti` reloads); other bits are 0.")
    add("")
    add(markdown_table(("bit", "holds"), psw))
    add("")
    add("## Trap causes")
    add("")
    comments = member_comments(state.Cause)
    add(markdown_table(
        ("code", "cause", "when"),
        [(int(c), f"`{c.name}`", comments.get(c.name, "")) for c in state.Cause],
    ))  # fmt: skip
    add("")
    add("## Fixed storage locations")
    add("")
    add(markdown_table(
        ("address", "name", "holds"),
        [(getattr(state, n), f"`{n}`", why) for n, why in FIXED_PURPOSE],
    ))  # fmt: skip
    add("")
    add("## The trap mechanism and the timer")
    add("")
    add(docstring(trap))
    add("")
    for fn in (trap.enter_trap, trap.return_from_trap, trap.tick, trap.interrupt_due):
        add(f"- `{fn.__name__}`: {one_line(docstring(fn))}")
    add("")
    add("## How an instruction is defined")
    add("")
    add(docstring(sem))
    add("")
    add("## Address translation")
    add("")
    add(docstring(memory))
    add("")
    add(markdown_table(
        ("page-table entry bit", "value"),
        [("present", state.PTE_PRESENT), ("write", state.PTE_WRITE), ("user", state.PTE_USER)],
    ))  # fmt: skip
    add("")
    add("## Encoding")
    add("")
    add(docstring(encoding))
    add("")
    add("## Assembly syntax")
    add("")
    add(docstring(asm))
    add("")
    add("## Profiles")
    add("")
    add(markdown_table(
        ("profile", "instructions", "features", "summary"),
        [(f"`{p.name}`", len(p.insns), ", ".join(sorted(p.features)) or "-", p.summary)
         for p in profiles],
    ))  # fmt: skip
    add("")
    for p in profiles:
        add(f"### Profile `{p.name}`")
        add("")
        add(f"*{p.summary}*")
        add("")
        add(insn_markdown(p))
        add("")
    add("## How the profiles differ")
    add("")
    base = profiles[0]
    for p in profiles[1:]:
        add(f"`{p.name}` compared with `{base.name}`:")
        add("")
        s.extend(differences(base, p))
        add("")
    add("## Defining your own profile")
    add("")
    add(
        "A profile is a table of instructions plus features. Derive one from an existing "
        "profile with `Profile.derive(name, summary, add=..., replace=..., remove=..., "
        "features=...)` (instructions are matched by name; opcodes must stay unique) and "
        "`profiles.register` it. A new instruction is an `Insn` made with the `@insn` "
        "decorator of `spec/instructions.py`; `privileged(insn)` makes a copy that traps "
        "in user mode. The example below swaps `pg`'s privileged `popf` for the x86 one "
        "and shows where each profile first traps in user mode:"
    )
    add("")
    add("```python")
    add(PROFILE_EXAMPLE.rstrip("\n"))
    add("```")
    add("")
    add("It prints:")
    add("")
    add("```text")
    add(PROFILE_EXAMPLE_OUTPUT.rstrip("\n"))
    add("```")
    return "\n".join(s) + "\n"
