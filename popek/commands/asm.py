"""`popek asm FILE`: assemble a program and show or save its image.

Without ``-o`` the image is printed as a listing, one word per line, with
each instruction's text beside its first word so the encoding can be read
against the source.  With ``-o OUT.json`` the image is written in the JSON
form that ``popek disasm`` and ``popek run`` read back.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from popek.cli import UserError
from popek.program_files import IMAGE_SUFFIX, image_to_json, load_program, profile_named
from popek.spec.asm import format_insn
from popek.spec.encoding import decode
from popek.spec.image import Image
from popek.spec.profiles import Profile


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("asm", help="assemble a program; print its words or write a .json image")
    p.add_argument("file", help="assembly source (.s)")
    p.add_argument("--profile", default="pg", help="instruction-set profile (default: pg)")
    p.add_argument("-o", "--output", metavar="OUT", help=f"write the image as {IMAGE_SUFFIX}")
    p.set_defaults(func=run)


def listing(image: Image, profile: Profile) -> str:
    """Address and word per line; an instruction's text beside its first word."""
    digits = (profile.arch.word + 3) // 4
    lines = [f"entry {image.entry:#0{digits + 2}x}"]
    for addr in sorted(image.words):
        word = image.words[addr]
        note = ""
        if addr in image.code:
            d = decode(profile, word, image.words.get(addr + 1, 0))
            note = f"  {format_insn(d.insn, d.rd, d.rs, d.imm)}" if d else "  (illegal)"
        lines.append(f"{addr:0{digits}x}: {word:0{digits}x}{note}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    profile = profile_named(args.profile)
    if args.file.endswith(IMAGE_SUFFIX):
        raise UserError(f"{args.file}: asm reads assembly source; use `popek disasm` on an image")
    image = load_program(args.file, profile)
    if args.output:
        if not args.output.endswith(IMAGE_SUFFIX):
            raise UserError(f"{args.output}: the output image must end in {IMAGE_SUFFIX}")
        try:
            Path(args.output).write_text(image_to_json(image), encoding="utf-8")
        except OSError as e:
            raise UserError(f"{args.output}: cannot write: {e.strerror}") from None
        print(f"{args.output}: {len(image.words)} words, entry {image.entry:#x}")
    else:
        print(listing(image, profile))
    return 0
