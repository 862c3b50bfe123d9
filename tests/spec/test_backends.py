"""Every back end handles every operation of the expression vocabulary.

An operation added to `popek.spec.bits` without a handler in some back end
would surface only when an instruction first used it, in whichever back end
met it first; here it fails at once, naming the back end."""

from __future__ import annotations

import pytest

from popek.model.analysis import intervals, reach
from popek.model.analysis.reach_exact import LazyEmitter
from popek.model.codegen import RENDER, Emitter
from popek.proofs.symbolic import TRANSLATE
from popek.spec.bits import BINARY, OPERATIONS, missing_handlers

BACK_ENDS = {
    "the compiler (model/codegen.py RENDER)": RENDER,
    "the compiler's lazy form (model/analysis/reach_exact.py)": LazyEmitter.handlers,
    "the Z3 translation (proofs/symbolic.py TRANSLATE)": TRANSLATE,
    "the abstract interpreter (model/analysis/reach.py ABSTRACT)": reach.ABSTRACT,
    "the abstract interpreter's exact path (model/analysis/reach.py EXACT)": reach.EXACT,
}


@pytest.mark.parametrize("name", sorted(BACK_ENDS))
def test_every_back_end_handles_every_operation(name: str) -> None:
    assert missing_handlers(BACK_ENDS[name]) == [], f"{name} lacks a handler"


@pytest.mark.parametrize("table", ["CONCRETE", "RULES"])
def test_the_interval_arithmetic_has_every_binary_operation(table: str) -> None:
    """Member by member (CONCRETE) and past that, by rule (RULES)."""
    assert missing_handlers(getattr(intervals, table), BINARY) == []


def test_the_emitter_uses_its_table() -> None:
    assert Emitter.handlers is RENDER


def test_a_missing_handler_is_named() -> None:
    assert missing_handlers({op: None for op in OPERATIONS if op != "xor"}) == ["xor"]
