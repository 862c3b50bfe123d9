"""The conformance check, on the built-in designs and on plug-ins that break
the contract; and the CLI's one-line errors for misbehaving plug-ins."""

from __future__ import annotations

from pathlib import Path

import pytest

from popek import registry
from popek.cli import main
from popek.conformance import ConformanceError, check_vmm

HERE = Path(__file__).resolve().parent
GUEST = str(HERE.parent / "guests" / "syscall.s")


@pytest.fixture
def broken(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(HERE))
    return lambda cls: registry.load(f"broken_vmms:{cls}")


@pytest.mark.parametrize("name", sorted(registry.BUILTINS))
def test_builtins_meet_the_contract(name: str) -> None:
    done = check_vmm(registry.load(name))
    assert any("snapshot/restore" in d for d in done)
    from popek.spec.profiles import all_profiles

    registered = {p.name for p in all_profiles()}
    expected = set(registry.load(name).supports) & registered
    assert expected
    assert {d.split("/")[0] for d in done} == expected


@pytest.mark.parametrize(
    "cls, message",
    [
        ("Raises", "run() raised RuntimeError: the virtual CPU caught fire"),
        ("WrongType", "run() returned dict, expected GuestRun"),
        ("CountsWrong", "but the runs ran"),
        ("TrapsUncounted", "counters: direct + emulated grew by 0"),
        ("BadState", "guest_state(): GuestState.regs must map exactly"),
        ("Nondeterministic", "two instances on the same guest disagree"),
        ("ForgetfulSnapshot", "restore() does not bring back the snapshot's state"),
        ("NeverHalts", "never reported the halt the guest reaches"),
        ("ShortMemory", "guest_state() has 512 words of storage, the guest was given 1024"),
    ],
)
def test_conformance_names_the_plugin_and_the_fault(broken, cls: str, message: str) -> None:
    vmm = broken(cls)
    with pytest.raises(ConformanceError) as e:
        check_vmm(vmm, ["pg"])
    assert f"VMM {vmm.name!r}" in str(e.value)
    assert message in str(e.value)


def test_conformance_bounds_a_plugin_that_loops(broken) -> None:
    with pytest.raises(ConformanceError, match=r"VMM 'loops': run\(\) did not return within 0.3 s"):
        check_vmm(broken("Loops"), ["pg"], timeout=0.3)


def test_conformance_bounds_a_plugin_that_blocks(broken) -> None:
    """The limit is processor time (a loaded machine does not trip it); a
    plug-in that sleeps uses none, and the clock limit behind it ends it."""
    with pytest.raises(ConformanceError, match=r"VMM 'sleeps': run\(\) did not return within 0.1 s"):
        check_vmm(broken("Sleeps"), ["pg"], timeout=0.1)


def test_conformance_rejects_what_is_not_a_vmm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    import broken_vmms

    with pytest.raises(ConformanceError, match="not a subclass of popek.vmm.VMM"):
        check_vmm(broken_vmms.NotAVMM)  # type: ignore[arg-type]
    with pytest.raises(ConformanceError, match="does not declare support for profile 'nosuch'"):
        check_vmm(registry.load("emulator"), ["nosuch"])


@pytest.mark.parametrize(
    "cls, extra, message",
    [
        ("Raises", [], "VMM 'raises': run() raised RuntimeError: the virtual CPU caught fire"),
        ("Loops", ["--timeout", "0.3"], "VMM 'loops': run() did not return within 0.3 s"),
        ("WrongType", [], "VMM 'wrong-type': run() returned dict, expected GuestRun"),
        ("CountsWrong", [], "VMM 'counts-wrong': counters say"),
        ("BadState", [], "VMM 'bad-state': guest_state(): GuestState.regs must map exactly"),
        ("ShortMemory", [], "VMM 'short-memory': guest_state() has 2048 words of storage"),
        ("SwallowsTimeouts", ["--timeout", "0.3"], "VMM 'swallows-timeouts': run() did not return"),
        ("NotAVMM", [], "'broken_vmms:NotAVMM' is not a subclass of popek.vmm.VMM"),
        ("Missing", [], "'broken_vmms' has no attribute 'Missing'"),
    ],
)
def test_run_reports_a_misbehaving_plugin_in_one_line(
    broken, capsys: pytest.CaptureFixture, cls: str, extra: list[str], message: str
) -> None:
    code = main(["run", GUEST, "--profile", "pg", "--vmm", f"broken_vmms:{cls}", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert message in err


def test_run_under_each_builtin_prints_state_output_and_counters(capsys: pytest.CaptureFixture) -> None:
    for name in registry.BUILTINS:
        profile = "pg" if "pg" in registry.load(name).supports else "vtx"  # hardware-assisted: vtx only
        assert main(["run", GUEST, "--profile", profile, "--vmm", name]) == 0
        out = capsys.readouterr().out
        assert f"VMM {name}" in out
        assert "output  0 1 1 2 3 5 8 13 21 34" in out
        assert "steps   250 (halted)" in out
        assert "direct  " in out and "traps   " in out


def test_run_refuses_a_profile_the_vmm_does_not_declare(broken, capsys) -> None:
    from popek.spec import profiles

    profiles.register(profiles.PG.derive("pg-test-only", "pg under another name"))
    try:
        assert main(["run", GUEST, "--profile", "pg-test-only", "--vmm", "emulator"]) == 2
    finally:
        profiles._REGISTRY.pop("pg-test-only")
    assert "does not support profile 'pg-test-only'" in capsys.readouterr().err


def test_list_shows_every_design_and_survives_a_broken_plugin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    known = {**registry.known(), "broken": "no_such_module_anywhere:VMM"}
    monkeypatch.setattr(registry, "known", lambda: known)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in registry.BUILTINS:
        assert f"{name}  (built-in" in out
    assert "trap-and-emulate" in out and "x86     not faithful, efficient" in out
    assert "capabilities: snapshot" in out
    assert "broken  (plug-in, no_such_module_anywhere:VMM)" in out
    assert "error: cannot import 'no_such_module_anywhere'" in out


def test_conformance_lists_a_refused_workload_and_fails_when_all_are() -> None:
    from popek.model.vmms.emulator import Emulator
    from popek.vmm import GuestRefused

    class RefusesLoops(Emulator):
        name = "refuses-loops"

        def load(self, image, *, memsize):
            if 0x200 in image.words:  # the conformance kernel workload has a user program there
                raise GuestRefused("no user programs here")
            super().load(image, memsize=memsize)

    class RefusesAll(Emulator):
        name = "refuses-all"

        def load(self, image, *, memsize):
            raise GuestRefused("nothing at all")

    done = check_vmm(RefusesLoops, ["pg"])
    assert "pg/kernel: refused (no user programs here)" in done
    assert "pg/short: load() resets" in done
    with pytest.raises(ConformanceError, match="refuses every conformance workload on pg"):
        check_vmm(RefusesAll, ["pg"])
