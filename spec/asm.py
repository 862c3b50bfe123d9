"""Assembler and disassembler for the text form of programs.

Syntax, one statement per line::

    ; a comment (so is everything after '#')
    start:  li   r1, 10        ; label, mnemonic, operands as in docs/isa.md
            ld   r2, 4(sp)     ; imm(reg) is an address
            jnz  start
            .org  0x100         ; continue assembling at an address
            .word 1, 2, start   ; data words (numbers or labels)
            .space 8            ; eight zero words
            .entry start        ; where execution begins

Numbers are decimal, ``0x`` hex or ``0b`` binary, optionally negative;
a decimal number has no leading zero (``007`` is an error rather than a
guess between decimal and C's octal), and no literal may be longer than
80 characters (no word is that wide; `MAX_DIGITS`).  An immediate may be
``label``, ``label+N`` or ``label-N``.  The entry point
is ``.entry`` if given, else the label ``start``, else the first address
assembled.  Errors name the file, line and column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .encoding import EncodingError, decode, encode
from .image import Image
from .instructions import Insn
from .profiles import Profile
from .sem import ILEN
from .state import FIELD_BY_NAME, FIRST_FREE


class AsmError(ValueError):
    """A program that does not assemble; says where and why."""

    def __init__(self, file: str, line: int, col: int, message: str):
        super().__init__(f"{file}:{line}:{col}: {message}")
        self.file, self.line, self.col, self.message = file, line, col, message


_LABEL = re.compile(r"\s*([A-Za-z_.][\w.]*)\s*:")
_MNEMONIC = re.compile(r"\s*(\.?[A-Za-z_][\w]*)")
_NUMBER = re.compile(r"^[+-]?(0x[0-9a-fA-F]+|0b[01]+|[0-9]+)$")
_SYMREF = re.compile(r"^([A-Za-z_.][\w.]*)\s*(?:([+-])\s*(0x[0-9a-fA-F]+|0b[01]+|[0-9]+))?$")
_MEMREF = re.compile(r"^(.*)\(\s*([A-Za-z]\w*)\s*\)$")
# Longer than any word's literal (64 binary digits and a prefix): reading a
# longer one would only say it does not fit, after Python's int() refused
# (more than 4300 decimal digits) or spent time on it.
MAX_DIGITS = 80


def parse_number(text: str) -> int:
    """The value of a numeric literal the `_NUMBER` pattern matched; a
    ValueError saying why for a leading zero or an overlong literal."""
    digits = text.lstrip("+-")
    if len(digits) > MAX_DIGITS:
        raise ValueError(f"number {text[:12]}... ({len(digits)} characters) is too long for a word")
    if len(digits) > 1 and digits[0] == "0" and digits[1].isdigit():
        raise ValueError(f"number {text!r} has a leading zero: write {text[0] if text[0] in '+-' else ''}"
                         f"{digits.lstrip('0') or '0'} (decimal), or 0x/0b for another base")  # fmt: skip
    return int(text, 0)


@dataclass
class _Stmt:
    line: int
    col: int
    addr: int
    mnemonic: str
    operands: list[tuple[str, int]]  # text, column


def _strip_comment(text: str) -> str:
    for mark in (";", "#"):
        cut = text.find(mark)
        if cut >= 0:
            text = text[:cut]
    return text


def _split_operands(text: str, col0: int) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    pos = 0
    for part in text.split(","):
        lead = len(part) - len(part.lstrip())
        if part.strip():
            out.append((part.strip(), col0 + pos + lead))
        else:
            out.append(("", col0 + pos + 1))
        pos += len(part) + 1
    return out if text.strip() else []


def assemble(text: str, profile: Profile, *, file: str = "<input>") -> Image:
    """Assemble ``text`` for ``profile`` into an image."""
    arch = profile.arch
    table = profile.by_name
    stmts: list[_Stmt] = []
    symbols: dict[str, int] = {}
    entry_ref: tuple[str, int, int] | None = None
    addr = FIRST_FREE
    first: int | None = None

    def fail(line: int, col: int, message: str) -> AsmError:
        return AsmError(file, line, col, message)

    # pass 1: addresses of labels
    for lineno, raw in enumerate(text.splitlines(), 1):
        body = _strip_comment(raw)
        pos = 0
        while (m := _LABEL.match(body, pos)) is not None:
            name = m.group(1)
            if name in symbols:
                raise fail(lineno, m.start(1) + 1, f"label {name!r} defined twice")
            if name in FIELD_BY_NAME:
                raise fail(lineno, m.start(1) + 1, f"{name!r} is a register, not a label")
            symbols[name] = addr
            pos = m.end()
        m = _MNEMONIC.match(body, pos)
        if m is None:
            if body[pos:].strip():
                col = pos + len(body[pos:]) - len(body[pos:].lstrip()) + 1
                raise fail(lineno, col, f"expected a mnemonic, found {body[pos:].strip()!r}")
            continue
        mnemonic = m.group(1).lower()
        ops = _split_operands(body[m.end():], m.end() + 1)
        stmt = _Stmt(lineno, m.start(1) + 1, addr, mnemonic, ops)
        if mnemonic == ".org":
            addr = _directive_number(stmt, ops, fail, arch.mask)
            continue
        if mnemonic == ".entry":
            if len(ops) != 1:
                raise fail(lineno, stmt.col, ".entry takes one operand")
            entry_ref = (ops[0][0], lineno, ops[0][1])
            continue
        if first is None:
            first = addr
        if mnemonic == ".word":
            if not ops:
                raise fail(lineno, stmt.col, ".word needs at least one value")
            addr += len(ops)
        elif mnemonic == ".space":
            addr += _directive_number(stmt, ops, fail, arch.mask)
        elif mnemonic in table:
            addr += ILEN
        else:
            from .suggest import close_names

            close = close_names(m.group(1), table)
            hint = ("; did you mean " + " or ".join(map(repr, close)) + "?") if close else ""
            raise fail(lineno, stmt.col, f"unknown instruction {m.group(1)!r} in profile {profile.name!r}{hint}")
        stmts.append(stmt)

    # pass 2: encode
    words: dict[int, int] = {}
    lines: dict[int, tuple[str, int]] = {}
    code: set[int] = set()

    def number(textv: str, line: int, col: int) -> int:
        try:
            return parse_number(textv)
        except ValueError as e:
            raise fail(line, col, str(e)) from None

    def value(textv: str, line: int, col: int) -> int:
        if _NUMBER.match(textv):
            n = number(textv, line, col)
            if not -(1 << (arch.word - 1)) <= n <= arch.mask:
                raise fail(line, col, f"{textv} does not fit in a {arch.word}-bit word")
            return n & arch.mask
        m = _SYMREF.match(textv)
        if m and m.group(1) in symbols:
            v = symbols[m.group(1)]
            if m.group(2):
                n = number(m.group(3), line, col)
                v = v + n if m.group(2) == "+" else v - n
            return v & arch.mask
        if m and m.group(1) not in FIELD_BY_NAME:
            raise fail(line, col, f"undefined label {m.group(1)!r}")
        raise fail(line, col, f"expected a number or label, found {textv!r}")

    def place(at: int, word: int, stmt: _Stmt) -> None:
        if not 0 <= at <= arch.mask:
            raise fail(stmt.line, stmt.col, f"address {at:#x} is outside the address space")
        if at in words:
            raise fail(stmt.line, stmt.col, f"address {at:#x} is assembled twice")
        words[at] = word

    for stmt in stmts:
        if stmt.mnemonic == ".word":
            for k, (t, c) in enumerate(stmt.operands):
                place(stmt.addr + k, value(t, stmt.line, c), stmt)
            continue
        if stmt.mnemonic == ".space":
            for k in range(_directive_number(stmt, stmt.operands, fail, arch.mask)):
                place(stmt.addr + k, 0, stmt)
            continue
        insn = table[stmt.mnemonic]
        fields = _operands(insn, stmt, value, fail, arch.nregs)
        try:
            w0, w1 = encode(profile, insn, **fields)
        except EncodingError as e:
            raise fail(stmt.line, stmt.col, str(e)) from None
        place(stmt.addr, w0, stmt)
        place(stmt.addr + 1, w1, stmt)
        lines[stmt.addr] = (file, stmt.line)
        code.add(stmt.addr)

    if entry_ref is not None:
        entry = value(*entry_ref)
    elif "start" in symbols:
        entry = symbols["start"]
    else:
        entry = first if first is not None else FIRST_FREE
    return Image(words, entry, symbols, lines, code)


def _directive_number(stmt: _Stmt, ops, fail, mask: int) -> int:
    if len(ops) != 1 or not _NUMBER.match(ops[0][0]):
        raise fail(stmt.line, stmt.col, f"{stmt.mnemonic} takes one number")
    try:
        n = parse_number(ops[0][0])
    except ValueError as e:
        raise fail(stmt.line, ops[0][1], str(e)) from None
    if not 0 <= n <= mask:
        raise fail(stmt.line, ops[0][1], f"{stmt.mnemonic} {n} is out of range")
    return n


def _register(textv: str, line: int, col: int, fail, nregs: int) -> int:
    index = FIELD_BY_NAME.get(textv.lower())
    if index is None or index >= nregs:
        raise fail(line, col, f"expected a register r0..r{nregs - 1} or sp, found {textv!r}")
    return index


def _operands(insn: Insn, stmt: _Stmt, value, fail, nregs: int) -> dict[str, int]:
    """Match the statement's operands against the instruction's syntax."""
    pattern = [p.strip() for p in insn.syntax.split(",")] if insn.syntax else []
    if len(stmt.operands) != len(pattern):
        raise fail(
            stmt.line,
            stmt.col,
            f"{insn.name} takes {len(pattern)} operand(s) ({insn.syntax or 'none'}), "
            f"got {len(stmt.operands)}",
        )
    out: dict[str, int] = {}
    for want, (got, col) in zip(pattern, stmt.operands):
        if want in ("rd", "rs"):
            out[want] = _register(got, stmt.line, col, fail, nregs)
        elif want == "imm":
            out["imm"] = value(got, stmt.line, col)
        else:  # imm(rX)
            m = _MEMREF.match(got)
            if m is None:
                raise fail(stmt.line, col, f"expected imm(register), found {got!r}")
            reg_field = want[want.index("(") + 1 : -1]
            out["imm"] = value(m.group(1).strip() or "0", stmt.line, col)
            out[reg_field] = _register(m.group(2), stmt.line, col + m.start(2), fail, nregs)
    return out


# --------------------------------------------------------------------------
# Disassembly
# --------------------------------------------------------------------------
def format_insn(insn: Insn, rd: int, rs: int, imm: int) -> str:
    names = {"rd": _reg_name(rd), "rs": _reg_name(rs), "imm": str(imm) if imm < 256 else hex(imm)}
    ops = insn.syntax
    for f in ("rd", "rs", "imm"):
        ops = ops.replace(f, names[f])
    return f"{insn.name} {ops}".rstrip()


def _reg_name(index: int) -> str:
    return "sp" if index == 7 else f"r{index}"


def disassemble(image: Image, profile: Profile) -> str:
    """Text that assembles back to exactly the image's words and entry.

    Each line ends with its address as a comment, so the text reassembles.
    """
    words = image.words
    out: list[str] = []
    addr = None
    for a in sorted(words):
        if addr is not None and a < addr:
            continue  # second word of an instruction already printed
        if a != addr:
            out.append(f"        .org {a:#x}")
        addr = a
        is_code = a in image.code if image.code else True
        text = f".word {words[a]:#x}"
        addr = a + 1
        if is_code and a + 1 in words:
            d = decode(profile, words[a], words[a + 1])
            if d is not None:
                text = format_insn(d.insn, d.rd, d.rs, d.imm)
                addr = a + 2
        out.append(f"        {text:<22}; {a:04x}")
    out.append(f"        .entry {image.entry:#x}")
    return "\n".join(out) + "\n"
