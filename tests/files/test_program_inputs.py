"""Programs and images as users write them, bad ones included: `asm`,
`disasm` and `run` answer a malformed file with one line, never a traceback
(issue 15's assembly and image rows), run in-process through popek.cli.main."""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from popek.cli import main
from popek.spec import profiles
from popek.spec.asm import AsmError, assemble

COMMANDS = (("asm",), ("disasm",), ("run", "--profile", "pg"))


def popek(capsys, *argv: object) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str, *expected: str) -> None:
    assert rc == 2, err
    assert err.startswith("popek: error: ") and err.count("\n") == 1, err
    for text in expected:
        assert text in err, err


# -- assembly: numbers --------------------------------------------------------
BAD_NUMBERS = {
    "leading-zero-imm": ("start: li r0, 007\n halt\n", "leading zero"),
    "leading-zero-org": (".org 0010\nstart: halt\n", "leading zero"),
    "leading-zero-memref": ("start: ld r1, 08(r2)\n halt\n", "leading zero"),
    "leading-zero-offset": ("start: li r0, start+09\n halt\n", "leading zero"),
    "huge-decimal": ("start: li r0, " + "9" * 5000 + "\n halt\n", "too long"),
    "huge-hex-word": ("start: halt\n .word 0x" + "f" * 5000 + "\n", "too long"),
    "huge-space": ("start: halt\n .space " + "1" * 4400 + "\n", "too long"),
}


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("name", sorted(BAD_NUMBERS))
def test_bad_number_is_one_assembler_line(capsys, tmp_path, command, name):
    text, expected = BAD_NUMBERS[name]
    src = tmp_path / f"{name}.s"
    src.write_text(text)
    rc, _, err = popek(capsys, *command, src)
    one_line_error(rc, err, f"{src}:", expected)


def test_plain_numbers_still_assemble():
    image = assemble("start: li r0, 0\n li r1, 10\n li r2, -0x10\n ld r3, 0(r2)\n halt\n", profiles.PG)
    assert len(image.code) == 5


# -- JSON images ----------------------------------------------------------------
BAD_IMAGES = {
    "code-is-a-number": ('{"entry": 16, "words": {"16": 1}, "code": 5}', '"code" is a list'),
    "deeply-nested": ('{"words": {"16": ' + "[" * 100_000 + "]" * 100_000 + "}}", "nested"),
    "huge-integer": ('{"words": {"16": ' + "9" * 5000 + "}}", "too long"),
    "huge-hex-string": ('{"words": {"16": "0x' + "f" * 5000 + '"}}', "too long"),
    "float-word": ('{"words": {"16": 1.5}}', "not a number"),
    "nan-word": ('{"words": {"16": NaN}}', "NaN"),
    "list-word": ('{"words": {"16": [1]}}', "not a number"),
    "words-a-list": ('{"words": [1, 2]}', '"words"'),
}


@pytest.mark.parametrize("command", COMMANDS[1:], ids=lambda c: c[0])
@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_image_is_one_line(capsys, tmp_path, command, name):
    text, expected = BAD_IMAGES[name]
    img = tmp_path / f"{name}.json"
    img.write_text(text)
    rc, _, err = popek(capsys, *command, img)
    one_line_error(rc, err, f"{img}", expected)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_program_that_is_a_fifo_is_refused_not_waited_on(capsys, tmp_path):
    fifo = tmp_path / "prog.s"
    os.mkfifo(fifo)
    rc, _, err = popek(capsys, "asm", fifo)  # the old read blocked here for ever
    one_line_error(rc, err, "not a regular file")


# -- anything at all ---------------------------------------------------------------
ASM_ALPHABET = string.ascii_letters + string.digits + " \t\n,.:;#()+-_[]{}\"'0x"
json_values = hs.recursive(
    hs.none() | hs.booleans() | hs.integers(-(1 << 70), 1 << 70) | hs.floats() | hs.text(max_size=8),
    lambda inner: hs.lists(inner, max_size=4) | hs.dictionaries(hs.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
images = hs.fixed_dictionaries(
    {"words": hs.dictionaries(hs.text(string.hexdigits + "x", max_size=6) | hs.integers().map(str), json_values,
                              max_size=4)},  # fmt: skip
    optional={"entry": json_values, "code": json_values},
)


def _answers_cleanly(capsys, rc: int) -> None:
    out, err = capsys.readouterr()
    assert rc in (0, 2), (rc, err)
    assert "Traceback" not in err
    if rc == 2:
        assert err.startswith("popek: error: ") and err.count("\n") == 1, err


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=hs.text(ASM_ALPHABET, max_size=120) | hs.text(max_size=60))
def test_random_text_is_a_result_or_one_line(capsys, tmp_path_factory, text):
    src = tmp_path_factory.mktemp("t") / "p.s"
    src.write_text(text, encoding="utf-8")
    for command in COMMANDS:
        _answers_cleanly(capsys, main([*command, str(src)] + (["--steps", "50"] if command[0] == "run" else [])))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(doc=images | json_values)
def test_random_json_is_a_result_or_one_line(capsys, tmp_path_factory, doc):
    img = tmp_path_factory.mktemp("j") / "p.json"
    img.write_text(json.dumps(doc), encoding="utf-8")
    for command in COMMANDS[1:]:
        _answers_cleanly(capsys, main([*command, str(img)] + (["--steps", "50"] if command[0] == "run" else [])))


def test_assembler_errors_are_asm_errors_for_library_callers():
    with pytest.raises(AsmError, match="leading zero"):
        assemble("li r0, 007\n", profiles.PG, file=str(Path("x.s")))
