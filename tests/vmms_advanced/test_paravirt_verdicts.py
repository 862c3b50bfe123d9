"""The paravirtualizing pass keeps its verdict on a guest it has analysed
(`paravirt.check_unnoticeable`): the same guest again gets the same answer,
refusal message included, without a second analysis; any change to what the
analysis depends on (a word, the storage size, the profile) gets a new one."""

from __future__ import annotations

import pytest

from popek.model.vmms import paravirt
from popek.model.vmms.paravirt import RewriteError, rewrite
from popek.spec.image import Image
from popek.spec.profiles import get

from advanced_guests import image


@pytest.fixture
def analyses(monkeypatch) -> list:
    """The analyses the pass runs, counted (verdicts forgotten first)."""
    calls: list = []
    real = paravirt.analyse

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(paravirt, "analyse", counted)
    monkeypatch.setattr(paravirt, "_VERDICTS", {})
    return calls


def test_a_refused_guest_is_refused_again_with_the_same_reason(analyses) -> None:
    p, smc = get("x86"), image("smc", "x86")
    with pytest.raises(RewriteError) as first:
        rewrite(smc, p, 4096)
    with pytest.raises(RewriteError) as again:
        rewrite(smc, p, 4096)
    assert "reads its own instructions" in str(first.value)
    assert str(again.value) == str(first.value)
    assert len(analyses) == 1


def test_an_accepted_guest_is_analysed_once(analyses) -> None:
    p, guest = get("x86"), image("pushf", "x86")
    first, again = rewrite(guest, p, 4096), rewrite(guest, p, 4096)
    assert again == first and first.sites  # rewritten the same way, and rewritten at all
    assert len(analyses) == 1


def test_what_the_analysis_depends_on_is_part_of_the_key(analyses) -> None:
    p, guest = get("x86"), image("pushf", "x86")
    rewrite(guest, p, 4096)
    rewrite(guest, p, 2048)  # another storage size
    rewrite(image("pushf", "pg"), get("pg"), 4096)  # another profile
    words = dict(guest.words)
    last = max(guest.code)
    words[last + 8] = 0x1234  # one more data word, past the code
    rewrite(Image(words, guest.entry, dict(guest.symbols), dict(guest.lines), set(guest.code)), p, 4096)
    assert len(analyses) == 4
