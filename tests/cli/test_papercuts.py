"""The command line's papercuts of issue 14, one test (or a few) each.

Each test fails on the behaviour the issue reports: a traceback for a
closed pipe, ``--version`` unrecognized, ``--replay F`` demanding --vmm and
--profile, a list where "did you mean" helps, ``--help`` without examples or
exit statuses, the seed only in --json, a time budget overrun by a whole
batch and its shrinking, three different shares all called "efficiency",
"simulation FAILED" for a refutation the design table predicts, and no way
to see storage with ``popek run``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from popek import cli, help_text
from popek.cli import main
from popek.fuzz import findings, properties
from popek.fuzz.guest import GuestCase, Op

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "guests" / "hello.s"


def popek(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str, *expected: str) -> None:
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err


# -- a closed pipe ---------------------------------------------------------------
def run_into_closed_pipe(*argv: str) -> subprocess.CompletedProcess:
    """``popek ARGV | head -0``, without the race: the reader is gone before
    popek writes its first byte."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-m", "popek", *argv], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=120, cwd=ROOT)  # fmt: skip
    finally:
        os.close(write)


def test_a_closed_pipe_ends_quietly():
    done = run_into_closed_pipe("isa", "--all")
    assert done.stderr == "" and done.returncode == cli.EXIT_BROKEN_PIPE


def test_a_replay_into_a_closed_pipe_ends_quietly(finding):
    done = run_into_closed_pipe("fuzz", "--replay", finding)
    assert done.stderr == "" and done.returncode == cli.EXIT_BROKEN_PIPE


# -- --version, -q -------------------------------------------------------------------
def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert re.fullmatch(r"popek \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


@pytest.mark.parametrize("argv", [
    ["fuzz", "--vmm", "emulator", "--profile", "pg"],
    ["check", "emulator"],
    ["verify"],
    ["equiv", "emulator", "trap-and-emulate"],
    ["nest", "--profile", "pg"],
    ["migrate", "g.s", "--vmm", "emulator", "--at", "5"],
])  # fmt: skip
@pytest.mark.parametrize("flag", ["-q", "--quiet"])
def test_every_long_command_takes_quiet(argv, flag):
    assert cli.build_parser().parse_args([*argv, flag]).quiet is True


# -- --replay FILE alone --------------------------------------------------------------
# rdmode in supervisor mode: trap-and-emulate on x86 runs the guest kernel in
# user mode, so the guest reads the wrong mode (a fidelity finding)
CASE = GuestCase("x86", (Op("rdmode", 0), Op("li", 1, 0, 5)))


@pytest.fixture(scope="module")
def finding(tmp_path_factory) -> str:
    from popek import registry

    problem = properties.check(registry.load("trap-and-emulate"), CASE).first()
    assert problem is not None and problem.kind == "fidelity"
    path = tmp_path_factory.mktemp("finding") / "f.json"
    findings.write(path, vmm="trap-and-emulate", case=CASE, problem=problem, seconds=0.1, cases=1, shrunk=True)
    return str(path)


def test_replay_of_a_file_needs_nothing_else(capsys, finding):
    rc, out, err = popek(capsys, "fuzz", "--replay", finding)
    assert rc == 1 and out.startswith("FIDELITY") and "VMM trap-and-emulate, profile x86" in out, err


def test_replay_of_a_missing_file_says_which_path_to_give(capsys, tmp_path):
    rc, _, err = popek(capsys, "fuzz", "--replay", tmp_path / "README-example.json")
    one_line_error(rc, err, "no such finding file", "the path your campaign printed")


def test_replay_of_a_blob_still_needs_the_vmm(capsys, finding):
    blob = json.loads(Path(finding).read_text())["blob"]
    rc, _, err = popek(capsys, "fuzz", "--replay", blob)
    one_line_error(rc, err, "needs --vmm")


def test_a_campaign_without_vmm_is_one_line(capsys):
    rc, _, err = popek(capsys, "fuzz", "--profile", "pg", "--cases", "5")
    one_line_error(rc, err, "--vmm")


# -- did you mean -------------------------------------------------------------------
@pytest.mark.parametrize("argv, expected", [
    (["fuz"], "did you mean 'fuzz'?"),
    (["fuzz", "--vmm", "trap-and-emulat", "--profile", "pg", "--cases", "5"], "did you mean 'trap-and-emulate'?"),
    (["fuzz", "--vmm", "emulator", "--profile", "x68", "--cases", "5"], "did you mean 'x86'?"),
    (["prove", "--explain", "popff", "--profile", "x86"], "did you mean 'popf'"),
    (["isa", "--profile", "hybird"], "did you mean 'hybrid'?"),
    (["prove", "--vmm", "trap-and-emulat", "--profile", "pg"], "did you mean 'trap-and-emulate'?"),
])  # fmt: skip
def test_mistyped_names_get_did_you_mean(capsys, argv, expected):
    with_exit = None
    try:
        rc, _, err = popek(capsys, *argv)
    except SystemExit as stop:  # argparse's own choices end in SystemExit(2)
        with_exit = stop.code
        rc, err = with_exit, capsys.readouterr().err
    one_line_error(rc, err, expected)


def test_a_mistyped_instruction_in_assembly_gets_did_you_mean(capsys, tmp_path):
    src = tmp_path / "typo.s"
    src.write_text("        hlat\n", encoding="utf-8")
    rc, _, err = popek(capsys, "asm", src)
    one_line_error(rc, err, f"{src}:1:", "did you mean 'halt'?")


# -- --help -----------------------------------------------------------------------
@pytest.mark.parametrize("command", cli.COMMANDS)
def test_every_command_help_has_examples_and_exit_statuses(capsys, command):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "\nexamples:\n  popek " in out and "\nexit status:\n  0 " in out, out
    assert re.search(r"^  2 +a usage error", out, re.M)


@pytest.mark.parametrize("command", cli.COMMANDS)
def test_every_help_example_parses(command):
    """The examples are command lines that work: each parses (the
    placeholders for files aside, which the commands check, not argparse)."""
    parser = cli.build_parser()
    for example in help_text.COMMANDS[command][0]:
        argv = shlex.split(example.split("  (")[0].split(" > ")[0])
        assert argv[0] == "popek" and argv[1] == command
        args = parser.parse_args(argv[1:])
        assert args.command == command


# -- the seed, in every summary ------------------------------------------------------
def test_campaign_summary_names_its_seed():
    from popek.fuzz.campaign_config import CampaignConfig
    from popek.fuzz.campaign_report import report_from_statuses

    config = CampaignConfig(vmm="emulator", profile="pg", seed=424242)
    report = report_from_statuses(config, 1.0, [])
    assert "seed 424242" in report.summary().splitlines()[0]


def test_equiv_prints_its_seed(capsys, tmp_path):
    rc, out, _ = popek(capsys, "equiv", "emulator", "trap-and-emulate", "--profile", "pg", "--cases", "3",
                       "--seed", "77", "--findings", tmp_path / "f")  # fmt: skip
    assert rc == 0 and "seed 77" in out.splitlines()[0]


# -- --time: the deadline is the campaign's, and it stops a batch ----------------------
def _worker_config(tmp_path, **kw):
    from popek.fuzz.campaign_config import CampaignConfig

    return CampaignConfig(
        vmm="emulator", profile="pg", seconds=3600, status_dir=str(tmp_path / "status"),
        db=str(tmp_path / "db"), findings_dir=str(tmp_path / "f"), seed=3, first=False, max_cases=40, **kw,
    )  # fmt: skip


def test_a_worker_stops_at_the_campaigns_deadline_not_its_own(tmp_path):
    """The campaign's clock starts before pytest's workers do: a worker that
    timed itself from its own start ran seconds past --time."""
    from popek.fuzz.worker_status import worker_deadline

    start = 1_000.0
    assert worker_deadline(_worker_config(tmp_path, deadline=start + 5), start) == start + 5
    assert worker_deadline(_worker_config(tmp_path, deadline=None), start) == start + 3600


def test_a_worker_started_past_the_deadline_runs_one_case(tmp_path):
    """On a loaded machine pytest's workers can start after a short --time
    has run out: each still runs its first case, then stops, time capped."""
    from popek.fuzz.worker_loop import run_worker

    result = run_worker(_worker_config(tmp_path, deadline=time.time() - 1), 0)
    assert result["cases"] == 1 and result["time_capped"]


def test_a_deadline_that_passes_mid_batch_ends_the_batch(tmp_path, monkeypatch):
    """Batches were whole (20 cases, then 50, and their shrinking): the
    deadline passes after the third case, and the worker stops there."""
    from popek.fuzz import worker_loop

    real_check = properties.check
    calls = []
    clock = {"offset": 0.0}

    def check(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            clock["offset"] = 10_000.0  # the rest of the batch is past the deadline
        return real_check(*a, **kw)

    class Clock:
        def __getattr__(self, name):
            return getattr(time, name)

        def time(self):
            return time.time() + clock["offset"]

    monkeypatch.setattr(properties, "check", check)
    monkeypatch.setattr(worker_loop, "time", Clock())
    result = worker_loop.run_worker(_worker_config(tmp_path, deadline=time.time() + 600), 0)
    assert result["cases"] == 3 and result["time_capped"]


# -- efficiency: one set of names -------------------------------------------------------
def test_efficiency_figures_are_worded_alike_in_summary_table_and_json():
    from popek.fuzz.efficiency import DirectLedger, DirectRule, Efficiency, figures
    from popek.fuzz.verdict import Cell

    ledger = DirectLedger(DirectRule(frozenset({"add", "ld"}), ("supervisor",), False))
    ledger.executions.update({"add": 100, "ld": 50})
    ledger.direct.update({"add": 100, "ld": 30})
    ledger.cases = 10
    fig = figures(ledger=ledger, threshold=0.5, steps=1000, direct=458,
                  bound=Efficiency(steps=1000, emulated=542, innocuous=150, emulated_innocuous=20))  # fmt: skip
    assert fig.verdict_text() == "efficient (ld 60% direct)"
    assert "all guest steps 45.8% direct" in fig.detail_text()
    cell = Cell(design="d", profile="pg", expected_faithful=True, expected_efficient=True, reason="",
                observed_faithful=True, counterexample=None, culprit=None, kind=None, efficiency=0.458,
                safety_findings=0, cases=10, seconds=1.0, finding=None, observed_efficient=fig.efficient,
                innocuous_direct=fig.lowest_share, lowest_direct=fig.lowest_insn,
                efficiency_figures=fig.to_json())  # fmt: skip
    assert cell.efficiency_text() == fig.verdict_text() == fig.to_json()["verdict_text"]
    doc = cell.to_json()["efficiency_figures"]
    assert doc["lowest_innocuous"] == {"insn": "ld", "direct_share": 0.6}
    assert doc["all_steps_direct_share"] == 0.458


# -- verify: an expected refutation reads as one ------------------------------------------
def test_an_unexpected_refutation_still_says_so():
    from popek.commands.verify import simulation_text

    assert simulation_text("failed", True, "ld with rd=1").startswith("REFUTED (witness: ld with rd=1) (UNEXPECTED")
    assert simulation_text("proved", True, None) == "proved, as expected"
    assert simulation_text("failed", False, "popf with rd=0") == "refuted, as expected (witness: popf with rd=0)"
    # the x86 proofs themselves: tests/report/test_report.py (they are costly, so run once)


# -- popek run --show-storage ------------------------------------------------------------
def test_run_shows_a_storage_range(capsys):
    rc, out, _ = popek(capsys, "run", HELLO, "--profile", "pg", "--show-storage", "0x10+4")
    assert rc == 0
    assert out.splitlines()[-2:] == ["storage 0x0010-0x0013", "  0x0010: 0210 0000 1021 0020 .... .... .... ...."]


def test_run_under_a_vmm_shows_nonzero_storage(capsys):
    rc, out, _ = popek(capsys, "run", HELLO, "--profile", "pg", "--vmm", "trap-and-emulate", "--show-storage")
    assert rc == 0 and re.search(r"^storage: \d+ nonzero words of \d+", out, re.M)
    assert "  0x0010: 0210 .... 1021 0020 0c20 .... 2100 001e" in out  # zeros are not shown


@pytest.mark.parametrize("spec, message", [("0x10-zz", "expected A-B"), ("0x20-0x10", "empty"),
                                           ("0x10-0x2000", "storage has 4096 words")])  # fmt: skip
def test_bad_storage_range_is_one_line_before_the_run(capsys, spec, message):
    rc, out, err = popek(capsys, "run", HELLO, "--profile", "pg", "--show-storage", spec)
    one_line_error(rc, err, message)
    assert out == ""


# -- the README's Redis form, unreachable: one line --------------------------------------
def test_readme_redis_form_with_an_unreachable_host_is_one_line(tmp_path):
    """The README's command (a shipped VMM for its plug-in), with nothing
    called fuzzhub to answer: one line and exit 2 before the first case, no
    fallback to a local database (README: a decision)."""
    done = subprocess.run(
        [sys.executable, "-m", "popek", "fuzz", "--vmm", "trap-and-emulate", "--profile", "pg", "--time", "10m",
         "--workers", "2", "--db", "redis://fuzzhub:6379", "--shard", "1/2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "redis://fuzzhub:6379" in done.stderr, done.stderr
    assert not (tmp_path / ".popek" / "examples").exists()  # no local database instead


# -- equiv after verify: no finding overwritten ---------------------------------------------
def test_equiv_twice_with_one_seed_keeps_both_findings(capsys, tmp_path):
    """Issue 14: ``popek equiv`` overwrote the findings ``make verify`` had
    written, as names were seed-based; now each campaign's id is in them."""
    argv = ["equiv", "emulator", "trap-and-emulate", "--profile", "x86", "--cases", "30", "--seed", "4",
            "--findings", str(tmp_path)]  # fmt: skip
    assert main(argv) == 1 and main(argv) == 1
    capsys.readouterr()
    names = sorted(p.name for p in tmp_path.glob("*.json"))
    assert len(names) >= 2 and len(set(n.rsplit("-", 2)[0] for n in names)) == 1, names
