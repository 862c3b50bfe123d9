"""The worked example plug-in in examples/toy_vmm, used as a user would.

Installing it with pip in a test would be slow and would change the
environment, so the test puts its directory on sys.path (what an install
does for the import) and reads its pyproject.toml for the entry point (what
an install records for `importlib.metadata`), then feeds that entry point
to the registry.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from popek import registry
from popek.cli import main
from popek.conformance import check_vmm

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "toy_vmm"
GUEST = str(Path(__file__).resolve().parent.parent / "guests" / "timer.s")


@pytest.fixture
def toy_installed(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    declared = project["project"]["entry-points"][registry.ENTRY_POINT_GROUP]
    monkeypatch.setattr(registry, "_entry_points", lambda: dict(declared))
    return declared


def test_pyproject_declares_the_entry_point(toy_installed: dict[str, str]) -> None:
    assert toy_installed == {"toy": "toy_vmm.vmm:ToyVMM"}
    assert registry.known()["toy"] == "toy_vmm.vmm:ToyVMM"
    assert registry.load("toy").name == "toy"


def test_the_example_passes_conformance(toy_installed) -> None:
    check_vmm(registry.load("toy_vmm.vmm:ToyVMM"))


def test_the_examples_own_test_suite_passes(toy_installed) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("toy_tests", EXAMPLE / "tests" / "test_toy_vmm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.test_toy_meets_the_popek_contract()


@pytest.mark.parametrize("vmm", ["toy", "toy_vmm.vmm:ToyVMM"])
def test_popek_run_runs_the_example(toy_installed, capsys: pytest.CaptureFixture, vmm: str) -> None:
    assert main(["run", GUEST, "--profile", "x86", "--vmm", vmm]) == 0
    out = capsys.readouterr().out
    assert "VMM toy" in out
    assert "output  9 14 19 24 30" in out  # the same as bare hardware
    assert "guest_trap.timer 5" in out


def test_popek_list_shows_the_example(toy_installed, capsys: pytest.CaptureFixture) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "toy  (plug-in, toy_vmm.vmm:ToyVMM)" in out
    assert "worked example" in out


def test_the_walkthrough_matches_the_example() -> None:
    """docs/writing-a-vmm.md quotes the example: the files it names exist,
    and each line of its Python snippets is in the example's source."""
    import re

    root = EXAMPLE.parents[1]
    doc = (root / "docs" / "writing-a-vmm.md").read_text()
    for path in re.findall(r"`((?:examples|model|popek|tests)/[\w/.-]+)`", doc):
        assert (root / path).exists(), path
    sources = (EXAMPLE / "toy_vmm" / "vmm.py").read_text() + (
        EXAMPLE / "tests" / "test_toy_vmm.py"
    ).read_text()
    for block in re.findall(r"```python\n(.*?)```", doc, re.S):
        for line in block.splitlines():
            code = line.split("#")[0].strip()
            assert code in sources, code
