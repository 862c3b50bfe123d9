"""The asm, disasm, run and isa commands, run in-process through popek.cli.main."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from popek.cli import main
from popek.spec import profiles
from popek.spec.asm import assemble

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "guests" / "hello.s"


def popek(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(rc: int, out: str, err: str, *expected: str) -> None:
    """Exit code 2, one line on stderr that says what and where, no traceback."""
    assert rc == 2
    assert out == ""
    assert err.startswith("popek: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for text in expected:
        assert text in err


# -- asm ---------------------------------------------------------------------
def test_asm_prints_listing_with_instruction_text(capsys):
    rc, out, _ = popek(capsys, "asm", HELLO)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == "entry 0x0010"
    assert "0010: 0210  li r1, 0" in lines
    assert "0020: 0048" in lines  # the first data word: 'H', no instruction text


def test_asm_writes_json_image_that_matches_assembly(capsys, tmp_path):
    target = tmp_path / "hello.json"
    rc, out, _ = popek(capsys, "asm", HELLO, "-o", target)
    assert rc == 0 and "entry 0x10" in out
    doc = json.loads(target.read_text())
    image = assemble(HELLO.read_text(), profiles.get("pg"))
    assert int(doc["entry"], 0) == image.entry
    assert {int(a, 0): w for a, w in doc["words"].items()} == image.words
    assert {int(a, 0) for a in doc["code"]} == image.code


def test_asm_refuses_output_name_without_json_suffix(capsys, tmp_path):
    rc, out, err = popek(capsys, "asm", HELLO, "-o", tmp_path / "hello.bin")
    assert_user_error(rc, out, err, "hello.bin", ".json")


def test_asm_refuses_an_image_as_input(capsys, tmp_path):
    image = tmp_path / "x.json"
    image.write_text('{"entry": 16, "words": {}}')
    rc, out, err = popek(capsys, "asm", image)
    assert_user_error(rc, out, err, "disasm")


# -- disasm ------------------------------------------------------------------
def test_disasm_of_source_reassembles_to_the_same_words(capsys):
    rc, out, _ = popek(capsys, "disasm", HELLO)
    assert rc == 0
    pg = profiles.get("pg")
    again = assemble(out, pg)
    original = assemble(HELLO.read_text(), pg)
    assert again.words == original.words and again.entry == original.entry


def test_disasm_of_json_image_equals_disasm_of_source(capsys, tmp_path):
    target = tmp_path / "hello.json"
    assert popek(capsys, "asm", HELLO, "-o", target)[0] == 0
    from_image = popek(capsys, "disasm", target)
    from_source = popek(capsys, "disasm", HELLO)
    assert from_image == from_source
    assert "ld r2, 32(r1)" in from_image[1]


def test_disasm_accepts_a_hand_written_image(capsys, tmp_path):
    image = tmp_path / "halt.json"
    image.write_text(json.dumps({"entry": 16, "words": {"16": 0x3C00, "0x11": 0}, "code": [16]}))
    rc, out, _ = popek(capsys, "disasm", image)
    assert rc == 0 and "halt" in out and ".entry 0x10" in out


@pytest.mark.parametrize(
    "content, expected",
    [
        ("{not json", "not valid JSON"),
        ('{"entry": 16}', '"words"'),
        ('{"entry": 16, "words": {"zz": 1}}', "'zz' is not a number"),
        ('{"entry": 16, "words": {"16": 70000}}', "does not fit in a word"),
    ],
)
def test_disasm_rejects_bad_images(capsys, tmp_path, content, expected):
    image = tmp_path / "bad.json"
    image.write_text(content)
    rc, out, err = popek(capsys, "disasm", image)
    assert_user_error(rc, out, err, "bad.json", expected)


# -- run ---------------------------------------------------------------------
def test_run_prints_final_state_and_output(capsys):
    rc, out, _ = popek(capsys, "run", HELLO, "--profile", "pg")
    assert rc == 0
    assert "profile pg, bare machine" in out
    assert "steps   35 (halted)" in out
    assert "mode    supervisor" in out
    assert "flags   -Z--  (NZCV)" in out  # the last cmpi found the 0 terminator
    assert "r1 0x0005" in out
    assert "output  72 101 108 108 111  'Hello'" in out


def test_run_stops_after_the_given_steps(capsys):
    rc, out, _ = popek(capsys, "run", HELLO, "--profile", "x86", "--steps", "3")
    assert rc == 0
    assert "steps   3 (not halted)" in out
    assert "pc      0x0016" in out
    assert "output  (empty)" in out


def test_run_shows_user_mode_relocation_and_trap(capsys, tmp_path):
    # rti with a hand-made old PSW enters user mode at virtual 0 with
    # R = (0x100, 0x40); storage there is zero, an illegal instruction, whose
    # trap loads the new PSW: supervisor mode (0x20) at `stop`.
    src = tmp_path / "user.s"
    src.write_text(
        "start: li r1, 0\n st r1, 0(r0)\n li r1, 0\n st r1, 1(r0)\n"
        " li r1, 0x100\n st r1, 2(r0)\n li r1, 0x40\n st r1, 3(r0)\n"
        " li r1, 0x20\n st r1, 8(r0)\n li r1, stop\n st r1, 9(r0)\n"
        " li r1, 0x1000\n st r1, 11(r0)\n rti\nstop: halt\n"
    )
    rc, out, _ = popek(capsys, "run", src, "--profile", "pg", "--steps", "15")
    assert rc == 0
    assert "steps   15 (not halted)" in out
    assert "mode    user" in out
    assert "R       base 0x0100  bound 0x0040" in out
    assert "pc      0x0000" in out

    rc, out, _ = popek(capsys, "run", src, "--profile", "pg")
    assert rc == 0
    assert "steps   17 (halted)" in out  # 15, the trapped fetch, halt
    assert "mode    supervisor" in out
    assert "R       base 0x0000  bound 0x1000" in out


def test_run_needs_a_profile(capsys):
    # --profile is optional for argparse now (`popek run --restore F` needs none): a one-line error
    assert main(["run", str(HELLO)]) == 2
    err = capsys.readouterr().err
    assert "--profile" in err and err.count("\n") == 1


@pytest.mark.parametrize("memsize", ["8", "70000"])
def test_run_rejects_impossible_memsize(capsys, memsize):
    rc, out, err = popek(capsys, "run", HELLO, "--profile", "pg", "--memsize", memsize)
    assert_user_error(rc, out, err, "memsize")


def test_run_rejects_image_outside_storage(capsys, tmp_path):
    src = tmp_path / "far.s"
    src.write_text(".org 0x800\nstart: halt\n")
    rc, out, err = popek(capsys, "run", src, "--profile", "pg", "--memsize", "1024")
    assert_user_error(rc, out, err, "outside storage")


# -- isa ---------------------------------------------------------------------
def test_isa_table_shows_which_profile_privileges_popf(capsys):
    rc, pg_out, _ = popek(capsys, "isa", "--profile", "pg")
    assert rc == 0
    rc, x86_out, _ = popek(capsys, "isa", "--profile", "x86")
    assert rc == 0
    popf = {
        name: next(line for line in text.splitlines() if line.startswith("popf "))
        for name, text in (("pg", pg_out), ("x86", x86_out))
    }
    assert "0x34" in popf["pg"] and popf["pg"].endswith("Privileged.")
    assert not popf["x86"].endswith("Privileged.")
    assert pg_out.splitlines()[1].split() == ["mnemonic", "opcode", "operands", "description"]


def test_isa_markdown_lists_every_instruction(capsys):
    rc, out, _ = popek(capsys, "isa", "--profile", "hybrid", "--markdown")
    assert rc == 0
    for insn in profiles.get("hybrid").insns:
        assert f"| `{insn.name}` | {insn.opcode:#04x} |" in out


def test_isa_all_covers_every_profile(capsys):
    rc, out, _ = popek(capsys, "isa", "--all")
    assert rc == 0
    for p in profiles.all_profiles():
        assert f"profile {p.name}: {p.summary}" in out


# -- errors every command shares -----------------------------------------------
@pytest.mark.parametrize("command", ["asm", "disasm", "run"])
def test_missing_file_is_a_one_line_error(capsys, tmp_path, command):
    missing = tmp_path / "nope.s"
    rc, out, err = popek(capsys, command, missing, "--profile", "pg")
    assert_user_error(rc, out, err, f"{missing}: no such file")


@pytest.mark.parametrize("command", ["asm", "disasm", "run"])
def test_bad_assembly_names_file_line_and_column(capsys, tmp_path, command):
    src = tmp_path / "bad.s"
    src.write_text("start: li r1, 1\n       add r1, r9\n")
    rc, out, err = popek(capsys, command, src, "--profile", "pg")
    assert_user_error(rc, out, err, f"{src}:2:", "r9")
    line, col = err.split(f"{src}:")[1].split(":")[:2]
    assert (int(line), int(col)) == (2, 16)


@pytest.mark.parametrize("command", ["asm", "disasm", "run", "isa"])
def test_unknown_profile_is_a_one_line_error(capsys, command):
    args = [command] + ([] if command == "isa" else [str(HELLO)]) + ["--profile", "vax"]
    rc, out, err = popek(capsys, *args)
    assert_user_error(rc, out, err, "unknown profile 'vax'", "pg")


def test_instruction_missing_from_profile_is_an_asm_error(capsys, tmp_path):
    src = tmp_path / "jru.s"
    src.write_text("start: jru start\n")
    assert popek(capsys, "asm", src, "--profile", "hybrid")[0] == 0
    rc, out, err = popek(capsys, "asm", src, "--profile", "pg")
    assert_user_error(rc, out, err, f"{src}:1:8", "jru")


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for command in ("asm", "disasm", "run", "isa"):
        assert command in out


def test_no_command_prints_help_and_fails(capsys):
    rc, out, _ = popek(capsys)
    assert rc == 2 and "usage: popek" in out


def test_run_rejects_negative_steps(capsys):
    rc, out, err = popek(capsys, "run", HELLO, "--profile", "pg", "--steps", "-1")
    assert_user_error(rc, out, err, "--steps")


def test_image_entry_must_be_a_number_not_a_boolean(capsys, tmp_path):
    image = tmp_path / "bool.json"
    image.write_text('{"entry": true, "words": {"16": 15360}}')
    rc, out, err = popek(capsys, "run", image, "--profile", "pg")
    assert_user_error(rc, out, err, "entry True is not a number")
