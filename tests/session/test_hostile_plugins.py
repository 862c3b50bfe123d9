"""Every hostile-plug-in row of issue 15's bad-input matrix, run as a user
would run it: ``popek run --vmm``, ``popek check`` or ``popek fuzz
--replay`` in a subprocess.  Each must end with the expected exit status and
a message that names the plug-in, the method and what happened, never a
traceback and never a hang (the subprocess timeout only detects a hang; it
is not a speed target).

The plug-ins are in `hostile_plugins`; popek did not ship them, so each runs
in its own process (`popek.isolation`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hostile_plugins
from popek import isolation
from popek.fuzz import execute
from popek.fuzz.findings import case_blob
from popek.fuzz.guest import GuestCase, Op
from popek.session import ContractBroken, PluginCrashed, Session
from popek.spec import profiles

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
HELLO = ROOT / "examples" / "guests" / "hello.s"
HANG = 120  # seconds: a hang detector, not a speed target
CASE = GuestCase("pg", (Op("li", 1, 0, 5), Op("addi", 1, 0, 1), Op("out", 0, 1)), steps=40, chunks=(1, 39))


def popek(*args: str, tmp: Path, pythonpath: Path = HERE, env: dict | None = None) -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHONPATH=str(pythonpath), **(env or {}))
    full.pop(isolation.MODE_ENV, None)
    return subprocess.run(
        [sys.executable, "-m", "popek", *args], cwd=tmp, env=full, capture_output=True, text=True, timeout=HANG,
    )  # fmt: skip


def assert_named(proc: subprocess.CompletedProcess, status: int, *words: str) -> str:
    """Exit status, no traceback, and the one line that names what happened."""
    both = proc.stdout + proc.stderr
    assert "Traceback" not in both, both
    assert proc.returncode == status, both
    lines = [ln for ln in both.splitlines() if all(w in ln for w in words)]
    assert lines, f"no line with {words}:\n{both}"
    return lines[0]


# --------------------------------------------------------------------------
# popek run --vmm: one row per way a method can misbehave
# --------------------------------------------------------------------------
RUN_ROWS = {
    # class: words the one-line error must hold (besides the plug-in and run())
    "Loops": "within 0.2 s of processor time",
    "Sleeps": "nor within 1 s on the clock",
    "SwallowsAlarm": "killed by popek's watchdog",
    "IgnoresProf": "nor within 1 s on the clock",
    "SwallowsEverySignal": "killed by popek's watchdog",
    "BlocksSignals": "killed by popek's watchdog",
    "CatchesEverything": "killed by popek's watchdog",
    "SysExit": "raised SystemExit",
    "OsExit": "exited with status 3",
    "KillsItself": "killed (SIGKILL",
    "KeyboardInterrupts": "raised KeyboardInterrupt",
    "ExhaustsMemory": "MemoryError",
    "UnprintableError": "<str() of it raised RuntimeError>",
    "RunsTooFar": "= 35 guest steps, but run() reported 36",
    "WrongStorageLength": "words of storage, the guest was given 4096",
    "NegativeCounters": "must be a non-negative int",
    "CountersDoNotAddUp": "guest steps, but run() reported",
    "ReplacesStorage": "replaced the host's storage object",
}


# filling memory takes processor time: the limit, not the clock, must stop it
TIMEOUT = {"ExhaustsMemory": "10"}


@pytest.mark.parametrize("row", sorted(RUN_ROWS))
def test_popek_run_names_a_misbehaving_plugin(row: str, tmp_path: Path) -> None:
    cls = getattr(hostile_plugins, row)
    proc = popek("run", str(HELLO), "--profile", "pg", "--vmm", f"hostile_plugins:{row}",
                 "--timeout", TIMEOUT.get(row, "0.2"), tmp=tmp_path, env={isolation.MEMORY_ENV: "400"})  # fmt: skip
    line = assert_named(proc, 2, f"VMM {cls.name!r}", RUN_ROWS[row])
    assert proc.stderr.strip() == line, "one line on stderr"
    assert line.startswith("popek: error: ")


def test_a_raising_finalizer_is_named(tmp_path: Path) -> None:
    proc = popek("run", str(HELLO), "--profile", "pg", "--vmm", "hostile_plugins:RaisingFinalizer", tmp=tmp_path)
    assert_named(proc, 2, "VMM 'raising-finalizer'", "finalizer", "ValueError: finalizer failed")


@pytest.mark.parametrize("module", sorted(hostile_plugins.IMPORT_ROWS))
def test_a_plugin_that_misbehaves_on_import_is_named(module: str, tmp_path: Path) -> None:
    (tmp_path / f"{module}.py").write_text(hostile_plugins.IMPORT_ROWS[module])
    proc = popek("run", str(HELLO), "--profile", "pg", "--vmm", f"{module}:VMM", "--timeout", "0.2",
                 tmp=tmp_path, pythonpath=tmp_path)  # fmt: skip
    line = assert_named(proc, 2, f"VMM '{module}:VMM'", "import")
    assert proc.stderr.strip() == line


# --------------------------------------------------------------------------
# popek check: the "Done when", and the host's storage
# --------------------------------------------------------------------------
@pytest.mark.parametrize("row", ["SwallowsAlarm", "IgnoresProf"])
def test_popek_check_names_a_plugin_that_defeats_the_alarms(row: str, tmp_path: Path) -> None:
    """SIGALRM swallowed while blocked, SIGPROF ignored while looping: named
    within the bound --timeout sets (times the guard's wall factor, plus the
    watchdog's slack), and ``popek check`` exits 1 with a one-line reason."""
    started = time.monotonic()
    proc = popek("check", f"hostile_plugins:{row}", "--profile", "pg", "--cases", "5", "--workers", "1",
                 "--timeout", "0.3", "--findings", str(tmp_path / "f"), "--db", str(tmp_path / "db"),
                 tmp=tmp_path)  # fmt: skip
    elapsed = time.monotonic() - started
    line = assert_named(proc, 1, "contract: FAILED: VMM ", "run()", "did not return within")
    assert len(line) < 200
    assert elapsed < HANG


def test_popek_check_reports_a_replaced_storage_object(tmp_path: Path) -> None:
    proc = popek("check", "hostile_plugins:ReplacesStorage", "--profile", "pg", "--cases", "5", "--workers", "1",
                 "--findings", str(tmp_path / "f"), "--db", str(tmp_path / "db"), tmp=tmp_path)  # fmt: skip
    assert_named(proc, 1, "contract: FAILED: VMM 'replaces-storage'", "replaced the host's storage object")


# --------------------------------------------------------------------------
# popek fuzz: a case is a finding of its kind (the campaign's own path:
# `popek.fuzz.properties.check`, here through --replay of one case)
# --------------------------------------------------------------------------
FUZZ_ROWS = {
    "AssignsOutside": ("safety", "host word 0xffff"),
    "WritesOutside": ("safety", "host word 0xfffe"),
    "ReplacesStorage": ("contract", "replaced the host's storage object"),
    "BadReserved": ("contract", "reserved() must return ranges"),
    "OsExit": ("crash", "exited with status 3"),
    "CountersDoNotAddUp": ("contract", "guest steps, but run() reported"),
    "NegativeCounters": ("contract", "Counters.vmm_entries must be a non-negative int"),
    "WrongStorageLength": ("contract", "words of storage, the guest was given"),
    "RunsTooFar": ("safety", "the VMM did not stop within its bound"),
}


@pytest.mark.parametrize("row", sorted(FUZZ_ROWS))
def test_popek_fuzz_reports_the_plugin(row: str, tmp_path: Path) -> None:
    kind, words = FUZZ_ROWS[row]
    proc = popek("fuzz", "--vmm", f"hostile_plugins:{row}", "--profile", "pg", "--replay", case_blob(CASE),
                 tmp=tmp_path)  # fmt: skip
    line = assert_named(proc, 1, words)
    assert line.startswith(f"{kind.upper()}: "), proc.stdout


# --------------------------------------------------------------------------
# The isolation itself
# --------------------------------------------------------------------------
def _load(name: str, **kw):
    return isolation.load(f"hostile_plugins:{name}", isolate=True, **kw)


def test_isolated_and_in_process_runs_agree() -> None:
    """Determinism: the same case gives the same run either way."""
    case = GuestCase("pg", (Op("li", 1, 0, 7), Op("st", 1, 0, 0x40), Op("out", 0, 1)), steps=60, chunks=(20, 40))
    here = execute.run_vmm(hostile_plugins.Plain, case)
    there = execute.run_vmm(_load("Plain"), case)
    assert isolation.is_isolated(_load("Plain")) and not isolation.is_isolated(hostile_plugins.Plain)
    assert (there.states, there.steps, there.halted, there.counters, there.problems) == (
        here.states, here.steps, here.halted, here.counters, here.problems,
    )  # fmt: skip
    assert there.observed.direct == here.observed.direct and there.observed.host_steps == here.observed.host_steps


def test_a_dead_plugin_process_is_reaped_and_started_again() -> None:
    cls = _load("OsExit")
    ch = isolation.channel(cls.popek_plugin_spec)
    first = execute.run_vmm(cls, CASE)
    assert [p.kind for p in first.problems] == ["crash"] and "exited with status 3" in first.problems[0].message
    assert ch.proc is None  # reaped: the next request starts a new process
    again = execute.run_vmm(cls, CASE)
    assert again.problems == first.problems
    assert ch.generation >= 2


def test_the_watchdog_kills_and_reaps() -> None:
    cls = _load("SwallowsEverySignal")
    ch = isolation.channel(cls.popek_plugin_spec)
    with Session(cls, profiles.get("pg"), timeout=0.1) as s:
        pid = ch.proc.pid
        s.load(CASE.image(), memsize=CASE.memsize)
        with pytest.raises(PluginCrashed, match=r"'swallows-every-signal': run\(\) did not return within 1.5 s"):
            s.run(10)
    assert not Path(f"/proc/{pid}").exists(), "killed and reaped: no zombie"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_plugin_process_dies_with_its_parent(tmp_path: Path) -> None:
    """The parent killed while its plug-in loops with every signal ignored:
    the plug-in's process goes too (it is in a process group of its own, so
    only the parent-death signal can reach it)."""
    script = (
        "import sys\n"
        "from popek import isolation\n"
        "from popek.session import Session\n"
        "from popek.spec import profiles\n"
        "cls = isolation.load('hostile_plugins:SwallowsEverySignal', isolate=True)\n"
        "s = Session(cls, profiles.get('pg'), timeout=1000)\n"
        "print(isolation.channel(cls.popek_plugin_spec).proc.pid, flush=True)\n"
        "s.load(__import__('popek.spec.asm', fromlist=['x']).assemble('halt', profiles.get('pg')), memsize=64)\n"
        "s.run(10)\n"
    )  # fmt: skip
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(HERE)))  # fmt: skip
    try:
        child = int(parent.stdout.readline())
        assert os.getpgid(child) != os.getpgid(parent.pid), "a process group of its own"
        ticks = os.sysconf("SC_CLK_TCK")
        for _ in range(400):  # until it is in run(), looping with every signal ignored
            if _cpu_ticks(child) > ticks // 5:
                break
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait()
    for _ in range(100):
        if not Path(f"/proc/{child}").exists() or "Z" in _state(child):
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the plug-in process outlived its parent")


def _cpu_ticks(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11])
    except (OSError, IndexError, ValueError):
        return 0


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def test_in_process_a_replaced_storage_object_is_a_contract_failure() -> None:
    """The check is the session's, for trusted designs too."""
    with Session(hostile_plugins.ReplacesStorage, profiles.get("pg")) as s:
        s.load(CASE.image(), memsize=CASE.memsize)
        with pytest.raises(ContractBroken, match="replaced the host's storage object"):
            s.run(5)
