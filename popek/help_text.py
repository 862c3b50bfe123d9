"""What ``popek COMMAND --help`` ends with: examples, then exit statuses.

The argument list says what each option is; a user who has not read the
docs also needs to see a command line that works and to know what the
exit status means in a script.  Kept apart from the commands so that all
of it reads as one page and `tests/cli/test_help.py` can check that every
example parses.
"""

from __future__ import annotations

# Exit statuses every command shares; a command's own meaning of 1 is below.
COMMON_EXITS = (
    ("2", "a usage error: a bad option, file, profile or VMM name (one line on stderr)"),
    ("130", "interrupted (Ctrl-C)"),
    ("141", "the reader of the output went away (e.g. `| head`): not an error of popek's"),
)

# command -> (examples, meaning of exit 0, meaning of exit 1 or None)
COMMANDS: dict[str, tuple[tuple[str, ...], str, str | None]] = {
    "asm": (("popek asm examples/guests/hello.s",
             "popek asm examples/guests/hello.s --profile x86 -o hello.json"),
            "assembled", None),
    "disasm": (("popek disasm examples/guests/hello.s", "popek disasm hello.json --profile x86"),
               "disassembled", None),
    "run": (("popek run examples/guests/hello.s --profile pg",
             "popek run examples/guests/hello.s --profile x86 --vmm trap-and-emulate --steps 500",
             "popek run examples/guests/hello.s --profile pg --show-storage 0x10-0x1f",
             "popek run --restore guest.snap --steps 1000"),
            "the program ran (whatever it computed)", None),
    "isa": (("popek isa --profile x86", "popek isa --markdown --all > docs/isa.md"),
            "printed", None),
    "list": (("popek list",), "listed (a plug-in that cannot load is one line in the list)", None),
    "fuzz": (("popek fuzz --vmm trap-and-emulate --profile x86 --cases 300",
              "popek fuzz --vmm trap-and-emulate --profile pg --time 10m --workers 2 --seed 7",
              "popek fuzz --vmm mypkg.vmm:MyVMM --profile pg --db redis://fuzzhub:6379 --shard 1/2",
              "popek fuzz --replay .popek/findings/FILE.json   (the path your run printed)",
              "popek fuzz --vmm trap-and-emulate --profile x86 --cases 300 --report out/"),
             "no counterexample (a replay: the finding passes now)",
             "a counterexample was found (a replay: it still fails)"),
    "check": (("popek check toy_vmm.vmm:ToyVMM --cases 300   (with examples/toy_vmm on PYTHONPATH)",
               "popek check trap-and-emulate --profile pg --report out/"),
              "every profile matches the declaration and the capabilities hold",
              "some requirement differs from what the VMM declares"),
    "equiv": (("popek equiv emulator trap-and-emulate --profile pg --cases 500",),
              "no difference and nothing unsafe", "a difference, or B did something unsafe"),
    "verify": (("popek verify", "popek verify --cases 200 --designs trap-and-emulate,emulator --report out/",
                "popek verify --no-proofs --time 5m"),
               "every cell of the verdict table matches its design's declaration",
               "some cell is a MISMATCH"),
    "prove": (("popek prove --profile x86", "popek prove --explain popf --profile x86",
               "popek prove --vmm trap-and-emulate --all"),
              "proved or decided as printed",
              "with --vmm: the simulation is not proved (a counterexample is printed)"),
    "migrate": (("popek migrate examples/guests/working_set.s --vmm trap-and-emulate --at 5000 --memsize 16384",),
                "the moved guest ran on as the unmoved one", "it did not"),
    "nest": (("popek nest --profile pg", "popek nest --profile pg --under trap-and-emulate --depth 2"),
             "the inner guests ran under the monitor as alone", "a difference was found"),
}

MAIN = """examples:
  popek prove --explain popf --profile x86      why x86 breaks Theorem 1
  popek fuzz --vmm trap-and-emulate --profile x86 --cases 300
  popek verify --report out/                    the verdict table, and out/index.html

Each command's --help has its own examples and exit statuses."""


def epilog(command: str) -> str:
    """The end of ``popek COMMAND --help``."""
    examples, ok, fail = COMMANDS[command]
    lines = ["examples:", *(f"  {e}" for e in examples), "", "exit status:", f"  0    {ok}"]
    if fail:
        lines.append(f"  1    {fail}")
    lines += [f"  {code:<4} {what}" for code, what in COMMON_EXITS]
    return "\n".join(lines)
