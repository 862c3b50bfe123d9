"""README.md stays true to the tree: its paths exist, its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from popek.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_quick_start_is_exactly_the_two_make_targets():
    block = README.split("## Quick start", 1)[1]
    code = re.search(r"```sh\n(.*?)```", block, re.S)
    assert code and code.group(1) == "make verify\nmake test\n"


def test_every_path_the_readme_names_exists():
    folders = "spec|model|popek|proofs|fuzz|docs|examples|bench|tests"
    paths = re.findall(rf"`((?:{folders})/[\w./]*)`", README)
    assert len(paths) > 10  # the reading guide is there
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"README.md names files that do not exist: {missing}"


def test_every_command_the_readme_documents_is_registered():
    documented = set(re.findall(r"^\| `popek (\w+)", README, re.M))
    assert {"asm", "disasm", "run", "isa"} <= documented
    assert documented <= set(COMMANDS), documented - set(COMMANDS)


def test_makefile_has_the_targets_the_readme_names():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in re.findall(r"`make (\w+)`", README):
        assert re.search(rf"^{target}:", makefile, re.M), target


def test_no_file_keeps_a_merge_conflict() -> None:
    """A merge resolved by hand once left both sides of a conflict, markers
    and all, in this README's reading guide; no text file of the project
    may hold one."""
    marker = re.compile(r"^(<{7} |>{7} |={7}$)", re.M)
    skip = {".git", ".venv", ".popek", "build", "dist", "__pycache__"}
    found = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if not path.is_file() or skip & set(rel.parts) or rel.parts[0].endswith(".egg-info"):
            continue
        if path.suffix not in {".py", ".md", ".s", ".toml", ".json", ".txt", ".cfg", ".html", ""}:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if marker.search(text):
            found.append(str(rel))
    assert not found, f"merge conflict markers in: {found}"
