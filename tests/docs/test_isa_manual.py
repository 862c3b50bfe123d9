"""docs/isa.md is the generated manual, current, and its example runs as shown."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from popek import isa_doc
from popek.spec import profiles

ROOT = Path(__file__).resolve().parents[2]
MANUAL = ROOT / "docs" / "isa.md"


def test_committed_manual_is_current():
    # A fresh process, so that profiles registered by other tests do not count.
    fresh = subprocess.run(
        [sys.executable, "-m", "popek", "isa", "--markdown", "--all"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    assert fresh.stdout == MANUAL.read_text(encoding="utf-8"), (
        f"docs/isa.md is stale; regenerate it with: {isa_doc.REGENERATE}"
    )


def test_manual_has_every_instruction_of_every_profile():
    text = isa_doc.manual(profiles.all_profiles())
    for p in profiles.all_profiles():
        section = text.split(f"### Profile `{p.name}`", 1)[1]
        table = section.split("\n## ", 1)[0].split("\n### ", 1)[0]
        for insn in p.insns:
            assert f"| `{insn.name}` | {insn.opcode:#04x} |" in table, (p.name, insn.name)


def test_differences_name_the_x86_family_and_jru():
    text = isa_doc.manual([profiles.get("pg"), profiles.get("hybrid"), profiles.get("x86")])
    section = text.split("## How the profiles differ", 1)[1].split("\n## ", 1)[0]
    assert "adds `jru`" in section
    x86_part = section.split("`x86` compared with `pg`", 1)[1]
    changed = re.findall(r"^\| `(\w+)` \|", x86_part, re.M)
    assert changed == ["pushf", "popf", "rdmode", "rdbase", "rdbound"]


def _fenced(text: str, heading: str, lang: str) -> str:
    section = text.split(heading, 1)[1]
    m = re.search(rf"```{lang}\n(.*?)```", section, re.S)
    assert m, f"no ```{lang} block under {heading!r}"
    return m.group(1)


def test_defining_your_own_profile_example_prints_what_the_manual_says(capsys, monkeypatch):
    # The example registers a profile; keep that out of the shared registry.
    monkeypatch.setattr(profiles, "_REGISTRY", dict(profiles._REGISTRY))
    text = MANUAL.read_text(encoding="utf-8")
    code = _fenced(text, "## Defining your own profile", "python")
    expected = _fenced(text, "## Defining your own profile", "text")
    exec(compile(code, "docs/isa.md (example)", "exec"), {"__name__": "docs_example"})
    assert capsys.readouterr().out == expected
    assert profiles.get("pg-silent-popf").by_name["popf"] is not profiles.get("pg").by_name["popf"]


def test_manual_needs_a_profile():
    with pytest.raises(ValueError):
        isa_doc.manual([])
