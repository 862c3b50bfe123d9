"""The facts about expressions that spec/ answers once for every consumer."""

from __future__ import annotations

import pickle

from popek.fuzz.families import shape
from popek.model.analysis.may_be_sensitive import footprint as may_be_sensitive_footprint
from popek.model.codebook import ends_block
from popek.spec import profiles
from popek.spec.bits import Slot, const, inputs, load_addresses, reads_at, slot_of, var, walk
from popek.spec.footprint import falls_through, footprint
from popek.spec.sem import Sem
from popek.spec.state import PC, SP, field_width
from popek.spec.trace import trace


def test_a_slot_is_its_old_name_and_knows_its_index() -> None:
    s = Slot(PC)
    assert s == f"S{PC}" and hash(s) == hash(f"S{PC}")
    assert slot_of(s) == PC and slot_of(f"S{PC}") is None and slot_of("imm") is None
    back = pickle.loads(pickle.dumps(s))
    assert back == s and slot_of(back) == PC


def test_sem_reads_state_through_slots() -> None:
    e = Sem().get(PC)
    assert e.op == "var" and slot_of(e.args[0]) == PC and e.width == field_width(PC)


def test_walk_visits_a_shared_subterm_once() -> None:
    x = var("x", 8)
    shared = x + 1
    nodes = list(walk([shared ^ shared]))
    assert sum(1 for n in nodes if n is shared) == 1 and sum(1 for n in nodes if n is x) == 1
    assert inputs([shared, const(3, 8)]) == {"x"}


def test_one_fall_through_rule_for_every_consumer() -> None:
    """The machine ends a block wherever the generator sees control flow,
    and the analyser's footprint (traced before fall-through is added)
    agrees with the traced effects on which instructions fall through."""
    for name in ("pg", "hybrid", "x86", "vtx"):
        p = profiles.get(name)
        for insn in p.insns:
            fx = trace(insn, p.arch)
            if shape(insn, p.arch).family == "control":
                assert ends_block(fx), insn.name
            assert may_be_sensitive_footprint(insn, p.arch).falls_through == falls_through(fx), insn.name


def test_footprint_reads_slots_and_storage() -> None:
    p = profiles.get("pg")
    fp = footprint(trace(p.by_name["popf"], p.arch))
    assert fp.loads and PC in fp.reads and not fp.stores


def test_load_addresses_and_constant_reads() -> None:
    """The generator and the shadow pager ask which storage words a
    definition reads, and which fixed register or word it reads."""
    p = profiles.get("pg")
    fx = trace(p.by_name["pop"], p.arch)
    addresses = load_addresses(fx.roots())
    assert addresses and any(reads_at(x, "reg", SP) for x in walk(addresses))
    assert load_addresses([var("x", 8) + 1]) == []
    s = Sem()
    assert reads_at(s.sp, "reg", SP)
    assert not reads_at(s.sp, "reg", SP + 1) and not reads_at(s.sp, "mem", SP)
