"""`popek isa`: the instruction table of a profile, or the whole manual.

``popek isa --profile P`` prints P's table as text; ``--markdown`` prints it
as Markdown; ``--all`` covers every registered profile, and ``--markdown
--all`` is the complete reference manual that docs/isa.md holds.
"""

from __future__ import annotations

import argparse

from popek import isa_doc
from popek.program_files import profile_named
from popek.spec import profiles


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("isa", help="print a profile's instruction table (or the whole manual)")
    p.add_argument("--profile", default="pg", help="instruction-set profile (default: pg)")
    p.add_argument("--markdown", action="store_true", help="print Markdown instead of text")
    p.add_argument(
        "--all", action="store_true",
        help="every registered profile; with --markdown, the full manual (docs/isa.md)",
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.all:
        chosen = profiles.all_profiles()
        if args.markdown:
            print(isa_doc.manual(chosen), end="")
        else:
            print("\n\n".join(isa_doc.text_table(p) for p in chosen))
        return 0
    profile = profile_named(args.profile)
    if args.markdown:
        print(f"### Profile `{profile.name}`\n\n{profile.summary}\n")
        print(isa_doc.insn_markdown(profile))
    else:
        print(isa_doc.text_table(profile))
    return 0
