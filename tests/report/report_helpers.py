"""A small real report for the report tests: two verdict cells from real
campaigns, without the proofs (their Z3 work is what makes ``popek verify``
slow; the one test that needs them computes them itself)."""

from __future__ import annotations

from pathlib import Path

from popek.fuzz.verdict import run_cell
from popek.report import document, files

# Innocuous on x86 by the proofs' classification (tests/proofs checks it);
# named here so that these tests do not run the classification again.
INNOCUOUS_X86 = frozenset({"add", "addi", "and", "call", "cmp", "cmpi", "jc", "jge", "jlt", "jmp", "jnc", "jnz",
                           "jr", "jz", "ld", "li", "mov", "nop", "or", "pop", "push", "ret", "shl", "shr", "st",
                           "sub", "sys", "xor"})  # fmt: skip
ARGV = ["verify", "--designs", "trap-and-emulate,emulator", "--profiles", "x86", "--cases", "30", "--seed", "5"]


def make_report(where: Path) -> tuple[dict, Path, Path]:
    """(the document, report.json, index.html) for trap-and-emulate and the
    emulator on x86, 30 cases each: one unfaithful cell with a counterexample,
    one faithful, both with timelines and direct shares."""
    cells = [
        run_cell((design, "x86", 600.0, str(where / "findings"), str(where / "db"), 5, INNOCUOUS_X86, 0.5, 30))
        for design in ("trap-and-emulate", "emulator")
    ]  # fmt: skip
    doc = document.from_cells("verify", ARGV, cells, seed=5)
    json_path, html_path = files.write(str(where / "report"), doc)
    return doc, json_path, html_path
