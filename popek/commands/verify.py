"""`popek verify`: the project's main check, what `make verify` runs.

1. Proofs, when ``popek.proofs`` is present: for every profile, Theorem 1's
   and Theorem 3's conditions as Z3 decides them, and the trap-and-emulate
   simulation proof.
2. Fuzzing: a campaign for every registered VMM on every profile it
   declares, in parallel.
3. The verdict table (design x profile), three requirements per cell:
   observed faithful/unfaithful (with the counterexample's length and
   culprit), observed efficient or not (the share of innocuous guest steps
   that may have run directly, against ``--innocuous-share``; see
   `popek.fuzz.efficiency`), observed safe/UNSAFE (with the witness's length
   and what it touched), what the design declares, MATCH or MISMATCH (naming
   the requirements that disagree).  Everything in it comes from the runs.

Each cell has a case budget (``--cases``, default `DEFAULT_CASES`) with a
time cap (``--time``); ``--time`` alone is a time budget, as before.

Exit status 0 when every cell matches its declaration, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

from popek import cluster
from popek.cli import UserError

from .check import (
    add_table_arguments,
    budget_text,
    innocuous_instructions,
    print_findings,
    progress_printer,
    table_options,
)

# per cell; 22 cells on 2 cores: see docs/fuzzing.md for what it costs
DEFAULT_CASES = 700


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="proofs, then fuzz every registered VMM on every profile: the verdict table")
    add_table_arguments(p, default_cases=DEFAULT_CASES, per="cell")
    p.add_argument("--designs", help="comma-separated VMM names (default every registered one)")
    p.add_argument("--profiles", help="comma-separated profiles (default every declared one)")
    p.add_argument("--no-proofs", action="store_true", help="skip the Z3 part")
    cluster.add_arguments(p)
    p.set_defaults(func=run)


def simulation_expectation(profile: str) -> bool | None:
    """Whether the design table predicts trap-and-emulate's simulation proof
    to hold on ``profile`` (the design declares itself faithful there), or
    None when it declares nothing about the profile."""
    from popek import registry

    try:
        support = registry.load("trap-and-emulate").supports.get(profile)
    except Exception:  # the design not shipped: nothing is predicted
        return None
    return None if support is None else bool(support.faithful)


def simulation_text(status: str, expected: bool | None, witness: str | None) -> str:
    """The simulation verdict as read against the design table: a refutation
    the table predicts is evidence, not a failure of the tool."""
    from popek.proofs.simulation import FAILED, PROVED

    seen = f" (witness: {witness})" if witness else ""
    if status == PROVED:
        return "proved" + (", as expected" if expected else "" if expected is None else
                           " (UNEXPECTED: the design declares this profile unfaithful)")
    if status == FAILED:
        if expected is False:
            return f"refuted, as expected{seen}"
        return f"REFUTED{seen}" + (" (UNEXPECTED: the design declares this profile faithful)" if expected else "")
    return f"{status.upper()} (Z3 could not decide)"


def witness_json(w, profile) -> dict | None:
    """A classification witness, shortened for reports: what it claims and
    the instruction that shows it."""
    if w is None:
        return None
    return {"id": w.id, "claim": w.claim, "relation": w.relation, "assembly": w.assembly(profile)}


def proofs_section(profiles: list[str]) -> tuple[list[str], dict]:
    """Lines to print and a JSON record; 'not available' if the proofs are absent."""
    try:
        from popek.proofs.classify import COLUMNS
        from popek.proofs.simulation import prove_trap_and_emulate
        from popek.proofs.verdicts import decide
    except ImportError as e:
        return [f"proofs: not available ({e})"], {"available": False}
    from popek.spec.profiles import get

    lines, record = ["proofs (Z3):"], {"available": True, "profiles": {}}
    for name in profiles:
        prof = get(name)
        start = time.perf_counter()
        try:
            verdict = decide(prof)
            sim = prove_trap_and_emulate(prof)
        except Exception as e:  # a proof engine bug must not hide the fuzzing table
            lines.append(f"  {name}: the proofs failed to run: {type(e).__name__}: {e}")
            record["profiles"][name] = {"error": str(e)}
            continue
        t1, t3 = verdict.theorem1, verdict.theorem3
        names = lambda c: ", ".join(o.insn for o in c.offenders) or "-"  # noqa: E731
        failure = next(iter(sim.failures), None) or (sim.fetch if sim.fetch.status != "proved" else None)
        witness = None
        if failure is not None:
            witness = failure.insn
            if failure.witness is not None:
                ops = ", ".join(f"{k}={v}" for k, v in zip(("rd", "rs", "imm"), failure.witness.ops))
                witness = f"{failure.insn} with {ops}"
        expected = simulation_expectation(name)
        sim_text = simulation_text(sim.status, expected, witness)
        lines.append(
            f"  {name}: Theorem 1 {t1.status} (offenders: {names(t1)}); "
            f"Theorem 3 {t3.status} (offenders: {names(t3)}); "
            f"trap-and-emulate simulation {sim_text} ({time.perf_counter() - start:.1f} s)"
        )
        record["profiles"][name] = {
            "theorem1": t1.status, "theorem1_offenders": [o.insn for o in t1.offenders],
            "theorem3": t3.status, "theorem3_offenders": [o.insn for o in t3.offenders],
            "trap_and_emulate_simulation": sim.status,
            "simulation_expected": None if expected is None else ("proved" if expected else "failed"),
            "simulation_witness": witness,
            "simulation_text": sim_text,
            "offenders": [
                {"insn": o.insn, "kinds": list(o.kinds), "theorems": [t for t, c in ((1, t1), (3, t3))
                                                                      if any(x.insn == o.insn for x in c.offenders)],
                 "sensitive": witness_json(o.sensitive, prof), "unprivileged": witness_json(o.unprivileged, prof)}
                for o in {x.insn: x for x in (*t1.offenders, *t3.offenders)}.values()
            ],
            "classification": {c.insn: {col: c.facts[col].answer for col in COLUMNS} for c in verdict.classes},
        }  # fmt: skip
    return lines, record


def run(args: argparse.Namespace) -> int:
    from popek import registry
    from popek.fuzz.verdict import format_table, notes, run_table
    from popek.spec.profiles import all_profiles
    from popek.vmm_runner import load_vmm

    registered = [p.name for p in all_profiles()]
    designs = args.designs.split(",") if args.designs else list(registry.known())
    wanted = args.profiles.split(",") if args.profiles else registered
    unknown = [p for p in wanted if p not in registered]
    if unknown:
        raise UserError(f"unknown profiles: {', '.join(unknown)}")
    address = cluster.check_options(args)  # first: its errors name the cluster's needs
    opts = table_options(args)
    cells = []
    for d in designs:
        cls = load_vmm(d)
        cells += [(d, p) for p in cls.supports if p in wanted]
    if not cells:
        raise UserError("nothing to verify: no design declares the chosen profiles")

    record: dict = {}
    if not args.no_proofs:
        lines, record["proofs"] = proofs_section(wanted)
        print("\n".join(lines), flush=True)
        print()
    where = cluster.describe(address) if address else f"{opts['workers']} at a time"
    print(f"fuzzing: {len(cells)} campaigns of {budget_text(opts['cases'], opts['seconds'])} each, "
          f"{where}, seed {opts['seed']}", flush=True)  # fmt: skip
    innocuous = innocuous_instructions(wanted)
    if address:
        run_table = partial(cluster.run_table, address=address)
    progress = None if args.quiet else progress_printer(len(cells))
    table = run_table(cells, progress=progress, innocuous=innocuous, **opts)
    print()
    print(format_table(table))
    for line in notes(table):
        print(line)
    mismatches = [c for c in table if not c.match]
    print()
    print(f"{len(table) - len(mismatches)} of {len(table)} cells MATCH the designs' declarations"
          + ("" if not mismatches else "; MISMATCH: " + ", ".join(
              f"{c.design}/{c.profile} ({c.verdict_text()[len('MISMATCH ('):-1]})" for c in mismatches)))
    if any(not c.observed_safe for c in table):
        print_findings([c for c in table if not c.observed_safe])
    if any(not c.observed_faithful or not c.observed_safe for c in table):
        print("counterexamples: " + opts["findings_dir"])
    record["table"] = [c.to_json() for c in table]
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    if args.report:  # its paths are the last lines: make verify's user looks there
        from popek.report import document, files

        doc = document.from_cells("verify", args.argv, table, seed=opts["seed"], proofs=record.get("proofs"))
        files.print_paths(files.write(args.report, doc))
    return 0 if not mismatches else 1
