"""`popek prove` from the command line."""

from __future__ import annotations

import json

import pytest

from popek.cli import main


def test_table_and_verdicts_for_x86(capsys: pytest.CaptureFixture) -> None:
    assert main(["prove", "--profile", "x86"]) == 0
    out = capsys.readouterr().out
    assert "Theorem 1's condition fails" in out and "Theorem 3's condition fails" in out
    assert "sufficient, not necessary" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.startswith("  ") and line.split() and line.split()[0] in ("popf", "add")}
    assert rows["add"][1:] == ["-"] * 9 + ["yes"]
    assert rows["popf"][2].startswith("yes#")  # control-sensitive, with a witness id


def test_json_report_names_its_witnesses(capsys: pytest.CaptureFixture) -> None:
    assert main(["prove", "--profile", "hybrid", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    t1, t3 = report["theorems"]
    assert (t1["status"], t3["status"]) == ("fails", "holds")
    assert [o["insn"] for o in t1["offenders"]] == ["jru"]
    jru = next(r for r in report["instructions"] if r["insn"] == "jru")
    wid = jru["facts"]["control"]["witness"]
    assert report["witnesses"][str(wid)]["insn"] == "jru"
    assert str(t1["offenders"][0]["unprivileged_witness"]) in report["witnesses"]


def test_explain_shows_replayed_witnesses_and_assembly(capsys: pytest.CaptureFixture) -> None:
    assert main(["prove", "--explain", "popf", "--profile", "x86"]) == 0
    out = capsys.readouterr().out
    assert "witness popf/control" in out and "witness popf/mode" in out
    assert "replayed on the concrete machine: yes" in out
    assert "replayed on the concrete machine: NO" not in out
    assert "        popf" in out


def test_explain_an_innocuous_instruction(capsys: pytest.CaptureFixture) -> None:
    assert main(["prove", "--explain", "add", "--profile", "pg"]) == 0
    assert "innocuous=yes" in capsys.readouterr().out


def test_vmm_proof_passes_on_pg_and_fails_on_x86(capsys: pytest.CaptureFixture) -> None:
    assert main(["prove", "--vmm", "trap-and-emulate", "--profile", "pg"]) == 0
    assert "simulation PROVED" in capsys.readouterr().out
    assert main(["prove", "--vmm", "trap-and-emulate", "--profile", "x86"]) == 1
    out = capsys.readouterr().out
    assert "simulation FAILED" in out and "popf FAILS" in out
    assert "did not replay" not in out


def test_vmm_json(capsys: pytest.CaptureFixture) -> None:
    assert main(["prove", "--vmm", "trap-and-emulate", "--profile", "x86", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["simulation"] == "failed" and report["safety"] == "yes"
    popf = next(f for f in report["failures"] if f["insn"] == "popf")
    assert popf["replays"] is True


@pytest.mark.parametrize("argv", [
    ["prove", "--profile", "nosuch"],
    ["prove", "--explain", "nosuch", "--profile", "pg"],
    ["prove", "--explain", "popf", "--all"],
])
def test_user_mistakes_are_one_line_errors(argv, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("popek: error:") and len(err.strip().splitlines()) == 1


def test_explain_programs_reach_the_witness_state(capsys: pytest.CaptureFixture) -> None:
    assert main(["prove", "--explain", "rdmode", "--profile", "x86", "--programs"]) == 0
    out = capsys.readouterr().out
    verdicts = [line for line in out.splitlines() if "replay program for" in line]
    assert verdicts and all("reproduces the witness's step exactly" in v for v in verdicts)
    assert "        rti" in out


def test_setup_programs_replay_the_x86_offenders() -> None:
    """For every state of every x86 offender's witnesses, the assembly
    program brings a fresh machine there and the instruction then does the
    same as from the witness state."""
    from popek.proofs.replay_asm import program_reproduces
    from popek.proofs.verdicts import decide
    from popek.spec.profiles import get

    profile = get("x86")
    made = 0
    for o in decide(profile).theorem1.offenders:
        for w in (o.sensitive, o.unprivileged):
            for s in w.states:
                program, verdict = program_reproduces(profile, s)
                if program is not None:
                    made += 1
                    assert verdict == "reproduces the witness's step exactly", (w.id, verdict)
    assert made >= 10
