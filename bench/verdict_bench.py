"""Default `popek check` wall-clock time (issue 11's target: at most 2
minutes for one VMM on four profiles, on 2 cores), measured, never asserted.

Each design is checked once, as a user would run it (a separate process,
default case budget, default workers), in a fresh directory; the figure is
that run's wall-clock time.  The slowest built-in design (paravirt, whose
rewriting pass analyses every guest) and the classic one are measured.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time

DESIGNS = ("trap-and-emulate", "paravirt")


def bench() -> list[tuple[str, float, str]]:
    rows = []
    for design in DESIGNS:
        with tempfile.TemporaryDirectory(prefix="popek-bench-check-") as tmp:
            start = time.perf_counter()
            r = subprocess.run(
                [sys.executable, "-m", "popek", "check", design], cwd=tmp, capture_output=True, text=True,
            )  # fmt: skip
            seconds = time.perf_counter() - start
        verdict = "exit 0" if r.returncode == 0 else f"exit {r.returncode}"
        rows.append((f"popek check {design}, 4 profiles, defaults ({verdict})", seconds, "s"))
    return rows


if __name__ == "__main__":
    for row, value, unit in bench():
        print(f"{row:<55} {value:>14,.1f} {unit}")
