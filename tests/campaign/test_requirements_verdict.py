"""Issue 11, items 1, 5 and 6: safety is a verdict of its own, a campaign
does not stop at its first finding, budgets are in cases, and a guest the
design refuses is no failure.

Campaigns here are small case budgets (a few hundred cases) with fixed
seeds: what they find follows from the seed, not from the machine's speed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from campaign_helpers import popek

HERE = Path(__file__).resolve().parent
PLANTED = "planted_unsafe:WritesPastAllocation"
sys.path.insert(0, str(HERE))  # planted_unsafe, for the in-process campaigns


# -- safety is a verdict ------------------------------------------------------
@pytest.mark.campaign
def test_a_write_past_the_allocation_is_a_safety_mismatch(tmp_path):
    """The planted VMM is faithful on pg as it declares; on a rare path (a
    user-mode `sys`, about one case in twenty) it writes one word past the
    guest's allocation.  `popek check` must say UNSAFE and exit 1."""
    r = popek("check", PLANTED, "--profile", "pg", "--cases", "400", "--json", "t.json", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    (cell,) = json.loads((tmp_path / "t.json").read_text())
    assert cell["observed_faithful"] is True and cell["requirements"]["fidelity"]["match"] is True
    assert cell["observed_safe"] is False and cell["requirements"]["safety"]["match"] is False
    assert cell["match"] is False and cell["cases"] == 400
    assert "host word" in cell["safety_message"] and "allocation" in cell["safety_message"]
    row = next(line for line in r.stdout.splitlines() if line.startswith(PLANTED))
    assert "UNSAFE (" in row and "MISMATCH (safety)" in row and " MATCH" not in row.replace("MISMATCH", "")
    # the witness is printed like a fidelity counterexample: report, assembly, replay line
    assert "SAFETY: host word" in r.stdout and "guest (assembly):" in r.stdout
    doc = json.loads(Path(cell["safety_finding"]).read_text())
    assert doc["kind"] == "safety" and doc["shrunk"] is True and "sys" in doc["uses"]
    replay = popek(*doc["replay"].split()[1:], cwd=tmp_path)
    assert replay.returncode == 1 and replay.stdout.startswith("SAFETY"), replay.stdout + replay.stderr


@pytest.mark.campaign
def test_a_guest_that_can_reach_a_reserved_word_is_a_safety_mismatch(tmp_path):
    """The planted VMM keeps its bookkeeping right after the guest and clips
    the real bound one word too late: guest code on the host can read (and
    write) a word of `reserved()`, which the canary check leaves out.  The
    session's reach check sees it on the first direct run."""
    r = popek("check", "planted_bugs:BoundReachesReserved", "--profile", "pg", "--cases", "50",
              "--json", "t.json", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    (cell,) = json.loads((tmp_path / "t.json").read_text())
    assert cell["observed_safe"] is False and cell["requirements"]["safety"]["match"] is False
    assert "could reach host word 0x1400" in cell["safety_message"]
    assert "UNSAFE (" in r.stdout and "safety" in r.stdout.split("MISMATCH (", 1)[1].split(")")[0]


@pytest.mark.campaign
def test_a_fidelity_finding_does_not_hide_a_safety_one(tmp_path):
    """The planted VMM on x86, which trap-and-emulate declares unfaithful
    (popf, pushf, rdmode...): a fidelity finding comes within a few cases and
    must not hide the write past the allocation."""
    from popek.fuzz.verdict import run_cell

    job = (PLANTED, "x86", 300.0, str(tmp_path / "found"), str(tmp_path / "db"), 1, None, 0.5, 800)
    cell = run_cell(job)
    assert cell.observed_faithful is False and not cell.expected_faithful  # as declared
    assert cell.observed_safe is False, cell
    assert cell.verdict_text() == "MISMATCH (safety)" and not cell.match
    # every requirement a campaign can break has its finding: it may stop before the budget
    assert cell.cases <= 800 and not cell.time_capped
    assert cell.problem_cases["fidelity"] >= 1 and cell.problem_cases["safety"] >= 1
    names = sorted(p.name for p in (tmp_path / "found").glob("*.json"))
    assert any("-fidelity-" in n for n in names) and any("-safety-" in n for n in names), names
    assert len(set(names)) == len(names)


def test_requirements_of_each_kind():
    from popek.fuzz.campaign_config import CampaignConfig, breakable, requirement_of

    assert [requirement_of(k) for k in ("fidelity", "crash", "contract", "safety", "efficiency")] == [
        "fidelity", "fidelity", "fidelity", "safety", "efficiency",
    ]  # fmt: skip
    assert breakable(CampaignConfig(vmm="x", profile="pg")) == ("fidelity", "safety")
    assert breakable(CampaignConfig(vmm="x", profile="pg", efficiency=0.5)) == ("fidelity", "safety", "efficiency")


def test_cell_match_needs_all_three():
    from popek.fuzz.verdict import Cell

    base = dict(
        design="d", profile="pg", expected_faithful=True, expected_efficient=True, reason="",
        observed_faithful=True, counterexample=None, culprit=None, kind=None, efficiency=None,
        safety_findings=0, cases=10, seconds=1.0, finding=None, observed_efficient=True, innocuous_direct=0.9,
    )  # fmt: skip
    assert Cell(**base).match and Cell(**base).verdict_text() == "MATCH"
    unsafe = Cell(**base, observed_safe=False, safety_counterexample=3,
                  safety_message="host word 0x1400 (outside the guest's allocation [0x1000, 0x1400)) changed: 1 -> 2")
    assert not unsafe.match and unsafe.verdict_text() == "MISMATCH (safety)"
    assert unsafe.safety_text() == "UNSAFE (3 insns, host word 0x1400 changed: 1 -> 2)"
    slow = Cell(**{**base, "observed_efficient": False})
    assert slow.verdict_text() == "MISMATCH (efficiency)"
    assert unsafe.to_json()["requirements"]["safety"] == {
        "expected": True, "observed": False, "match": False, "finding": None,
    }  # fmt: skip


# -- budgets in cases ---------------------------------------------------------
@pytest.mark.campaign
def test_a_case_budget_gives_the_same_cases_twice(tmp_path):
    """Two workers share the budget; each run meets it exactly, and finds
    the same things at the same cases (seed 4: its 151 cases include a
    finding, jru's, for the two runs to share)."""
    runs = []
    for k in (1, 2):
        r = popek(
            "fuzz", "--vmm", "trap-and-emulate", "--profile", "hybrid", "--cases", "151", "--workers", "2",
            "--seed", "4", "--findings", f"found{k}", "--db", f"db{k}", "--json", f"r{k}.json", "--quiet",
            cwd=tmp_path,
        )  # fmt: skip
        assert r.returncode == 1, r.stdout + r.stderr  # hybrid: unfaithful (jru)
        runs.append(json.loads((tmp_path / f"r{k}.json").read_text()))
    assert [r["cases"] for r in runs] == [151, 151] and runs[0]["budget"] == 151
    assert not runs[0]["time_capped"] and not runs[1]["time_capped"]
    seen = [
        sorted((f["kind"], f["culprit"]["insn"] if f["culprit"] else None, f["cases_to_detection"],
                f["instructions"]) for f in r["findings"])
        for r in runs
    ]  # fmt: skip
    assert seen[0] == seen[1] and seen[0]
    assert runs[0]["problem_cases"] == runs[1]["problem_cases"]


def test_the_cases_drawn_do_not_depend_on_speed(tmp_path, monkeypatch):
    """A slow machine (every case run 3 ms slower) draws the same cases as a
    fast one under a case budget, shrinking included."""
    from popek.fuzz import properties
    from popek.fuzz.campaign_config import CampaignConfig
    from popek.fuzz.worker_loop import run_worker

    check = properties.check

    def campaign(name: str, delay: float) -> tuple[list[str], dict]:
        import time

        drawn: list[str] = []

        def recording(vmm_cls, case, **kw):
            drawn.append(repr(case))
            if delay:
                time.sleep(delay)
            return check(vmm_cls, case, **kw)

        monkeypatch.setattr(properties, "check", recording)
        config = CampaignConfig(
            vmm="trap-and-emulate", profile="x86", seconds=300, seed=20261127, max_cases=40,
            status_dir=str(tmp_path / name / "status"), findings_dir=str(tmp_path / name / "found"),
            db=str(tmp_path / name / "db"), distinct=False, first=False,
        )  # fmt: skip
        return drawn, run_worker(config, 0)

    fast, r1 = campaign("fast", 0.0)
    slow, r2 = campaign("slow", 0.003)
    assert r1["cases"] == r2["cases"] == 40
    assert len(fast) > 40 and fast == slow


@pytest.mark.campaign
def test_the_time_cap_is_reported(tmp_path):
    r = popek(
        "fuzz", "--vmm", "emulator", "--profile", "pg", "--cases", "1000000", "--time", "2s",
        "--json", "r.json", "--quiet", "--db", "db", "--findings", "found", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["time_capped"] is True and 0 < report["cases"] < 1000000 and report["budget"] == 1000000
    assert "TIME CAP" in r.stdout and "cut short" in r.stdout


@pytest.mark.parametrize("command", ["fuzz", "check", "verify", "equiv"])
@pytest.mark.parametrize("value", ["0", "-3", "abc"])
def test_bad_case_budgets_are_one_line_errors(tmp_path, command, value):
    target = {
        "fuzz": ["--vmm", "emulator", "--profile", "pg"], "check": ["emulator"], "verify": ["--no-proofs"],
        "equiv": ["emulator", "trap-and-emulate"],
    }[command]  # fmt: skip
    r = popek(command, *target, f"--cases={value}", cwd=tmp_path, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--cases" in r.stderr


# -- one option name, one meaning --------------------------------------------
@pytest.mark.parametrize(
    "args,message",
    [
        (["fuzz", "--vmm", "emulator", "--profile", "pg", "--min-direct-share", "2"], "--min-direct-share must be"),
        (["fuzz", "--vmm", "emulator", "--profile", "pg", "--min-direct-share", "x"], "--min-direct-share 'x'"),
        (["verify", "--no-proofs", "--innocuous-share", "1.5"], "--innocuous-share must be"),
        (["check", "emulator", "--innocuous-share", "half"], "--innocuous-share 'half'"),
    ],
)
def test_renamed_efficiency_options_check_their_values(tmp_path, args, message):
    r = popek(*args, cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_the_old_efficiency_option_warns(tmp_path):
    r = popek("fuzz", "--vmm", "emulator", "--profile", "pg", "--efficiency", "0.5", "--cases", "3",
              "--quiet", "--db", "db", "--findings", "found", "--json", "r.json", cwd=tmp_path)  # fmt: skip
    assert "--efficiency is deprecated" in r.stderr and "--min-direct-share" in r.stderr
    # the emulator runs nothing directly: each case is below the share, an efficiency finding
    assert r.returncode == 1, r.stdout + r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert [f["kind"] for f in report["findings"]] == ["efficiency"]
    r = popek("verify", "--no-proofs", "--efficiency", "2", cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "--efficiency is deprecated" in r.stderr and "--innocuous-share" in r.stderr


# -- refusals are no false alarms ----------------------------------------------
def test_refused_guests_are_not_capability_failures(capsys):
    from hypothesis import strategies as hs  # noqa: F401  (the section uses Hypothesis)

    from popek.commands.check import capabilities_section
    from popek.model.vmms.emulator import Emulator
    from popek.vmm import GuestRefused

    class RefusesOddImages(Emulator):
        """Declines every guest whose image's words add up to an odd number."""

        name = "refuses-odd-images"

        def load(self, image, *, memsize):
            if sum(image.words.values()) % 2:
                raise GuestRefused("odd image")
            super().load(image, memsize=memsize)

    assert capabilities_section(RefusesOddImages, ["pg"], examples=20) is True
    out = capsys.readouterr().out
    assert "capabilities (migration, snapshot, suspend) on pg: 20 interleavings with guest runs passed" in out
    assert "guests refused (GuestRefused, not failures): odd image" in out


@pytest.mark.campaign
def test_a_found_requirement_is_counted_not_raised_again(tmp_path):
    """OddR3 (a frequent fidelity bug, nothing unsafe): one fidelity finding,
    later fidelity problems counted, and the campaign spends its whole case
    budget looking for a safety finding that never comes."""
    sys.path.insert(0, str(HERE.parent / "fuzz"))  # tiny_vmms
    from popek.fuzz.campaign_config import CampaignConfig
    from popek.fuzz.worker_loop import run_worker

    config = CampaignConfig(
        vmm="tiny_vmms:OddR3", profile="pg", seconds=300, seed=1, max_cases=300, distinct=False, first=False,
        status_dir=str(tmp_path / "status"), findings_dir=str(tmp_path / "found"), db=str(tmp_path / "db"),
    )  # fmt: skip
    result = run_worker(config, 0)
    assert result["cases"] == 300 and not result["time_capped"]
    assert [f["requirement"] for f in result["findings"]] == ["fidelity"]
    assert result["problem_cases"]["fidelity"] > 1 and "safety" not in result["problem_cases"]
    assert len(list((tmp_path / "found").glob("*.json"))) == 1


def test_a_broken_contract_or_capability_never_matches():
    """A contract finding is named as such (not "unfaithful"), and a failed
    capability makes the row a MISMATCH: a found violation never prints MATCH."""
    from popek.fuzz.verdict import Cell

    base = dict(
        design="d", profile="x86", expected_faithful=False, expected_efficient=True, reason="",
        observed_faithful=True, counterexample=None, culprit=None, kind=None, efficiency=None,
        safety_findings=0, cases=10, seconds=1.0, finding=None, observed_efficient=True, innocuous_direct=0.9,
    )  # fmt: skip
    broken = Cell(**{**base, "observed_faithful": False, "counterexample": 2, "kind": "contract",
                     "fidelity_message": "VMM 'd': guest_state() has 1023 words of storage, the guest was given 1024"})
    assert broken.observed_text() == "contract broken (2 insns, VMM 'd': guest_state has 1023 words of storage, the guest...)"
    # declared unfaithful, but a broken contract is no agreement with that
    assert not broken.match and broken.verdict_text() == "MISMATCH (contract)"
    faithful = Cell(**{**base, "expected_faithful": True})
    assert faithful.match and faithful.verdict_text() == "MATCH"
    failed = Cell(**{**base, "expected_faithful": True, "capabilities_failed": ["snapshot"]})
    assert not failed.match and failed.verdict_text() == "MISMATCH (capabilities)"
