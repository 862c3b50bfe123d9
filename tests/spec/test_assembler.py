"""The assembler and disassembler: random programs round-trip through the
disassembler unchanged, and every error names its file, line and column."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from popek.spec.asm import AsmError, assemble, disassemble
from popek.spec.profiles import all_profiles, get
from popek.spec.sem import ILEN

PROFILES = [p.name for p in all_profiles()]
REGISTERS = [f"r{k}" for k in range(7)] + ["sp", "r7", "R3", "SP"]


def number(value: int) -> hs.SearchStrategy[str]:
    """``value`` written in one of the assembler's number forms (the negative
    form only where it fits a signed word)."""
    forms = [str(value), hex(value), bin(value), f"0x{value:X}"]
    if value >= 0x8000:
        forms.append(f"-{(-value) & 0xFFFF}")
    return hs.sampled_from(forms)


@hs.composite
def immediates(draw, labels: list[str]) -> str:
    if labels and draw(hs.booleans()):
        name = draw(hs.sampled_from(labels))
        offset = draw(hs.integers(0, 40))
        return draw(hs.sampled_from([name, f"{name}+{offset}", f"{name} - {offset}", f"{name}+{hex(offset)}"]))
    return draw(hs.integers(0, 0xFFFF).flatmap(number))


@hs.composite
def instruction(draw, profile_name: str, labels: list[str]) -> str:
    insn = draw(hs.sampled_from(get(profile_name).insns))
    ops = []
    for part in [p.strip() for p in insn.syntax.split(",")] if insn.syntax else []:
        if part in ("rd", "rs"):
            ops.append(draw(hs.sampled_from(REGISTERS)))
        elif part == "imm":
            ops.append(draw(immediates(labels)))
        else:  # imm(rX)
            imm = draw(hs.one_of(hs.just(""), immediates(labels)))
            ops.append(f"{imm}({draw(hs.sampled_from(REGISTERS))})")
    mnemonic = draw(hs.sampled_from([insn.name, insn.name.upper()]))
    return f"{mnemonic} {', '.join(ops)}".rstrip()


@hs.composite
def programs(draw) -> tuple[str, str]:
    """(profile name, program text): instructions, data, labels, comments, .org gaps."""
    profile = draw(hs.sampled_from(PROFILES))
    nlabels = draw(hs.integers(0, 6))
    labels = [f"L{k}" for k in range(nlabels)] + draw(hs.sampled_from([[], ["start"]]))
    # each label is defined before statement index `where[k]` (or at the end)
    nstmts = draw(hs.integers(0, 25))
    where = {name: draw(hs.integers(0, nstmts)) for name in labels}
    addr = draw(hs.sampled_from([None, 0x10, 0x40, 0x1234]))
    lines = [] if addr is None else [f".org {hex(addr)}"]
    addr = 0x10 if addr is None else addr
    for k in range(nstmts + 1):
        here = [name for name in labels if where[name] == k]
        prefix = " ".join(f"{name}:" for name in here)
        if k == nstmts:
            lines.append(prefix)
            break
        kind = draw(hs.sampled_from(["insn", "insn", "insn", "word", "space", "org", "blank"]))
        if kind == "insn":
            stmt = draw(instruction(profile, labels))
            addr += ILEN
        elif kind == "word":
            values = draw(hs.lists(immediates(labels), min_size=1, max_size=4))
            stmt = ".word " + ", ".join(values)
            addr += len(values)
        elif kind == "space":
            n = draw(hs.integers(0, 5))
            stmt = f".space {n}"
            addr += n
        elif kind == "org":
            addr += draw(hs.integers(0, 30))
            stmt = f".org {addr}"
        else:
            stmt = ""
        comment = draw(hs.sampled_from(["", "  ; a comment, with: colons", "\t# hash comment"]))
        indent = draw(hs.sampled_from(["", "  ", "\t"]))
        lines.append(f"{prefix}{indent}{stmt}{comment}")
    if labels and draw(hs.booleans()):
        lines.append(f".entry {draw(hs.sampled_from(labels))}")
    return profile, "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None)
@given(programs())
def test_disassembly_reassembles_to_the_same_image(program: tuple[str, str]) -> None:
    profile_name, text = program
    profile = get(profile_name)
    image = assemble(text, profile)
    listing = disassemble(image, profile)
    again = assemble(listing, profile, file="<listing>")
    assert again.words == image.words
    assert again.entry == image.entry
    if image.code:  # (an image without code marks is disassembled as code where it decodes)
        assert again.code == image.code  # data stays data, code stays code
    assert disassemble(again, profile) == listing


def test_entry_point_rules() -> None:
    pg = get("pg")
    assert assemble(".org 0x40\nnop\n", pg).entry == 0x40  # first address assembled
    assert assemble("nop\nstart: nop\n", pg).entry == 0x12  # the label `start`
    assert assemble("a: nop\nstart: nop\n.entry a\n", pg).entry == 0x10  # .entry wins
    assert assemble("; nothing\n", pg).entry == 0x10


def test_labels_and_numbers() -> None:
    image = assemble(
        """
        .org 0x20
a:  b:  .word a, b+2, a-1, 0b101, -1, 0x10
        li r1, a+0x10
        ld r2, (sp)
        .space 2
end:
        """,
        get("pg"),
    )
    assert [image.words[0x20 + k] for k in range(6)] == [0x20, 0x22, 0x1F, 5, 0xFFFF, 0x10]
    assert image.symbols == {"a": 0x20, "b": 0x20, "end": 0x2C}
    assert image.words[0x2A] == 0 and image.words[0x2B] == 0 and 0x2C not in image.words


# --------------------------------------------------------------------------
# Every error the assembler reports, with its file, line and column
# --------------------------------------------------------------------------
ERRORS = [
    ("a: nop\n  a: nop\n", 2, 3, "label 'a' defined twice"),
    ("  sp: nop\n", 1, 3, "'sp' is a register, not a label"),
    ("nop\n   5 r1\n", 2, 4, "expected a mnemonic, found '5 r1'"),
    ("x: (r1)\n", 1, 4, "expected a mnemonic, found '(r1)'"),
    ("  .entry a, b\n", 1, 3, ".entry takes one operand"),
    ("x: .word\n", 1, 4, ".word needs at least one value"),
    ("nop\n  frob r1\n", 2, 3, "unknown instruction 'frob' in profile 'pg'"),
    ("  jru 0x20\n", 1, 3, "unknown instruction 'jru' in profile 'pg'; did you mean 'jr'?"),  # hybrid only
    ("  jmp nowhere\n", 1, 7, "undefined label 'nowhere'"),
    ("  .word 1, nowhere+2\n", 1, 12, "undefined label 'nowhere'"),
    ("  .entry nowhere\n", 1, 10, "undefined label 'nowhere'"),
    ("  li r1, 1x\n", 1, 10, "expected a number or label, found '1x'"),
    ("  li r1, r2\n", 1, 10, "expected a number or label, found 'r2'"),
    ("  li r1,\n", 1, 10, "expected a number or label, found ''"),
    (".org 0xffff\nnop\n", 2, 1, "address 0x10000 is outside the address space"),
    (".org 20\nnop\n.org 21\n  nop\n", 4, 3, "address 0x15 is assembled twice"),
    ("  .org\n", 1, 3, ".org takes one number"),
    ("  .space x\n", 1, 3, ".space takes one number"),
    ("  .org 1, 2\n", 1, 3, ".org takes one number"),
    (" .space -1\n", 1, 9, ".space -1 is out of range"),
    (" .org 0x10000\n", 1, 7, ".org 65536 is out of range"),
    (" li r1, 70000\n", 1, 9, "70000 does not fit in a 16-bit word"),
    (" .word -32769\n", 1, 8, "-32769 does not fit in a 16-bit word"),
    ("  mov r1, r9\n", 1, 11, "expected a register r0..r7 or sp, found 'r9'"),
    ("  push pc\n", 1, 8, "expected a register r0..r7 or sp, found 'pc'"),
    ("  add r1\n", 1, 3, "add takes 2 operand(s) (rd, rs), got 1"),
    ("  halt r1\n", 1, 3, "halt takes 0 operand(s) (none), got 1"),
    ("  ld r1, r2\n", 1, 10, "expected imm(register), found 'r2'"),
    ("  ld r1, 4(r9)\n", 1, 12, "expected a register r0..r7 or sp, found 'r9'"),
    ("  st r1, 4(r2\n", 1, 10, "expected imm(register), found '4(r2'"),
]


@pytest.mark.parametrize("text, line, col, message", ERRORS)
def test_errors_name_file_line_and_column(text: str, line: int, col: int, message: str) -> None:
    with pytest.raises(AsmError) as caught:
        assemble(text, get("pg"), file="prog.s")
    e = caught.value
    assert (e.file, e.line, e.col) == ("prog.s", line, col), e
    assert e.message == message
    assert str(e) == f"prog.s:{line}:{col}: {e.message}"


def test_every_error_message_of_the_assembler_is_exercised() -> None:
    """Each message asm.py passes to ``fail(...)`` has a case in ERRORS (matched
    on its fixed words), so a new error message needs a location test."""
    import ast
    import inspect

    import popek.spec.asm as asm

    templates = []
    for node in ast.walk(ast.parse(inspect.getsource(asm))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "fail":
            message = node.args[2]
            if isinstance(message, ast.Constant):
                templates.append([message.value])
            elif isinstance(message, ast.JoinedStr):
                templates.append([v.value for v in message.values if isinstance(v, ast.Constant)])
            # else: a message computed elsewhere (the encoder's), not a template here
    assert len(templates) >= 14
    covered = " | ".join(m for *_, m in ERRORS)
    for words in templates:
        assert all(w.strip() in covered for w in words if w.strip()), words
