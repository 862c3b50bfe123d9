"""The design document is docs/design.md and everything points there.

README, docs/efficiency.md, docs/writing-a-vmm.md and popek/vmm.py once
cited a DESIGN.md that the repository never held (issue 14)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = (".md", ".py", ".toml", ".txt", ".s")


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / p for p in listed.splitlines() if p.endswith(SUFFIXES) and p != "tests/docs/test_design_doc.py"]


def test_no_file_cites_a_design_md_that_does_not_exist():
    files = tracked_text_files()
    assert len(files) > 50
    citing = [str(p.relative_to(ROOT)) for p in files if "DESIGN.md" in p.read_text(encoding="utf-8", errors="replace")]
    assert not citing, f"these cite DESIGN.md; the design is docs/design.md: {citing}"


def test_design_md_has_the_map_the_readme_promises():
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    for heading in ("## The parts, and which way they depend", "## The designs, and what each declares",
                    "## The three requirements, in code"):  # fmt: skip
        assert heading in design
    assert "`docs/design.md`" in (ROOT / "README.md").read_text(encoding="utf-8")
