"""`popek run --host-type 0|1|2` and `popek prove --host-type 0`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from popek.cli import main

ROOT = Path(__file__).resolve().parents[2]
SYSCALL = ROOT / "tests" / "guests" / "syscall.s"


def popek(capsys, *argv: object) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, out: str, err: str, *expected: str) -> None:
    assert rc == 2 and out == ""
    assert err.startswith("popek: error: ") and err.count("\n") == 1 and "Traceback" not in err
    for text in expected:
        assert text in err


@pytest.mark.parametrize("value", ["3", "x", "-1", "1.0", ""])
def test_a_bad_host_type_is_one_line(capsys, value):
    assert_one_line_error(*popek(capsys, "run", SYSCALL, "--profile", "pg", "--host-type", value), "--host-type must be")


@pytest.mark.parametrize("argv, expected", [
    (["--host-type", "0", "--vmm", "emulator"], "has no VMM"),
    (["--host-type", "2", "--vmm", "hardware-assisted", "--profile", "vtx"], "no host OS"),
    (["--host-type", "2", "--vmm", "nosuch.module:Thing"], "a design popek ships"),
])  # fmt: skip
def test_host_type_combinations_that_cannot_run_are_one_line(capsys, argv, expected):
    args = ["run", SYSCALL, *argv] + ([] if "--profile" in argv else ["--profile", "pg"])
    assert_one_line_error(*popek(capsys, *args), expected)


def test_type0_prints_real_modes_and_the_bare_comparison(capsys):
    rc, out, _ = popek(capsys, "run", SYSCALL, "--profile", "x86", "--host-type", "0")
    assert rc == 0
    assert "host type 0 (partitioning)" in out and "output  0 1 1 2 3 5 8 13 21 34" in out
    m = re.search(r"cpu     (\d+) steps in real supervisor mode, (\d+) in user mode; (\d+) emulated", out)
    assert m and int(m[1]) > 0 and int(m[1]) + int(m[2]) == 250 and m[3] == "0"
    assert "exactly as the bare machine" in out


def test_type2_prints_kernel_steps_per_trap_against_type1(capsys):
    rc, out, _ = popek(capsys, "run", SYSCALL, "--profile", "pg", "--host-type", "2")
    assert rc == 0
    m = re.search(r"type 2  (\d+) traps through the host kernel: (\d+) kernel steps, ([\d.]+) per trap; "
                  r"(\d+) host steps under type 1, (\d+) under type 2", out)  # fmt: skip
    assert m and int(m[1]) > 0 and float(m[3]) > 0
    assert int(m[5]) == int(m[4]) + int(m[2])
    assert "the same under type 1 and type 2" in out


def test_type1_is_the_vmm_as_it_ships(capsys):
    rc, out, _ = popek(capsys, "run", SYSCALL, "--profile", "pg", "--host-type", "1")
    assert rc == 0 and "host type 1 (bare-metal VMM)" in out and "host kernel" not in out


def test_prove_host_type_other_than_0_is_one_line(capsys):
    assert_one_line_error(*popek(capsys, "prove", "--profile", "pg", "--host-type", "2"), "change no instruction")


def test_several_guests_need_type_0(capsys):
    assert_one_line_error(*popek(capsys, "run", "--guests", f"{SYSCALL},{SYSCALL}", "--profile", "pg",
                                 "--host-type", "2"), "--host-type 0 only")  # fmt: skip


def test_type0_gives_each_guest_its_own_partition(capsys):
    hello = ROOT / "examples" / "guests" / "hello.s"
    rc, out, _ = popek(capsys, "run", "--guests", f"{SYSCALL},{hello}", "--profile", "pg", "--host-type", "0")
    assert rc == 0
    parts = re.findall(r"partition \[(0x[0-9a-f]+), (0x[0-9a-f]+)\) on CPU (\d)", out)
    assert [p[2] for p in parts] == ["0", "1"] and int(parts[0][1], 16) <= int(parts[1][0], 16)
    assert out.count("exactly as the bare machine") == 2


def test_prove_host_type_0_on_vtx_is_one_line(capsys):
    assert_one_line_error(*popek(capsys, "prove", "--profile", "vtx", "--host-type", "0"), "not combined with vtx")
