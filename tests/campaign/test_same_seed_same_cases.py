"""A campaign's cases follow from its seed, not from what ran before it in
the process.

Hypothesis swaps some drawn numbers for literals it finds in the local
modules imported so far, so importing a module between two campaigns (as
the full suite does: other tests, plug-ins, lazily loaded VMMs) changed
what the second one drew: a planted bug found in 54 cases alone took 15
after the test modules were imported, another 803 against 359.  The child
process here runs a campaign, imports a module full of literals, runs the
same campaign again, and reports the cases each drew; a fresh process keeps
those literals out of the rest of the suite's Hypothesis runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CASES = 20  # the first batch of a campaign (`max_cases` stops after it)

CHILD = r"""
import importlib, json, sys
from popek.fuzz import properties
from popek.fuzz.campaign_config import CampaignConfig
from popek.fuzz.worker_loop import run_worker

work = sys.argv[1]
check = properties.check
drawn = []

def recording(vmm_cls, case, **kw):
    drawn[-1].append(repr(case))
    return check(vmm_cls, case, **kw)

properties.check = recording

def campaign(name, seed):
    drawn.append([])
    config = CampaignConfig(
        vmm="trap-and-emulate", profile="pg", seconds=120, seed=seed, max_cases=%(cases)d,
        status_dir=f"{work}/{name}/status", findings_dir=f"{work}/{name}/findings",
        db=f"{work}/{name}/examples", distinct=False,
    )
    result = run_worker(config, 0)
    assert not result["findings"], result["findings"]  # a faithful VMM: every case runs

campaign("first", 20261126)
sys.path.insert(0, f"{work}/plugin")
importlib.import_module("incidental_literals")
campaign("after-import", 20261126)
campaign("other-seed", 20261127)
print(json.dumps(drawn))
""" % {"cases": CASES}


def test_same_seed_draws_the_same_cases_after_other_imports(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    # the literals an unrelated module might hold, inside a guest word's range
    literals = ", ".join(str(v) for v in range(101, 1 << 16, 257))
    (plugin / "incidental_literals.py").write_text(f"LITERALS = ({literals})\n", encoding="utf-8")
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-3000:]
    first, after_import, other_seed = json.loads(child.stdout.strip().splitlines()[-1])
    assert len(first) >= CASES and len(set(first)) > CASES // 2  # real, varied draws
    assert after_import == first, next(
        f"case {k} differs after importing a module:\n  {a}\n  {b}"
        for k, (a, b) in enumerate(zip(first, after_import))
        if a != b
    ) if len(after_import) == len(first) else f"{len(first)} cases, then {len(after_import)}"
    assert other_seed != first  # the comparison is not blind: seeds matter
