"""`popek nest`: the command's answers and its one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from popek.cli import main

ROOT = Path(__file__).resolve().parents[2]
GUESTS = ROOT / "tests" / "guests"


def test_a_program_under_the_monitor_on_pg_is_faithful(capsys):
    assert main(["nest", "--profile", "pg", "--program", str(GUESTS / "syscall.s"), "--memsize", "4096"]) == 0
    assert "faithful" in capsys.readouterr().out


def test_two_deep_under_a_vmm(capsys):
    argv = ["nest", "--profile", "pg", "--under", "trap-and-emulate", "--cases", "3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "under trap-and-emulate" in out and "3 inner guests" in out


def test_x86_prints_the_counterexample(capsys, tmp_path):
    prog = tmp_path / "pushf.s"
    prog.write_text("start: li sp, 0x300\n        pushf\n        halt\n")
    assert main(["nest", "--profile", "x86", "--program", str(prog), "--steps", "10"]) == 1
    out = capsys.readouterr().out
    assert "FIDELITY" in out and "inner guest (assembly):" in out and "pushf" in out


def test_a_refusal_is_not_a_pass(capsys):
    argv = ["nest", "--profile", "pg", "--program", str(GUESTS / "timer.s"), "--memsize", "4096"]
    assert main(argv) == 1
    assert "refused" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--monitor", "nosuch.s"], "nosuch.s: no such file"),
        (["--under", "nosuch"], "unknown VMM 'nosuch'"),
        (["--depth", "2"], "--depth needs --under"),
        (["--program", str(GUESTS / "timer.s")], "lies outside its 1024 words"),
        (["--under", "hardware-assisted"], "does not declare profile 'pg'"),
    ],
)  # fmt: skip
def test_mistakes_are_one_line(capsys, argv, message):
    assert main(["nest", "--profile", "pg", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_quiet_prints_the_verdict_and_the_counterexample_only(capsys, tmp_path):
    argv = ["nest", "--profile", "pg", "--program", str(GUESTS / "syscall.s"), "--memsize", "4096", "-q"]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines() == ["  faithful: every compared run matched the bare machine"]
    prog = tmp_path / "pushf.s"
    prog.write_text("start: li sp, 0x300\n        pushf\n        halt\n")
    assert main(["nest", "--profile", "x86", "--program", str(prog), "--steps", "10", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "nest:" not in out and "FIDELITY" in out and "pushf" in out
