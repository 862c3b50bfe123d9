"""The harness finds every planted bug (see planted_bugs.py) with a
default-budget campaign, and reports it with a short counterexample.

Each test runs one campaign worker in this process, with the campaign
defaults of ``popek fuzz`` (time budget, step budget, guest size) and a
fixed seed, stopping at the first confirmed (shrunk) finding.
"""

from __future__ import annotations

import json

import pytest

from planted_bugs import BUGS, Bug
from popek.commands.fuzz import DEFAULT_TIME
from popek.fuzz.campaign import CampaignConfig, parse_duration, run_worker


@pytest.mark.campaign
@pytest.mark.parametrize("bug", BUGS, ids=lambda b: b.cls.name)
def test_planted_bug_is_found(bug: Bug, tmp_path):
    config = CampaignConfig(
        vmm=f"{bug.cls.__module__}:{bug.cls.__name__}",
        profile=bug.profile,
        seconds=parse_duration(DEFAULT_TIME),
        status_dir=str(tmp_path / "status"),
        findings_dir=str(tmp_path / "findings"),
        db=str(tmp_path / "examples"),
        distinct=False,
        seed=20261126,
    )
    result = run_worker(config, 0)
    assert result["findings"], f"{bug.cls.name} ({bug.cls.__doc__.strip()}) was not found"
    finding = result["findings"][0]
    assert finding["kind"] == bug.breaks, finding["message"]
    doc = json.loads(open(finding["path"], encoding="utf-8").read())
    assert doc["shrunk"] is True
    # the saved report is readable as it stands: assembly, the VMM, a replay line
    assert "guest (assembly):" in doc["report"] and bug.cls.name in doc["report"] or config.vmm in doc["report"]
    assert doc["replay"].startswith("popek fuzz --vmm ")
    print(
        f"{bug.cls.name}: {finding['kind']} after {finding['seconds_to_detection']:.1f} s "
        f"({finding['cases_to_detection']} cases), {finding['instructions']} instructions"
    )
