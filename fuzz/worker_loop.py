"""One worker's share of a campaign: Hypothesis batches until its budget ends.

A worker (a pytest-xdist worker running `popek.fuzz.worker`, a cluster's
task, or a verdict cell in-process) runs `run_worker`: Hypothesis batches
under the ``popek-campaign`` settings profile, on the campaign's example
database (`popek.fuzz.example_db`), until its case budget is spent or the
deadline passes, or every requirement it can break has a finding.

Why batches: a Hypothesis test runs to ``max_examples``; a campaign runs to a
budget and a clock.  Each batch is one ``@given`` run that replays the
database first, which is how findings of earlier runs and other machines
come back at once (not the fresh findings of this campaign's other workers:
`popek.fuzz.example_db.campaign_view`).  The batches' random seeds come from one
generator seeded by the campaign seed, the shard and the worker, so shards
and workers draw different sequences and a campaign with ``--seed`` can be
repeated: batch sizes are fixed, never sized from the clock, and the
literals of whatever modules were imported before are kept out of the draw
(`_without_source_constants`).

What the worker has done goes to its status file (`popek.fuzz.worker_status`)
and its findings to the findings directory (`popek.fuzz.worker_findings`) as
it goes, so a worker that is killed loses nothing it had found.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from . import findings as fnd
from .campaign_config import CampaignConfig, breakable, new_campaign_id, requirement_of, split_cases
from .example_db import campaign_view, make_database, register_settings_profile
from .worker_findings import (
    conclude, efficiency_finding, finding_path, keep_late_witness, keep_unconcluded, long_run,
)
from .worker_status import WorkerStatus

if TYPE_CHECKING:
    from hypothesis.database import ExampleDatabase

BATCH = 50  # cases per Hypothesis run (the first run is smaller, for a quick first line)
EMPTY_BATCHES = 5  # batches in a row that ran no case: the worker gives up
SHRINK_GRACE = 3.0  # seconds past the deadline a finding may still be shrunk (most need one or two)


def worker_index() -> int:
    """This pytest-xdist worker's number (``gw3``: 3); 0 outside xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 0


def run_worker(config: CampaignConfig, index: int) -> dict:
    """One worker's share of a campaign: batches until its case budget is
    spent (or, without one, until the deadline), or until every requirement
    it can break has a finding."""
    from hypothesis import given, reject, settings

    from popek import isolation, registry

    from . import properties, strategies
    from .guest import GuestCase
    from .isa_coverage import IsaCoverage

    status_dir = Path(config.status_dir)
    status_dir.mkdir(parents=True, exist_ok=True)
    status = WorkerStatus(status_dir / f"worker-{index}.json", config, index)
    cov = None
    restore_random = lambda: None  # noqa: E731
    restore_constants = lambda: None  # noqa: E731
    if config.code_coverage:
        import coverage

        pkgs = ["popek"]  # spec, model, the built-in VMMs, the harness
        if ":" in config.vmm:  # and a plug-in's own package
            pkgs.append(config.vmm.split(":")[0].split(".")[0])
        cov = coverage.Coverage(
            data_file=str(status_dir / ".coverage"), data_suffix=True, source_pkgs=pkgs, branch=False,
        )  # fmt: skip
        cov.start()
    try:
        vmm_cls = isolation.load(config.vmm)  # a plug-in popek did not ship: its own process
        prof = registry.profile(config.profile)  # a plug-in's profile too
        excluded: list[str] = []
        reference = None
        if config.reference:
            from . import execute

            ref_cls = isolation.load(config.reference)
            isa_cov = status.coverage

            def reference(case):
                execute.run_bare(case, coverage=isa_cov)  # coverage is still the ISA's
                return execute.run_vmm(ref_cls, case, safety=False)

        def make_strategy():
            return strategies.from_profile(
                prof, max_instructions=config.max_instructions, steps=config.steps,
                exclude=excluded,
            )  # fmt: skip

        strategy = make_strategy()
        if config.direct is not None and reference is None:
            from .efficiency import DirectLedger, DirectRule

            status.ledger = DirectLedger(DirectRule.from_json(config.direct))
        if not config.campaign_id:  # run in-process (a verdict cell): an id of its own
            config.campaign_id = new_campaign_id()
        # what the campaign's other workers save stays out of this worker's
        # replays: the same cases on a quiet and on a loaded machine
        database = campaign_view(make_database(config.db), config.campaign_id, f"{config.shard[0]}.{index}")
        deadline = status.deadline
        budget = config.max_cases
        if config.cases is not None:
            budget = split_cases(config.cases, max(1, config.workers))[index % max(1, config.workers)]
        status.budget = budget
        first_batch = 20
        restore_random = _seed_hypothesis(hash((config.seed, config.shard, index)) & 0xFFFFFFFF)
        restore_constants = _without_source_constants()
        findings_dir = Path(config.findings_dir)
        batch_no = 0
        empty_batches = 0
        wanted = breakable(config)
        done: set[str] = set()  # requirements with a finding: no longer raised
        stop_at_first = (not config.distinct) if config.first is None else config.first
        # A worker goes on until every requirement it can break has a finding
        # (or its budget ends): in each batch, the first case with a problem
        # of a requirement not yet found is raised, and Hypothesis shrinks it;
        # problems of requirements already found are counted, not raised.  A
        # fidelity finding with a culprit (``distinct``) excludes the culprit
        # instruction and leaves fidelity open for the next distinct one (the
        # database key changes with the strategy: the example is not replayed).
        while not set(wanted) <= done:
            if budget is not None and status.cases >= budget:
                break
            if time.time() >= deadline and status.cases:
                status.time_capped = budget is not None
                break
            batch_no += 1
            tag = f"s{config.shard[0]}w{index}b{batch_no}-{config.seed & 0xFFFF:04x}"
            # the batch's finding: the requirement of the first problem raised
            # (then only that requirement is raised in this batch, so that
            # Hypothesis shrinks towards it), and others seen meanwhile
            current: dict[str, Any] = {"req": None, "path": None, "best": None, "tag": tag}
            pending: dict[str, dict] = {}

            def inner(case: GuestCase) -> None:
                now = time.time()
                if now >= deadline and status.cases and (current["req"] is None or now >= deadline + SHRINK_GRACE):
                    # out of time mid-batch: stop generating; a finding being
                    # shrunk gets a little longer (its file is already written)
                    if current["req"] is None:
                        status.time_capped = budget is not None
                    raise _OutOfTime
                # this case's coverage, merged below only for a generated case
                # (the runs that shrink a finding are not cases)
                case_coverage = IsaCoverage() if reference is None else None
                outcome = properties.check(
                    vmm_cls, case, efficiency=config.efficiency, label=config.vmm,
                    coverage=case_coverage, reference=reference,
                )  # fmt: skip
                if outcome.run.refused is not None:
                    status.refused += 1  # not a case: ask Hypothesis for another guest
                    reject()
                # Hypothesis stops generating at a batch's first failure: the
                # runs after it shrink that finding and are not cases
                if current["req"] is None:
                    status.cases += 1
                    if case_coverage is not None:
                        status.coverage.merge(case_coverage)
                else:
                    status.shrink_runs += 1
                if outcome.counters is not None:
                    status.direct += outcome.counters.direct
                    status.guest_steps += outcome.counters.guest_steps
                ledger = status.ledger
                if ledger is not None and current["req"] is None and outcome.bare is not None \
                        and outcome.run.observed is not None \
                        and not any(p.kind in properties.TRUSTED for p in outcome.problems):
                    ledger.add(outcome.bare, outcome.run.observed.direct)  # a faithful case: judged
                    if long_run(case) and outcome.reference.last is not None and outcome.run.last is not None:
                        ledger.add_late(outcome.bare, outcome.reference.last, outcome.run.last)
                        if status.late_witness is None:
                            keep_late_witness(status, ledger.rule, case, outcome, config.innocuous_share)
                seen = {}
                for p in outcome.problems:
                    seen.setdefault(requirement_of(p.kind), p)
                if current["req"] is None:  # counted once per generated case
                    for req in seen:
                        status.problem_cases[req] = status.problem_cases.get(req, 0) + 1
                target = current["req"]
                if target is None:
                    target = next((r for r in seen if r not in done), None)
                problem = seen.get(target) if target is not None else None
                for req, p in seen.items():  # another open requirement, seen while shrinking
                    if req not in done and req != target and req not in pending:
                        pending[req] = {
                            "req": req, "case": case, "problem": p,
                            "seconds": time.time() - status.started, "cases": status.cases,
                        }  # fmt: skip
                if problem is None:
                    status.write()
                    return
                size = case.instructions
                if current["best"] is None:  # first seen: when it was detected
                    current["req"] = target
                    current["seconds"] = time.time() - status.started
                    current["cases"] = status.cases
                if current["best"] is None or size <= current["best"]:
                    path = current["path"]  # a smaller case keeps the name first given (one file per finding)
                    if path is None or current.get("path_kind") != problem.kind:
                        path = finding_path(findings_dir, config, problem.kind, tag, case)
                    doc = fnd.write(
                        path, vmm=config.vmm, case=case, problem=problem,
                        seconds=current["seconds"], cases=current["cases"], shrunk=False,
                        reference=config.reference or "bare", durable=current["path"] is None,
                    )  # fmt: skip
                    if current["path"] is not None and current["path"] != path and doc.get("saved", True):
                        Path(current["path"]).unlink(missing_ok=True)  # the smaller case replaces it
                    if doc.get("saved", True) or current["path"] is None:
                        current["path"] = path  # (unsaved: the last file saved stays the one to replace)
                        current["path_kind"] = problem.kind
                    current["best"] = size
                    current["case"], current["problem"] = case, problem
                status.write()
                raise properties.PropertyFailed(problem.message, outcome)

            inner._hypothesis_internal_add_digest = (  # type: ignore[attr-defined]
                f"popek-campaign:{config.vmm}:{config.profile}:{strategy!r}".encode()
            )
            # Fixed batch sizes (a second or so at the usual rates), not sized
            # from the clock: a campaign with --seed draws the same cases
            # however fast the machine is.  The last batch of a case budget
            # is its remainder, so the budget is met exactly.
            batch = first_batch if batch_no == 1 else BATCH
            if budget is not None:
                batch = min(batch, budget - status.cases)
            s = register_settings_profile(database, batch, config.reuse_only)
            test = settings(s)(given(strategy)(inner))
            found = False
            cases_before = status.cases
            out_of_time = False
            try:
                test()
            except properties.PropertyFailed:
                found = True
            except _OutOfTime:
                out_of_time = True
            except KeyboardInterrupt:
                keep_unconcluded(current, pending, done, tag, config, findings_dir, status)
                raise
            except Exception as e:  # a harness bug: record it, do not spin
                status.errors.append(f"{type(e).__name__}: {e}")
                break
            concluded = []
            try:
                if current["path"] is not None:
                    concluded.append(conclude(
                        current, vmm_cls, config, reference, excluded, shrunk=found, status=status,
                    ))  # fmt: skip
                for req, entry in pending.items():  # not shrunk by Hypothesis: by `minimize` only
                    if req in done or req == current["req"]:
                        continue
                    entry["tag"] = tag + "p"  # "p": seen while another finding was shrunk
                    entry["path"] = finding_path(findings_dir, config, entry["problem"].kind, entry["tag"],
                                                  entry["case"])  # fmt: skip
                    entry["path_kind"] = entry["problem"].kind
                    concluded.append(conclude(
                        entry, vmm_cls, config, reference, excluded, shrunk=False, status=status,
                    ))  # fmt: skip
            except KeyboardInterrupt:  # in our own shrinking pass: the same
                keep_unconcluded(current, pending, done, tag, config, findings_dir, status)
                raise
            for req, culprit in concluded:
                if req == "fidelity" and config.distinct and culprit and culprit["insn"] in prof.by_name \
                        and culprit["insn"] not in excluded:
                    excluded.append(culprit["insn"])  # fidelity stays open for the next culprit
                    strategy = make_strategy()
                else:
                    done.add(req)
            if out_of_time:
                break
            seen_culprits = {f["culprit"]["insn"] for f in status.findings if f.get("culprit")}
            if concluded and config.stop_culprits and seen_culprits >= set(config.stop_culprits):
                break
            if concluded and stop_at_first:
                break
            if config.reuse_only:
                break
            # a batch that ran no case (every guest refused, say) would spin until the cap
            empty_batches = 0 if status.cases > cases_before or concluded else empty_batches + 1
            if empty_batches >= EMPTY_BATCHES:
                status.errors.append(
                    f"no case ran in {EMPTY_BATCHES} batches in a row ({status.refused} guests refused): stopped"
                )  # fmt: skip
                break
            _database_warnings(status, database)
            status.mark(prof)
            status.write(force=True)
        _database_warnings(status, database)
        if not status.timeline or status.timeline[-1][1] != status.cases:
            status.mark(prof)  # the last point: a batch cut short, or the loop left early
        # a witness where the verdict contradicts an efficient declaration
        declared = getattr(vmm_cls, "supports", {}).get(config.profile)
        if status.ledger is not None and getattr(declared, "efficient", False) \
                and not any(f["kind"] == "efficiency" for f in status.findings):
            efficiency_finding(status, vmm_cls, config, findings_dir)
    finally:
        if cov is not None:
            cov.stop()
            cov.save()
        restore_random()  # run in-process: leave Hypothesis as it was
        restore_constants()
        status.done = True
        status.write(force=True)
    return {
        "cases": status.cases, "findings": status.findings, "budget": status.budget, "errors": status.errors,
        "time_capped": status.time_capped, "problem_cases": status.problem_cases,
        "refused": status.refused, "shrink_runs": status.shrink_runs,
        "warnings": status.warnings, "db_skipped": status.db_skipped, "timeline": status.timeline,
    }  # fmt: skip


class _OutOfTime(BaseException):
    """Raised from a case when the campaign's deadline has passed.  A
    `BaseException`, like KeyboardInterrupt, so that Hypothesis stops at
    once instead of treating it as a failure to shrink (its shrinker, run
    past the deadline, cost a --time 20s campaign another 7 s)."""


def _seed_hypothesis(value: int) -> Callable[[], None]:
    """Make this worker's sequence of Hypothesis runs reproducible and
    distinct from every other worker's and shard's; returns a function that
    puts Hypothesis back as it was (for campaigns run in-process).

    ``@seed`` would do it but turns the example database off, and a
    campaign lives on its database; so this seeds the generator Hypothesis
    draws each run's seed from (a private attribute: if a later Hypothesis
    lacks it, runs are seeded from the OS, distinct but not reproducible)."""
    import random as _random

    import hypothesis.core as hc

    local = getattr(hc, "threadlocal", None)
    if local is None or not hasattr(local, "_hypothesis_global_random"):
        return lambda: None
    previous = local._hypothesis_global_random
    local._hypothesis_global_random = _random.Random(value)

    def restore() -> None:
        local._hypothesis_global_random = previous

    return restore


def _without_source_constants() -> Callable[[], None]:
    """Keep literals from popek's own source out of the cases a campaign
    draws; returns a function that puts Hypothesis back as it was.

    Hypothesis replaces about one drawn number in twenty with a literal
    found in the source of the *local* modules imported so far (its "local
    constants"; test files excluded).  Which modules those are depends on
    what ran earlier in the process: other tests, an earlier campaign, a
    VMM module imported on first use, even mid-campaign.  So one seed drew
    different cases alone and inside the full suite, and a planted bug
    found in a few dozen cases alone could take thousands after other
    tests.  popek's literals (the canary pattern, seconds per hour, cache
    sizes) are not what makes a guest interesting, and the generator picks
    those values itself (`strategies.interesting_values`,
    `strategies.kernel_addresses`), so a campaign draws with that pool
    empty: the same seed gives the same cases whatever was imported before.
    Hypothesis's own fixed constants stay.  This patches a private function;
    if a later Hypothesis lacks it, nothing changes (import-dependent again)."""
    try:
        from hypothesis.internal.conjecture import providers
        from hypothesis.internal.constants_ast import Constants
    except ImportError:
        return lambda: None
    harvest = getattr(providers, "_get_local_constants", None)
    cache = getattr(getattr(providers, "CONSTANTS_CACHE", None), "cache", None)
    if harvest is None or cache is None or getattr(harvest, "popek_pinned", False):
        return lambda: None  # (pinned already: a campaign in another thread restores it)
    none = Constants()

    def no_constants() -> Constants:
        return none

    no_constants.popek_pinned = True  # type: ignore[attr-defined]
    providers._get_local_constants = no_constants
    cache.clear()  # constants already filtered from the harvested pool

    def restore() -> None:
        providers._get_local_constants = harvest
        cache.clear()

    return restore


def _database_warnings(status: WorkerStatus, database: ExampleDatabase) -> None:
    """The example database's skipped entries, counted and named in the status."""
    status.db_skipped = getattr(database, "skipped", 0)
    for w in getattr(database, "warnings", ()):
        if w not in status.warnings:
            status.warnings.append(w)
