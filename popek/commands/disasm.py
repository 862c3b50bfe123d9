"""`popek disasm FILE`: print a program as text that assembles back to it.

FILE is assembly source or a ``.json`` image; either way the output is the
disassembler's text (``popek.spec.asm.disassemble``), whose lines end with
the address they came from.
"""

from __future__ import annotations

import argparse

from popek.program_files import load_program, profile_named
from popek.spec.asm import disassemble


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("disasm", help="disassemble a .s program or a .json image")
    p.add_argument("file", help="assembly source (.s) or image (.json)")
    p.add_argument("--profile", default="pg", help="instruction-set profile (default: pg)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    profile = profile_named(args.profile)
    image = load_program(args.file, profile)
    print(disassemble(image, profile), end="")
    return 0
