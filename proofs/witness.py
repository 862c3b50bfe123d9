"""Witnesses: the concrete states behind every "yes", and their replay.

A Z3 answer is believed only when the concrete machine agrees.  A witness
holds one state or a pair of states (as `ConcreteState`), the instruction's
operands, and what the property claims about them.  `replay` runs one cycle
of ``popek.model.machine.Machine`` from each state and checks

1. that the machine does what the Z3 semantics predicted for that state
   (trap or not, cause, info, post-state, storage written, output), and
2. that the property's claim holds on the machine's own results (the pair
   differs, the resource changed, the user state trapped, ...).

A witness that fails either check is a bug in one of the two back ends or
in the query, and the test suite fails on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from popek.spec.asm import format_insn
from popek.spec.encoding import decode, encode
from popek.spec.profiles import Profile
from popek.spec.state import BASE, BOUND, FIELD_NAMES, MODE, PC, RESOURCES, TIMER, USER, Cause

from .concrete import ConcreteState, StepRecord, fetch_addresses_at, predict_step, run_step

MEMORY_CAUSES = frozenset({int(Cause.MEMORY), int(Cause.PAGE)} | (
    {int(Cause.NPF)} if hasattr(Cause, "NPF") else set()
))


@dataclass
class Witness:
    """Concrete evidence for one answer about one instruction."""

    id: str  # "profile/insn/claim", unique in a report
    claim: str  # what it shows; see CLAIMS
    insn: str
    ops: tuple[int, int, int]  # rd, rs, imm
    states: list[ConcreteState]
    labels: list[str]  # one per state, e.g. "supervisor", "user"
    relation: str = ""  # how the states of a pair are related
    shift: int = 0  # location: storage and base of state 2 are state 1's moved by this
    varied: int | None = None  # resource-sensitivity: the one field that differs

    def assembly(self, profile: Profile) -> str:
        """Replayable text: the instruction at its PC, per state."""
        insn = profile[self.insn]
        rd, rs, imm = self.ops
        text = format_insn(insn, rd, rs, imm)
        w0, w1 = encode(profile, insn, rd, rs, imm)
        lines = []
        for label, s in zip(self.labels, self.states):
            lines.append(
                f"; {label}: pc={s.S[PC]:#06x} (words {w0:#06x} {w1:#06x} at its physical address)"
            )
        lines.append(f"        {text}")
        return "\n".join(lines)

    def to_json(self, profile: Profile) -> dict:
        return {
            "id": self.id,
            "claim": self.claim,
            "insn": self.insn,
            "operands": dict(zip(("rd", "rs", "imm"), self.ops)),
            "relation": self.relation,
            "states": [
                {"label": lab, **s.describe()} for lab, s in zip(self.labels, self.states)
            ],
            "assembly": self.assembly(profile),
        }


CLAIMS = {
    "privileged": "traps in user mode, not in supervisor mode (an example pair)",
    "unprivileged": "a pair differing only in mode, neither memory-traps, and the user "
    "state does not trap or the supervisor state does",
    "control": "retires and changes a resource or writes the output port",
    "mode": "differing only in mode, both retire, results differ outside mode",
    "location": "R.base and storage moved by a relocation, both retire, results differ "
    "after moving back",
    "resource": "differing only in one field, both retire, results differ outside it",
    "unsafe": "in user mode, retires and changes a resource or writes outside R",
}


@dataclass
class Result:
    """What the machine did from one state, as a whole post-state."""

    record: StepRecord
    storage: dict[int, int]  # post storage words that differ from default
    default: int


def _result(state: ConcreteState, record: StepRecord) -> Result:
    mem = dict(state.mem)
    mem.update(record.writes)
    return Result(record, {a: v for a, v in mem.items() if v != state.default}, state.default)


@dataclass
class Replay:
    ok: bool
    message: str
    records: list[StepRecord] = field(default_factory=list)


def _diff(a: Result, b: Result, *, skip: tuple[int, ...] = ()) -> list[str]:
    """Names of the parts of two results that differ."""
    out = [
        FIELD_NAMES[i]
        for i, (x, y) in enumerate(zip(a.record.S, b.record.S))
        if i not in skip and x != y
    ]
    addrs = set(a.storage) | set(b.storage)
    if a.default != b.default or any(
        a.storage.get(k, a.default) != b.storage.get(k, b.default) for k in addrs
    ):
        out.append("storage")
    if a.record.out != b.record.out:
        out.append("output")
    return out


def _unrelocate(r: Result, shift: int, mask: int) -> Result:
    S = list(r.record.S)
    S[BASE] = (S[BASE] - shift) & mask
    rec = StepRecord(r.record.trapped, r.record.cause, r.record.info, S, {}, r.record.out)
    return Result(rec, {(a - shift) & mask: v for a, v in r.storage.items()}, r.default)


def replay(profile: Profile, w: Witness) -> Replay:
    """Run the witness on the concrete machine and check the claim there."""
    records: list[StepRecord] = []
    for label, s in zip(w.labels, w.states):
        where = fetch_addresses_at(s, profile.arch)
        if where is not None:
            d = decode(profile, s.word(where[0]), s.word(where[1]))
            if d is None or (d.insn.name, (d.rd, d.rs, d.imm)) != (w.insn, w.ops):
                return Replay(False, f"{w.id}: state {label} does not hold {w.insn} {w.ops} at pc")
        if s.S[TIMER] != 0:
            return Replay(False, f"{w.id}: state {label} has a running timer; its tick "
                          "would blur the comparison")
        got = run_step(profile, s)
        want = predict_step(profile, s)
        if (got.trapped, got.cause, got.info, got.S, got.writes, got.out) != (
            want.trapped, want.cause, want.info, want.S, want.writes, want.out,
        ):
            return Replay(False, f"{w.id}: state {label}: machine {got} but Z3 predicts {want}",
                          records)
        records.append(got)
    results = [_result(s, r) for s, r in zip(w.states, records)]
    claim = w.claim
    mask = profile.arch.mask
    if claim == "privileged":
        sup, usr = records
        ok = not sup.trapped and usr.trapped
        return Replay(ok, f"supervisor: {sup.summary()}; user: {usr.summary()}", records)
    if claim == "unprivileged":
        sup, usr = records
        memtrap = any(r.trapped and r.cause in MEMORY_CAUSES for r in records)
        ok = not memtrap and (not usr.trapped or sup.trapped)
        return Replay(ok, f"supervisor: {sup.summary()}; user: {usr.summary()}", records)
    if any(r.trapped for r in records):
        return Replay(False, f"{w.id}: a state trapped: "
                      + "; ".join(r.summary() for r in records), records)
    if claim == "unsafe":
        (state,), (rec,) = w.states, records
        changed = [FIELD_NAMES[i] for i in RESOURCES if state.S[i] != rec.S[i]]
        if rec.out:
            changed.append("output")
        base, bound = state.S[BASE], state.S[BOUND]
        outside = [a for a in rec.writes if not (a - base) & mask < bound]
        if outside:
            changed.append("storage outside R at " + ", ".join(hex(a) for a in outside))
        ok = bool(changed) and state.S[MODE] == USER
        return Replay(ok, "in user mode, without a trap: " + (", ".join(changed) or "nothing"),
                      records)
    if claim in ("control", "control_user"):
        (state,), (rec,) = w.states, records
        changed = [FIELD_NAMES[i] for i in RESOURCES if state.S[i] != rec.S[i]]
        if rec.out:
            changed.append("output")
        ok = bool(changed) and (claim == "control" or state.S[MODE] == USER)
        return Replay(ok, "changed: " + (", ".join(changed) or "nothing"), records)
    if claim == "mode":
        differ = _diff(results[0], results[1], skip=(MODE,))
    elif claim in ("location", "location_user"):
        differ = _diff(results[0], _unrelocate(results[1], w.shift, mask))
    elif w.varied is not None:
        differ = _diff(results[0], results[1], skip=(w.varied,))
    else:
        return Replay(False, f"{w.id}: unknown claim {claim!r}", records)
    user_ok = not claim.endswith("_user") or any(s.S[MODE] == USER for s in w.states)
    return Replay(bool(differ) and user_ok, "results differ in: " + (", ".join(differ) or "nothing"),
                  records)
