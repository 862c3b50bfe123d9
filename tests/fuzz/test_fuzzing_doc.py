"""docs/fuzzing.md's example test suite runs as written, with plain pytest."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "fuzzing.md"


def example() -> str:
    text = DOC.read_text(encoding="utf-8")
    m = re.search(r"<!-- example: test_my_vmm.py -->\n```python\n(.*?)```", text, re.S)
    assert m, "docs/fuzzing.md lost its example test"
    return m.group(1)


def test_the_documented_example_suite_passes(tmp_path):
    (tmp_path / "test_my_vmm.py").write_text(example(), encoding="utf-8")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_vmm.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "3 passed" in r.stdout


def test_the_documented_example_fails_for_an_unfaithful_vmm(tmp_path):
    """The same suite, pointed at trap-and-emulate (unfaithful on x86), fails
    with the counterexample report as the message."""
    text = example().replace(
        "from popek.model.vmms.emulator import Emulator as MyVMM  # your class here",
        "from popek.model.vmms.trap_and_emulate import TrapAndEmulate as MyVMM",
    )
    (tmp_path / "test_my_vmm.py").write_text(text, encoding="utf-8")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_vmm.py", "-k", "x86"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 1, r.stdout[-2000:]
    assert "FIDELITY: guest state differs" in r.stdout
    assert "guest (assembly):" in r.stdout
