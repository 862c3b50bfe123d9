"""`make bench`: guest instructions per second, medians of several runs.

Sections are modules beside this file; add yours to SECTIONS.  A section
has either a ``BENCHMARKS`` list of `harness.Benchmark` (measured here, as
medians of ``--runs`` runs) or a ``bench()`` function that measures itself
and returns ``(name, value, unit)`` rows.  Figures are printed, never
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
    ("classic VMM designs", "vmm_bench"),
    ("advanced designs", "advanced_bench"),
    ("Z3 proofs (one core)", "proofs_bench"),
    ("fuzzing harness", "fuzz_bench"),
    ("plug-ins in their own process (one core)", "isolation_bench"),
    ("paravirtualization's analysis (one core)", "reach_bench"),
    ("situation coverage of default guests (one core)", "situations_bench"),
    ("default popek check (2 cores)", "verdict_bench"),
    ("migration and snapshot files (issue 12's targets, one core)", "migration_bench"),
    ("recursive virtualization: slowdown per level (one core)", "nesting_bench"),
    ("several guests: four on two CPUs under trap-and-emulate (one core)", "guests_bench"),
    ("hypervisor types: type 2 (host OS) vs type 1, type 0 (partitions) vs bare (one core)", "hosts_bench"),
    ("planted bugs: cases to detection over seeds 1-10 (two processes, about 12 minutes)", "quality_seeds"),
    ("cluster: 4 Dask workers vs --workers 2 locally, same case budget (about 5 minutes)", "cluster_bench"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per benchmark (default 5)")
    parser.add_argument("--only", default="", help="run benchmarks whose name contains this text")
    args = parser.parse_args(argv)
    print(f"popek bench: Python {platform.python_version()} on {platform.machine()}")
    for title, name in SECTIONS:
        module = importlib.import_module(name)
        if not hasattr(module, "BENCHMARKS"):
            if args.only in title:
                print(f"\n== {title}")
                for row, value, unit in module.bench():
                    print(f"{row:<55} {value:>14,.1f} {unit}")
            continue
        chosen = [b for b in module.BENCHMARKS if args.only in b.name]
        if not chosen:
            continue
        print(f"\n== {title}, {chosen[0].unit}")
        print(table([measure(b, args.runs) for b in chosen], args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
