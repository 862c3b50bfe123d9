"""Profiles registered by plug-ins: known to every command, and refused at
registration when they lack what popek needs (issue 16, item 5)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from popek import registry
from popek.cli import main
from popek.spec import profiles
from popek.spec.profiles import ProfileError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PLUGIN = "profile_plugins:PluginVMM"
NAME = "pg-files-plugin"


@pytest.fixture
def plugin_path(monkeypatch):
    """The plug-in importable, and imported afresh (its profile unregistered)."""
    monkeypatch.syspath_prepend(str(HERE))
    for mod in ("profile_plugins", "bad_profile_plugin"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    monkeypatch.delitem(profiles._REGISTRY, NAME, raising=False)
    yield
    profiles._REGISTRY.pop(NAME, None)


def popek(capsys, *argv: object) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("missing", ["rti", "halt"])
def test_register_refuses_a_profile_without_what_popek_needs(missing):
    derived = profiles.PG.derive(f"pg-no-{missing}", "lacks it", remove=[missing])
    with pytest.raises(ProfileError, match=f"lacks {missing}"):
        profiles.register(derived)
    assert f"pg-no-{missing}" not in {p.name for p in profiles.all_profiles()}


def test_check_of_a_plugin_with_a_bad_profile_is_one_line(capsys, plugin_path):
    rc, out, err = popek(capsys, "check", "bad_profile_plugin:NoRtiVMM", "--cases", "10")
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert "pg-no-rti" in err and "lacks rti" in err


def test_run_knows_the_profile_of_the_vmm_it_names(capsys, plugin_path):
    rc, out, err = popek(capsys, "run", ROOT / "examples" / "guests" / "hello.s", "--profile", NAME,
                         "--vmm", PLUGIN)  # fmt: skip
    assert rc == 0, err
    assert f"profile {NAME}, VMM plugin-vmm" in out


def test_fuzz_replay_knows_the_profile_of_the_vmm_it_names(capsys, plugin_path, tmp_path):
    from popek.fuzz import findings
    from popek.fuzz.guest import GuestCase, Op

    sys.path.insert(0, str(HERE))
    try:
        import profile_plugins  # noqa: F401  (registers the profile to build the blob)
    finally:
        sys.path.remove(str(HERE))
    blob = findings.case_blob(GuestCase(NAME, (Op("li", 1, 0, 5),)))
    profiles._REGISTRY.pop(NAME)  # a fresh command: the profile is not known until the VMM is loaded
    sys.modules.pop("profile_plugins")
    rc, out, err = popek(capsys, "fuzz", "--vmm", PLUGIN, "--profile", NAME, "--replay", blob)
    assert rc == 0 and "passes now" in out, err


def test_prove_knows_a_profile_from_the_profiles_entry_points(capsys, plugin_path, monkeypatch):
    from importlib.metadata import EntryPoint

    eps = [EntryPoint("files-plugin", "profile_plugins", registry.PROFILE_ENTRY_POINT_GROUP)]
    monkeypatch.setattr(registry, "entry_points",
                        lambda group: eps if group == registry.PROFILE_ENTRY_POINT_GROUP else [])  # fmt: skip
    rc, out, err = popek(capsys, "prove", "--explain", "halt", "--profile", NAME)
    assert rc == 0, err
    assert f"halt on {NAME}" in out


def test_unknown_profile_is_still_one_line(capsys):
    rc, _, err = popek(capsys, "prove", "--explain", "halt", "--profile", "no-such-profile")
    assert rc == 2 and "unknown profile 'no-such-profile'" in err
