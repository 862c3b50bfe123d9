"""Issue 5's 'done when', run as campaign workers in this process (default
time budget and guest size, fixed seeds so the runs are reproducible)."""

from __future__ import annotations

import pytest

from popek.commands.fuzz import DEFAULT_TIME
from popek.fuzz.campaign_config import CampaignConfig, parse_duration
from popek.fuzz.worker_loop import run_worker


def campaign(tmp_path, vmm: str, profile: str, *, seed: int, stop: tuple[str, ...] = (), distinct=True):
    config = CampaignConfig(
        vmm=vmm, profile=profile, seconds=parse_duration(DEFAULT_TIME),
        status_dir=str(tmp_path / "status"), findings_dir=str(tmp_path / "findings"),
        db=str(tmp_path / "examples"), seed=seed, stop_culprits=stop, distinct=distinct,
    )  # fmt: skip
    return run_worker(config, 0)


@pytest.mark.campaign
def test_x86_trap_and_emulate_fails_through_popf_or_pushf(tmp_path):
    found = campaign(tmp_path, "trap-and-emulate", "x86", seed=2, stop=("popf", "pushf"))["findings"]
    flags = [f for f in found if f["culprit"] and f["culprit"]["insn"] in ("popf", "pushf")]
    assert flags, f"culprits found: {[f['culprit'] for f in found]}"
    short = [f for f in flags if f["instructions"] <= 6]
    assert short, [(f["culprit"], f["instructions"]) for f in flags]
    assert short[0]["kind"] == "fidelity"
    assert set(short[0]["uses"]) & {"popf", "pushf"}
    # every finding is one of x86's sensitive-unprivileged instructions
    for f in found:
        assert f["culprit"]["insn"] in ("rdmode", "rdbase", "rdbound", "popf", "pushf")


@pytest.mark.campaign
def test_hybrid_trap_and_emulate_fails_through_jru(tmp_path):
    found = campaign(tmp_path, "trap-and-emulate", "hybrid", seed=1, stop=("jru",))["findings"]
    assert found and found[0]["culprit"]["insn"] == "jru", found
    assert found[0]["instructions"] <= 6


@pytest.mark.campaign
@pytest.mark.parametrize(
    "vmm,profile",
    [("trap-and-emulate", "pg"), ("hybrid", "hybrid"), ("binary-translation", "x86")],
)
def test_faithful_designs_survive_a_short_campaign(tmp_path, vmm, profile):
    config = CampaignConfig(
        vmm=vmm, profile=profile, seconds=4, status_dir=str(tmp_path / "status"),
        findings_dir=str(tmp_path / "findings"), db=str(tmp_path / "examples"), seed=5,
    )  # fmt: skip
    result = run_worker(config, 0)
    assert result["cases"] > 5
    assert result["findings"] == []
