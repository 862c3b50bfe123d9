"""Cases to detection of every planted bug over seeds 1-10 (issue 11, item 7),
measured, never asserted.

For each planted bug of ``tests/quality/planted_bugs.py`` (`BUGS`) and each
seed, one campaign worker runs as ``tests/quality`` runs it (the campaign
defaults, ``first=True``), with a case budget (`CAP`) instead of the clock,
and the number of generated cases up to and including the first one that
shows the bug is recorded, with the kind it was reported as.  Detection is
at the first failing case, before any shrinking, so shrinking is turned off
here (Hypothesis's shrink phase, popek's own pass and the focused search):
it changes nothing that is counted and takes most of the time.  A bug not
found within `CAP` cases counts as ``>CAP``.

Targets: median <= 200 cases, worst <= 2,000.

Runnable alone: ``python bench/quality_seeds.py [--seeds 1-10] [--cap 2500]
[--jobs 2] [--only NAME]``; `bench()` (for bench/run.py) runs the same with
the defaults, which takes several minutes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUALITY = ROOT / "tests" / "quality"
SEEDS = tuple(range(1, 11))
CAP = 2500
MEDIAN_TARGET, WORST_TARGET = 200, 2000


def _no_shrinking() -> None:
    """Turn off what only runs after detection (see the module docstring)."""
    from hypothesis import Phase, settings

    from popek.fuzz import example_db, worker_findings, worker_loop

    def profile(database, batch, reuse_only=False):
        from hypothesis import HealthCheck

        settings.register_profile(
            example_db.SETTINGS_PROFILE, database=database, max_examples=batch, deadline=None,
            derandomize=False, phases=[Phase.explicit, Phase.reuse, Phase.generate],
            suppress_health_check=list(HealthCheck), report_multiple_bugs=False, print_blob=False,
        )  # fmt: skip
        return settings.get_profile(example_db.SETTINGS_PROFILE)

    worker_loop.register_settings_profile = profile  # the name the worker loop calls
    worker_findings.minimize_finding = lambda *a, **k: None
    worker_findings.focus = lambda *a, **k: None


def measure(job: tuple[str, str, int, int]) -> tuple[str, int, int | None, str | None]:
    """(bug class name, profile, seed, cap) -> (name, seed, cases to detection or None, kind)."""
    cls_name, profile, seed, cap = job
    if str(QUALITY) not in sys.path:
        sys.path.insert(0, str(QUALITY))
    _no_shrinking()
    from popek.fuzz.campaign_config import CampaignConfig
    from popek.fuzz.worker_loop import run_worker

    with tempfile.TemporaryDirectory() as tmp:
        config = CampaignConfig(
            vmm=f"planted_bugs:{cls_name}", profile=profile, seconds=3600.0,
            status_dir=f"{tmp}/status", findings_dir=f"{tmp}/findings", db=f"{tmp}/examples",
            distinct=False, first=True, seed=seed, max_cases=cap,
        )  # fmt: skip
        result = run_worker(config, 0)
    if not result["findings"]:
        return cls_name, seed, None, None
    f = result["findings"][0]
    return cls_name, seed, f["cases_to_detection"], f["kind"]


def _parse_seeds(text: str) -> tuple[int, ...]:
    if "-" in text:
        lo, hi = (int(x) for x in text.split("-"))
        return tuple(range(lo, hi + 1))
    return tuple(int(x) for x in text.split(","))


def run(seeds=SEEDS, cap: int = CAP, jobs: int = 2, only: str = "", on_row=None) -> list[dict]:
    """One row per bug: its cases to detection per seed, median, worst, kinds."""
    sys.path.insert(0, str(QUALITY))
    from planted_bugs import BUGS

    bugs = [b for b in BUGS if only in b.cls.name]
    work = [(b.cls.__name__, b.profile, s, cap) for b in bugs for s in seeds]
    got: dict[tuple[str, int], tuple] = {}
    rows = []
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        results = pool.map(measure, work)  # in order: a bug's row as soon as its seeds are done
        for b in bugs:
            for _ in seeds:
                name, seed, cases, kind = next(results)
                got[name, seed] = (cases, kind)
            rows.append(_row(b, [got[b.cls.__name__, s] for s in seeds], cap))
            if on_row is not None:
                on_row(rows[-1])
    return rows


def _row(b, per: list, cap: int) -> dict:
    counts = [cap + 1 if c is None else c for c, _ in per]
    kinds = sorted({k for _, k in per if k})
    wrong = sorted({k for _, k in per if k and k not in b.kinds})
    return {
        "bug": b.cls.name, "profile": b.profile, "breaks": sorted(b.breaks),
        "cases": [c for c, _ in per], "median": statistics.median(counts), "worst": max(counts),
        "missed": sum(c is None for c, _ in per), "kinds": kinds, "wrong_kinds": wrong,
    }  # fmt: skip


def _fmt(v: float, cap: int) -> str:
    return f">{cap:,}" if v > cap else f"{v:,.0f}"


HEAD = f"{'planted bug':<38} {'profile':<7} {'median':>7} {'worst':>7}  per seed; found as"


def print_row(r: dict, cap: int) -> None:
    per = " ".join("-" if c is None else str(c) for c in r["cases"])
    flag = ""
    if r["median"] > MEDIAN_TARGET or r["worst"] > WORST_TARGET:
        flag = "  MISSES TARGET"
    if r["wrong_kinds"]:
        flag += f"  WRONG KIND {r['wrong_kinds']}"
    print(f"{r['bug']:<38} {r['profile']:<7} {_fmt(r['median'], cap):>7} {_fmt(r['worst'], cap):>7}"
          f"  [{per}]; {'/'.join(r['kinds']) or 'not found'}{flag}", flush=True)  # fmt: skip


def bench() -> list[tuple[str, float, str]]:
    rows = run()
    out = []
    for r in rows:
        out.append((f"{r['bug']}: median cases (target <= {MEDIAN_TARGET})", float(r["median"]), ""))
        out.append((f"{r['bug']}: worst of seeds 1-10 (target <= {WORST_TARGET:,})", float(r["worst"]), ""))
    out.append(("planted bugs missing a target", float(sum(
        r["median"] > MEDIAN_TARGET or r["worst"] > WORST_TARGET for r in rows)), ""))  # fmt: skip
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1-10")
    ap.add_argument("--cap", type=int, default=CAP)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    print(HEAD, flush=True)
    rows = run(_parse_seeds(a.seeds), a.cap, a.jobs, a.only, on_row=lambda r: print_row(r, a.cap))
    missing = [r["bug"] for r in rows if r["median"] > MEDIAN_TARGET or r["worst"] > WORST_TARGET]
    print(f"{len(rows)} planted bugs, seeds {a.seeds}, at most {a.cap:,} cases each; "
          f"missing a target: {', '.join(missing) or 'none'}")
