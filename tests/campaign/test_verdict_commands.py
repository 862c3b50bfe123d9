"""popek check, equiv and verify: the verdict table comes from the runs."""

from __future__ import annotations

import json
import re

import pytest

from campaign_helpers import popek


@pytest.mark.campaign
def test_check_reports_a_mismatch_with_the_declaration(tmp_path):
    # OddR3 declares itself unfaithful everywhere: a campaign that finds it so MATCHes
    r = popek("check", "tiny_vmms:OddR3", "--profile", "pg", "--cases", "400", "--json", "t.json", cwd=tmp_path)
    assert "contract:" in r.stdout
    table = json.loads((tmp_path / "t.json").read_text())
    assert [c["profile"] for c in table] == ["pg"]
    assert table[0]["observed_faithful"] is False and table[0]["match"] is True
    assert r.returncode == 0, r.stdout + r.stderr
    # the interpreter declares itself faithful, and is
    r = popek("check", "tiny_vmms:Interpreter", "--profile", "x86", "--cases", "100", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "MATCH" in r.stdout and "faithful (" in r.stdout


@pytest.mark.campaign
def test_equiv_finds_two_vmms_different(tmp_path):
    r = popek("equiv", "emulator", "tiny_vmms:OddR3", "--profile", "pg", "--cases", "400", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "pg: DIFFERENT" in r.stdout and "emulator" in r.stdout and "r3" in r.stdout
    r = popek("equiv", "emulator", "tiny_vmms:Interpreter", "--profile", "pg", "--cases", "100", cwd=tmp_path)
    assert r.returncode == 0 and "no difference in 100 cases" in r.stdout
    # B is watched for safety too: a write past its allocation is not "no difference"
    r = popek("equiv", "emulator", "tiny_vmms:Scribbler", "--profile", "pg", "--cases", "300", "--json", "e.json",
              cwd=tmp_path)  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    (res,) = json.loads((tmp_path / "e.json").read_text())["results"]
    assert res["difference"] is None and res["unsafe"]["kind"] == "safety" and res["match"] is False
    assert "UNSAFE" in r.stdout and "MISMATCH (safety)" in r.stdout


@pytest.mark.campaign
def test_verify_table_is_computed(tmp_path):
    r = popek(
        # a case budget: the efficiency estimate of a few dozen cases is no verdict, and a
        # time budget gave a loaded machine just that (trap-and-emulate on pg: 43% at 120 cases)
        "verify", "--designs", "emulator,trap-and-emulate", "--profiles", "pg,x86", "--cases", "300",
        "--no-proofs", "--json", "v.json", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    rows = {(c["design"], c["profile"]): c for c in json.loads((tmp_path / "v.json").read_text())["table"]}
    assert set(rows) == {(d, p) for d in ("emulator", "trap-and-emulate") for p in ("pg", "x86")}
    te = rows[("trap-and-emulate", "x86")]
    assert te["observed_faithful"] is False and te["counterexample"] <= 6 and te["match"]
    assert rows[("emulator", "pg")]["efficiency"] == 0.0
    assert rows[("trap-and-emulate", "pg")]["efficiency"] > 0.2
    # efficiency is judged too (the proofs' innocuous instructions; see popek.fuzz.efficiency)
    assert rows[("emulator", "pg")]["observed_efficient"] is False
    assert rows[("trap-and-emulate", "pg")]["observed_efficient"] is True
    # per instruction, from the host's record: the emulator ran none of them directly
    assert rows[("emulator", "pg")]["innocuous_direct"] == 0.0
    assert rows[("trap-and-emulate", "pg")]["innocuous_direct"] == 1.0
    assert re.search(r"not efficient \(\w+ 0% direct\)", r.stdout)
    assert "4 of 4 cells MATCH" in r.stdout
    # three requirements per cell
    assert all(c["requirements"]["safety"]["observed"] is True for c in rows.values())
    assert rows[("emulator", "pg")]["cases"] == 300 and "safe (300 cases)" in r.stdout


def test_proofs_section_says_when_proofs_are_absent(monkeypatch):
    import sys

    from popek.commands import verify

    monkeypatch.setitem(sys.modules, "popek.proofs.simulation", None)  # import fails
    lines, record = verify.proofs_section(["pg"])
    assert record == {"available": False}
    assert lines[0].startswith("proofs: not available")


@pytest.mark.campaign
def test_check_exercises_declared_capabilities(tmp_path):
    good = popek("check", "tiny_vmms:TwoGuests", "--profile", "pg", "--time", "2s", cwd=tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "capabilities (multi-guest) on pg: 40 interleavings with guest runs passed" in good.stdout
    bad = popek("check", "tiny_vmms:SharedStorage", "--profile", "pg", "--time", "2s", cwd=tmp_path)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "capabilities (multi-guest) on pg: FAILED" in bad.stdout
