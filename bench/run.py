"""`make bench`: guest instructions per second, medians of several runs.

Sections are modules beside this file, each with a ``BENCHMARKS`` list of
`harness.Benchmark`; add yours to SECTIONS.  Figures are printed, never
asserted: speed is not a test.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import measure, table  # noqa: E402

# (title, module) in the order they are printed.
SECTIONS = [
    ("bare machine (profile pg, one core)", "bare_machine"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per benchmark (default 5)")
    parser.add_argument("--only", default="", help="run benchmarks whose name contains this text")
    args = parser.parse_args(argv)
    print(f"popek bench: Python {platform.python_version()} on {platform.machine()}")
    for title, module in SECTIONS:
        chosen = [b for b in importlib.import_module(module).BENCHMARKS if args.only in b.name]
        if not chosen:
            continue
        print(f"\n== {title}, {chosen[0].unit}")
        print(table([measure(b, args.runs) for b in chosen], args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
