"""The `popek` command line: a thin dispatcher over popek/commands/.

Each command lives in its own module exposing ``register(subparsers)``,
which adds a sub-parser whose ``func(args) -> int`` does the work.  Errors
that users can cause (bad files, bad profiles, misbehaving plug-ins) are
raised as `UserError` and printed as one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from popek.errors import UserError  # re-exported: commands raise it, `main` prints it

# Commands in the order `popek --help` lists them.
COMMANDS = (
    "asm",
    "disasm",
    "run",
    "isa",
    "list",
    "fuzz",
    "check",
    "equiv",
    "verify",
    "prove",
    "migrate",
    "nest",
)


def deprecated_option(old: str, new: str, meaning: str) -> None:
    """One line on stderr for an option kept as an alias for one version."""
    print(f"popek: warning: {old} is deprecated and will be removed in the next version; "
          f"use {new} ({meaning})", file=sys.stderr)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="popek",
        description="Check virtual machine monitors against the Popek-Goldberg requirements.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"popek.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"popek: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("popek: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
