"""The `popek` command line: a thin dispatcher over popek/commands/.

Each command lives in its own module exposing ``register(subparsers)``,
which adds a sub-parser whose ``func(args) -> int`` does the work.  Errors
that users can cause (bad files, bad profiles, misbehaving plug-ins, bad
options, a reader that closed the pipe) are one line on stderr, never a
traceback; each command's ``--help`` ends with examples and its exit
statuses (`popek.help_text`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from popek.errors import UserError  # re-exported: commands raise it, `main` prints it
from popek.version import version

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

# 128 + SIGPIPE, what a shell reports for a writer whose reader went away
EXIT_BROKEN_PIPE = 141


def deprecated_option(old: str, new: str, meaning: str) -> None:
    """One line on stderr for an option kept as an alias for one version."""
    print(f"popek: warning: {old} is deprecated and will be removed in the next version; "
          f"use {new} ({meaning})", file=sys.stderr)  # fmt: skip


class Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake as one line (argparse prints the whole
    usage first) and "did you mean" for a mistyped command or choice."""

    def error(self, message: str) -> None:  # type: ignore[override]
        bad = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if bad:
            from popek.spec.suggest import did_you_mean

            choices = re.findall(r"'([^']*)'", bad.group(2))
            hint = did_you_mean(bad.group(1), choices, "choices")
            message = f"{message[:bad.start()]}invalid choice: {bad.group(1)!r}; {hint}"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from popek import help_text

    parser = Parser(
        prog="popek",
        description="Check virtual machine monitors against the Popek-Goldberg requirements.",
        epilog=help_text.MAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"popek {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"popek.commands.{name}").register(sub)
    for name, p in sub.choices.items():
        p.epilog = help_text.epilog(name)
        p.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # what a report records
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return status
    except UserError as e:
        print(f"popek: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `popek isa --all | head -3`: the reader has what it wanted.  Output
        # still buffered would fail again at exit, so stdout goes to devnull.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("popek: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
