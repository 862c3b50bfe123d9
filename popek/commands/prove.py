"""`popek prove`: the Z3 side of popek, from the command line.

* ``popek prove --profile P [--json]`` (or ``--all``): every instruction of
  the profile classified (privileged, control-, mode-, location-, bound-,
  IE- and PTBR-sensitive, sensitive, user-sensitive, innocuous), each "yes"
  with the id of its witness, then Theorem 1's and Theorem 3's conditions.
* ``popek prove --explain INSN --profile P``: the witnesses behind one
  instruction's row: the states, what the concrete machine did from each
  (replayed, not assumed), and the instruction to assemble and replay;
  with ``--programs`` also an assembly program per state that brings a
  fresh machine into it (checked by running it).
* ``popek prove --vmm trap-and-emulate --profile P`` (or ``--all``): the
  one-step simulation proof of trap-and-emulate and the user-mode safety
  proof; a failing instruction is shown with its counterexample.  Exit
  status 1 when the simulation is not proved.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from popek.cli import UserError
from popek.spec.profiles import Profile, all_profiles
from popek.spec.state import FIELD_NAMES, HALTED

VMM_PROOFS = ("trap-and-emulate",)

HEADINGS = {
    "privileged": "priv",
    "control": "ctl",
    "mode": "mode",
    "location": "loc",
    "bound": "bound",
    "ie": "ie",
    "ptbr": "ptbr",
    "sensitive": "sens",
    "user_sensitive": "user",
    "innocuous": "innoc",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prove",
        help="classify instructions and decide the Popek-Goldberg conditions with Z3",
        description=__doc__.split("\n\n", 1)[1].replace("``", "") if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--profile", help="the profile to prove things about (default pg)")
    which.add_argument("--all", action="store_true", help="every registered profile")
    p.add_argument("--explain", metavar="INSN", help="show the witnesses for one instruction")
    p.add_argument("--vmm", choices=VMM_PROOFS, help="prove a VMM design faithful and safe")
    p.add_argument("--programs", action="store_true",
                   help="with --explain: print, and check, an assembly program per witness "
                   "state that brings a fresh machine into it")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    from popek.commands.prove_partition import add_options as add_host_type  # --host-type 0

    add_host_type(p)
    p.set_defaults(func=run)


def _profiles(args: argparse.Namespace) -> list[Profile]:
    from popek.program_files import profile_named

    if args.all:
        return all_profiles()
    return [profile_named(args.profile or "pg")]  # plug-ins' profiles too


def run(args: argparse.Namespace) -> int:
    profiles = _profiles(args)
    if getattr(args, "host_type", None) is not None:
        from popek.commands.prove_partition import run_partition

        return run_partition(args, profiles)
    if args.explain:
        if args.all or args.vmm:
            raise UserError("--explain takes one --profile and no --vmm")
        return _explain(profiles[0], args.explain, as_json=args.json,
                        replay_programs=args.programs)
    if args.vmm:
        return _vmm(profiles, as_json=args.json)
    return _classify(profiles, as_json=args.json)


# --------------------------------------------------------------------------
# Classification and verdicts
# --------------------------------------------------------------------------
def _cell(fact, ids: dict[int, int]) -> str:
    if fact.answer == "yes":
        w = fact.witness
        return f"yes#{ids[id(w)]}" if w is not None else "yes"
    return {"no": "-", "unknown": "?"}[fact.answer]


def _number_witnesses(verdict) -> dict[int, int]:
    """Witness numbers in the order the report shows them: the table's
    "yes" cells, then the offenders' witnesses of being unprivileged."""
    from popek.proofs.classify import COLUMNS

    ids: dict[int, int] = {}
    shown = [c.facts[col].witness for c in verdict.classes for col in COLUMNS
             if c.facts[col].answer == "yes"]
    for cond in (verdict.theorem1, verdict.theorem3):
        shown += [w for o in cond.offenders for w in (o.sensitive, o.unprivileged)]
    for w in shown:
        if w is not None and id(w) not in ids:
            ids[id(w)] = len(ids) + 1
    return ids


def _classify(profiles: list[Profile], *, as_json: bool) -> int:
    from popek.proofs import solver
    from popek.proofs.classify import COLUMNS
    from popek.proofs.verdicts import decide

    reports = []
    unknown_before = solver.STATS["unknown"]
    for profile in profiles:
        start = time.perf_counter()
        verdict = decide(profile)
        seconds = time.perf_counter() - start
        ids = _number_witnesses(verdict)
        if as_json:
            reports.append(_classify_json(profile, verdict, ids, seconds))
            continue
        print(f"profile {profile.name}: {profile.summary}")
        rows = [["insn"] + [HEADINGS[c] for c in COLUMNS]]
        for c in verdict.classes:
            rows.append([c.insn] + [_cell(c.facts[col], ids) for col in COLUMNS])
        widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
        for r in rows:
            print("  " + "  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip())
        print("  yes#n: decided yes, witness n (replay with --explain INSN); "
              "-: proved no; ?: Z3 answered unknown")
        for cond in (verdict.theorem1, verdict.theorem3):
            print("  " + cond.sentence())
            for o in cond.offenders:
                print(f"    {o.insn}: {', '.join(o.kinds)}-sensitive (witness "
                      f"#{ids[id(o.sensitive)]}), not privileged (witness #{ids[id(o.unprivileged)]})")
        print(f"  ({seconds:.2f} s)\n")
    if as_json:
        print(json.dumps(reports if len(reports) > 1 else reports[0], indent=2))
    unknown = solver.STATS["unknown"] - unknown_before
    if unknown:
        print(f"note: {unknown} Z3 queries answered unknown (budget spent); their facts show '?'",
              file=sys.stderr)
    return 0


def _classify_json(profile: Profile, verdict, ids: dict[int, int], seconds: float) -> dict:
    from popek.proofs.classify import COLUMNS

    witnesses = {}
    rows = []
    for c in verdict.classes:
        facts = {}
        for col in COLUMNS:
            fact = c.facts[col]
            entry: dict = {"answer": fact.answer}
            if fact.witness is not None and id(fact.witness) in ids:
                entry["witness"] = ids[id(fact.witness)]
                witnesses[ids[id(fact.witness)]] = fact.witness.to_json(profile)
            if fact.note:
                entry["note"] = fact.note
            facts[col] = entry
        rows.append({"insn": c.insn, "facts": facts})
    return {
        "profile": profile.name,
        "instructions": rows,
        "theorems": [_condition_json(cond, ids) for cond in (verdict.theorem1, verdict.theorem3)],
        "witnesses": {str(k): v for k, v in sorted(witnesses.items())},
        "seconds": round(seconds, 3),
    }


def _condition_json(cond, ids: dict[int, int]) -> dict:
    return {
        "theorem": cond.theorem,
        "condition": cond.statement,
        "status": cond.status,
        "sentence": cond.sentence(),
        "offenders": [
            {"insn": o.insn, "kinds": o.kinds, "sensitive_witness": ids.get(id(o.sensitive)),
             "unprivileged_witness": ids.get(id(o.unprivileged))}
            for o in cond.offenders
        ],
        "undecided": cond.undecided,
    }


# --------------------------------------------------------------------------
# --explain
# --------------------------------------------------------------------------
def _explain(profile: Profile, name: str, *, as_json: bool, replay_programs: bool = False) -> int:
    from popek.proofs.classify import COLUMNS, classify_insn
    from popek.proofs.replay_asm import program_reproduces
    from popek.proofs.witness import CLAIMS, replay

    if name not in profile.by_name:
        from popek.spec.suggest import did_you_mean

        hint = did_you_mean(name, profile.by_name, "instructions")
        raise UserError(f"profile {profile.name!r} has no instruction {name!r}; {hint}")
    c = classify_insn(profile, profile[name])
    seen: dict[int, object] = {}
    for col in COLUMNS:
        for w in (c.facts[col].witness, c.facts[col].user_witness):
            if w is not None:
                seen.setdefault(id(w), w)
    if as_json:
        out = {
            "profile": profile.name,
            "insn": name,
            "facts": {col: c.facts[col].answer for col in COLUMNS},
            "witnesses": [],
        }
        for w in seen.values():
            r = replay(profile, w)
            out["witnesses"].append({**w.to_json(profile), "replays": r.ok, "replay": r.message})
        print(json.dumps(out, indent=2))
        return 0
    print(f"{name} on {profile.name}: " + ", ".join(
        f"{col}={c.facts[col].answer}" for col in COLUMNS))
    if not seen:
        print("no witnesses: every sensitivity question was answered no (proved for all states)")
    for w in seen.values():
        r = replay(profile, w)
        base = w.claim.removesuffix("_user")
        kind = CLAIMS.get(base) or (CLAIMS["resource"] if w.varied is not None else base)
        print(f"\nwitness {w.id}: {kind}" + (" (a user-mode state)" if w.claim.endswith("_user") else ""))
        if w.relation:
            print(f"  states: {w.relation}" + (f" (x = {w.shift:#x})" if w.shift else ""))
        for line in _state_lines(w, profile):
            print("  " + line)
        for label, rec in zip(w.labels, r.records):
            print(f"  machine from {label}: {rec.summary()}" + _post_summary(rec, w, label))
        print(f"  replayed on the concrete machine: {'yes' if r.ok else 'NO'} ({r.message})")
        print("  the instruction:")
        for line in w.assembly(profile).splitlines():
            print("    " + line)
        if replay_programs:
            for label, s in zip(w.labels, w.states):
                program, verdict = program_reproduces(profile, s)
                print(f"  replay program for {label}: {verdict}")
                if program is not None:
                    for line in program.text.splitlines():
                        print("    " + line)
    return 0


def _state_lines(w, profile: Profile) -> list[str]:
    """Each state's fields; for a pair, the second shows only what differs.
    Fields of the vtx extension are shown only on a vtx machine."""
    lines = []
    first = w.states[0]
    shown = range(len(first.S)) if profile.arch.vtx else range(HALTED + 1)
    for label, s in zip(w.labels, w.states):
        if s is first:
            fields = " ".join(f"{FIELD_NAMES[i]}={s.S[i]:#x}" for i in shown)
        else:
            fields = " ".join(f"{FIELD_NAMES[i]}={s.S[i]:#x}" for i in shown
                              if s.S[i] != first.S[i]) or "(same fields)"
        lines.append(f"{label}: {fields}")
        words = ", ".join(f"[{a:#06x}]={v:#x}" for a, v in sorted(s.mem.items())[:8])
        more = " ..." if len(s.mem) > 8 else ""
        lines.append(f"  storage: {words}{more}; other words {s.default:#x}; memsize {s.memsize}")
    return lines


def _post_summary(rec, w, label: str) -> str:
    if rec.trapped:
        return ""
    state = w.states[w.labels.index(label)]
    changed = [f"{FIELD_NAMES[i]}={v:#x}" for i, v in enumerate(rec.S) if v != state.S[i]]
    changed += [f"[{a:#06x}]={v:#x}" for a, v in sorted(rec.writes.items())]
    changed += [f"out {v:#x}" for v in rec.out]
    return ", " + (" ".join(changed) or "no change")


# --------------------------------------------------------------------------
# --vmm trap-and-emulate
# --------------------------------------------------------------------------
def _vmm(profiles: list[Profile], *, as_json: bool) -> int:
    from popek.proofs.safety import prove_safety
    from popek.proofs.simulation import PROVED, prove_trap_and_emulate, replay_sim

    status = 0
    reports = []
    for profile in profiles:
        start = time.perf_counter()
        sim = prove_trap_and_emulate(profile)
        safe = prove_safety(profile)
        seconds = time.perf_counter() - start
        if sim.status != PROVED:
            status = 1
        failures = [(x, replay_sim(profile, x.witness)) for x in sim.failures]
        if as_json:
            reports.append({
                "profile": profile.name,
                "simulation": sim.status,
                "translation_lemma": sim.fetch.status,
                "instructions": {x.insn: x.status for x in sim.results},
                "failures": [{**x.witness.to_json(), "replays": r.ok, "replay": r.message}
                             for x, r in failures],
                "unknown": [x.insn for x in sim.results if x.status == "unknown"],
                "safety": safe.status,
                "unsafe": [{"insn": x.insn, **(x.witness.to_json(profile) if x.witness else {})}
                           for x in safe.failures],
                "seconds": round(seconds, 3),
            })
            continue
        proved = sum(x.status == PROVED for x in sim.results)
        print(f"trap-and-emulate on {profile.name}: simulation {sim.status.upper()}")
        print(f"  translation lemma (fetch, loads, stores): {sim.fetch.status}")
        print(f"  direct execution commutes with alpha: {proved} of {len(sim.results)} instructions")
        for x in sim.results:
            if x.status == "unknown":
                print(f"    {x.insn}: unknown ({x.note})")
        for x, r in failures:
            w = x.witness
            print(f"    {x.insn} FAILS: {r.message}"
                  + ("" if r.ok else "  [counterexample did not replay!]"))
            vmode = "supervisor" if w.virtual.S[FIELD_NAMES_INV['mode']] else "user"
            print(f"      virtual: mode={vmode} " + " ".join(
                f"{FIELD_NAMES[i]}={w.virtual.S[i]:#x}" for i in _SHOWN))
            print(f"      real:    " + " ".join(
                f"{FIELD_NAMES[i]}={w.real.S[i]:#x}" for i in _SHOWN)
                + f"  (allocation {w.alloc_base:#x}+{w.alloc_size:#x})")
        if sim.status == PROVED:
            print("  one-step fidelity holds for every state; by induction every program "
                  "runs under the VMM as on the bare machine")
        print(f"  user-mode safety: {'proved' if safe.status == 'yes' else safe.status}"
              + "".join(f"; {x.insn} unsafe" for x in safe.failures))
        print(f"  ({seconds:.2f} s)\n")
    if as_json:
        print(json.dumps(reports if len(reports) > 1 else reports[0], indent=2))
    return status


FIELD_NAMES_INV = {v: k for k, v in FIELD_NAMES.items()}
_SHOWN = [FIELD_NAMES_INV[n] for n in ("pc", "ie", "base", "bound", "sp")]
