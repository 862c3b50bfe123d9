"""Fuzzing campaigns: many processes, one example database, findings on disk.

A campaign is one VMM on one profile for a time budget.  The parent process
(`run_campaign`, behind ``popek fuzz``) starts pytest with pytest-xdist,
``-n WORKERS --dist each``, on ``popek/fuzz/worker.py``; every worker runs
`run_worker`: Hypothesis batches under the ``popek-campaign`` settings
profile (a real example database: a directory, or Redis) until the deadline.

Why batches: a Hypothesis test runs to ``max_examples``; a campaign runs to a
clock.  Each batch is one ``@given`` run that replays the database first,
which is how findings of other workers, earlier runs and other machines come
back at once.  The batches' random seeds come from one generator seeded by
the campaign seed, the shard and the worker, so shards and workers draw
different sequences and a campaign with ``--seed`` can be repeated.

Workers talk to the parent only through files in the campaign's status
directory: ``worker-N.json`` (cases, ISA coverage, findings, efficiency),
rewritten atomically about twice a second, so the live progress line and the
final report need nothing from a worker that was killed.  A finding is
written to the findings directory the moment it is seen.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import findings as fnd
from .campaign_config import (
    CONFIG_ENV,
    REQUIREMENTS,
    CampaignConfig,
    breakable,
    new_campaign_id,
    requirement_of,
    split_cases,
)
from .example_db import check_database, check_directory, is_redis, make_database, register_settings_profile

BATCH = 50  # cases per Hypothesis run (the first run is smaller, for a quick first line)
FOCUS_ABOVE = 6  # counterexamples longer than this get a focused search (`_focus`)
FOCUS_EXAMPLES = 300
FOCUS_ROUNDS = 3
MINIMIZE_TRIES = 300  # runs `minimize` may spend on one finding
MINIMIZE_CAP = 30.0  # seconds: a cap for a very slow VMM, not the budget
EMPTY_BATCHES = 5  # batches in a row that ran no case: the worker gives up
SHRINK_GRACE = 3.0  # seconds past the deadline a finding may still be shrunk (most need one or two)
WORKER_FILE = Path(__file__).with_name("worker.py")


# --------------------------------------------------------------------------
# A worker
# --------------------------------------------------------------------------
def worker_deadline(config: CampaignConfig, started: float) -> float:
    """When a worker that started at ``started`` stops starting work: its
    time budget from its own start, or the campaign's end if that comes
    first.  (Its first case runs whatever the clock says: a loaded machine
    can take longer than a short --time to start pytest's workers, and a
    campaign that ran no case would report nothing.)"""
    own = started + config.seconds
    return own if config.deadline is None else min(own, config.deadline)


class _Status:
    """What one worker has done; written to worker-N.json."""

    def __init__(self, path: Path, config: CampaignConfig, index: int):
        from .isa_coverage import IsaCoverage

        self.path = path
        self.config = config
        self.index = index
        self.started = time.time()
        self.deadline = worker_deadline(config, self.started)
        self.cases = 0
        self.coverage = IsaCoverage()
        self.findings: list[dict] = []
        self.direct = 0
        self.guest_steps = 0
        self.refused = 0  # guests the VMM declined (GuestRefused)
        # runs of cases while Hypothesis shrank a finding (not in ``cases``)
        self.shrink_runs = 0
        # per requirement: cases with a problem breaking it, counted whether
        # or not they were raised (a requirement already found is not again)
        self.problem_cases: dict[str, int] = {}
        self.budget = config.max_cases
        self.time_capped = False  # the time cap stopped it short of its case budget
        self.errors: list[str] = []
        self.warnings: list[str] = []  # what did not stop the campaign (skipped database entries)
        self.db_skipped = 0  # example-database entries skipped as corrupt
        self.done = False
        self._last_write = 0.0
        self.ledger = None  # `DirectLedger`, when efficiency is judged per instruction
        # [seconds, cases, ISA coverage, situation coverage] after each batch:
        # the report's coverage-over-time plot (popek.report)
        self.timeline: list[list[float]] = []
        self.late_witness = None  # (case, Problem): a long run whose end ran emulated

    def mark(self, profile) -> None:
        """One point of the timeline, after a batch."""
        from . import situations

        self.coverage.settle()
        reached = situations.to_json(dict(self.coverage.situations), self.coverage.observed, profile)
        self.timeline.append([round(time.time() - self.started, 2), self.cases,
                              round(self.coverage.fraction(profile), 4), reached.get("fraction", 0.0)])  # fmt: skip

    def write(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last_write < 0.5:
            return
        self._last_write = now
        doc = {
            "worker": self.index,
            "pid": os.getpid(),
            "started": self.started,
            "elapsed": now - self.started,
            "cases": self.cases,
            "coverage": self.coverage.to_json(),
            "situations": self.coverage.situations_json(),
            "findings": self.findings,
            "direct": self.direct,
            "guest_steps": self.guest_steps,
            "refused": self.refused,
            "shrink_runs": self.shrink_runs,
            "problem_cases": self.problem_cases,
            "direct_ledger": None if self.ledger is None else self.ledger.to_json(),
            "budget": self.budget,
            "time_capped": self.time_capped,
            "errors": self.errors,
            "warnings": self.warnings,
            "db_skipped": self.db_skipped,
            "timeline": self.timeline,
            "done": self.done,
        }
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(doc), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as e:  # a full disk: the worker goes on, its result still returned
            tmp.unlink(missing_ok=True)
            note = f"status file {self.path} not written: {e.strerror or e}"
            if note not in self.errors:
                print(f"popek: worker {self.index}: {note}", file=sys.stderr)


def _seed_hypothesis(value: int):
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


def _without_source_constants():
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


def _minimize(current: dict, vmm_cls, config: CampaignConfig, reference=None,
              seconds: float = MINIMIZE_CAP) -> None:
    """After Hypothesis's shrinking, `popek.fuzz.minimize`'s pass."""
    from . import properties
    from .minimize import minimize

    kind = current["problem"].kind
    tries = [0]

    def outcome(case):
        return properties.check(
            vmm_cls, case, efficiency=config.efficiency, label=config.vmm, reference=reference
        )

    def still_fails(case) -> bool:
        # a budget of tries, not of seconds: the same finding shrinks to the
        # same case on a quiet and on a loaded machine (the seconds are a cap)
        tries[0] += 1
        return tries[0] <= MINIMIZE_TRIES and outcome(case).first((kind,)) is not None

    small = minimize(current["case"], still_fails, seconds=seconds)
    if small != current["case"]:
        problem = outcome(small).first((kind,))
        if problem is not None:
            current["case"], current["problem"] = small, problem


def _focus(current: dict, vmm_cls, config: CampaignConfig, culprit: dict, excluded: list[str]) -> None:
    """A long counterexample whose culprit is known: look for a short one.

    Bugs first seen deep in an operating system (a handler, a time slice)
    often show in two kernel instructions too, but shrinking cannot always
    get there: the failure hangs on the scaffold's timing.  So search the
    simplest guests (kernel code only) for a case with the same culprit, and
    let Hypothesis shrink that; keep it if it is shorter."""
    from hypothesis import HealthCheck, Phase, given, settings

    from popek.spec import profiles

    from . import properties, strategies
    from .families import shape

    target = culprit["insn"]
    prof = profiles.get(config.profile)
    if target not in prof.by_name:  # a fetch fault or an interrupt: no instruction to aim at
        return
    # the culprit's own family, and what sets up values and the stack
    families = tuple(dict.fromkeys((shape(prof[target], prof.arch).family, "alu", "memory")))
    strategy = strategies.from_profile(
        prof, os_scaffold=False, max_instructions=8, steps=config.steps, exclude=excluded,
        families=families,
    )  # fmt: skip

    kind = current["problem"].kind

    def same_bug(case) -> bool:
        if properties.check(vmm_cls, case, label=config.vmm).first((kind,)) is None:
            return False
        hit = properties.first_divergence(vmm_cls, case)
        return hit is not None and hit[1] == target

    best: dict = {}

    class Found(Exception):
        """The search found a case with the culprit: Hypothesis shrinks it."""

    @settings(
        max_examples=FOCUS_EXAMPLES, database=None, deadline=None,
        phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(strategy)
    def search(case) -> None:
        if same_bug(case):
            if "case" not in best or case.instructions <= best["case"].instructions:
                best["case"] = case
            raise Found()

    for _round in range(FOCUS_ROUNDS):  # one run sometimes misses what the next finds
        try:
            search()
        except Exception:  # Found (perhaps wrapped by Hypothesis), or the VMM failing otherwise
            pass
        if "case" in best:
            break
    small = best.get("case")
    if small is None:
        return
    if small.instructions < current["case"].instructions:
        problem = properties.check(vmm_cls, small, label=config.vmm).first((kind,))
        if problem is not None:
            current["case"], current["problem"] = small, problem
            hit = properties.first_divergence(vmm_cls, small)
            if hit:
                culprit.update(step=hit[0], insn=hit[1], mode=hit[2])


def _culprit(vmm_cls, case, problem) -> dict | None:
    """The instruction at which a fidelity finding first diverges."""
    from . import properties

    if problem.kind != "fidelity":
        return None
    try:
        hit = properties.first_divergence(vmm_cls, case)
    except Exception:  # the VMM misbehaving while stepped: no culprit named
        return None
    if hit is None:
        return None
    step, insn, mode = hit
    return {"step": step, "insn": insn, "mode": mode}


def _conclude(entry: dict, vmm_cls, config: CampaignConfig, reference, excluded: list[str], *,
              shrunk: bool, status: "_Status") -> tuple[str, dict | None]:
    """A batch's finding made final: our own shrinking pass, the culprit
    (fidelity), a focused search for a short one, the file rewritten, and
    the entry in the worker's status.  Returns (requirement, culprit)."""
    # past the campaign's deadline, the finding is kept as shrunk so far:
    # --time is a promise about when the command ends
    left = status.deadline - time.time()
    _minimize(entry, vmm_cls, config, reference, seconds=min(MINIMIZE_CAP, max(left, 0.5)))
    culprit = None
    if reference is None:
        culprit = _culprit(vmm_cls, entry["case"], entry["problem"])
        if culprit and entry["case"].instructions > FOCUS_ABOVE and time.time() < status.deadline:
            _focus(entry, vmm_cls, config, culprit, excluded)
    earlier = Path(entry["path"])
    path = earlier  # shrunk: the same name, so that a path already printed or mirrored stays good
    if entry.get("path_kind") != entry["problem"].kind:  # shrunk into another kind: that kind's name
        path = _finding_path(earlier.parent, config, entry["problem"].kind, entry["tag"], entry["case"])
    doc = fnd.write(
        path, vmm=config.vmm, case=entry["case"], problem=entry["problem"],
        seconds=entry["seconds"], cases=entry["cases"], shrunk=shrunk,
        reference=config.reference or "bare", culprit=culprit,
    )  # fmt: skip
    if earlier != path and doc.get("saved", True):  # shrunk further, or to another kind: the new file replaces it
        earlier.unlink(missing_ok=True)
    req = requirement_of(doc["kind"])
    status.findings.append(_status_entry(doc, str(path), req, culprit, status))
    status.write(force=True)
    return req, culprit


def _finding_path(directory: Path, config: CampaignConfig, kind: str, tag: str, case) -> Path:
    return fnd.finding_path(directory, config.vmm, config.profile, kind, tag,
                            campaign=config.campaign_id, digest=case.digest())  # fmt: skip


def _status_entry(doc: dict, path: str, req: str, culprit: dict | None, status: "_Status") -> dict:
    """A finding as the worker reports it.  One that could not be saved
    carries its whole report (assembly, and a replay line with the case
    blob), so that the campaign's summary prints it and nothing is lost."""
    entry = {
        "path": path, "kind": doc["kind"], "requirement": req, "message": doc["message"],
        "instructions": doc["instructions"], "uses": doc["uses"],
        "culprit": culprit,
        "seconds_to_detection": doc["seconds_to_detection"],
        "cases_to_detection": doc["cases_to_detection"],
    }  # fmt: skip
    if not doc.get("saved", True):
        entry.update(saved=False, save_error=doc["save_error"], report=doc["report"], replay=doc["replay"])
        # also as an error: `popek check`/`verify` print a cell's errors, with the replay line
        status.errors.append(f"the {doc['kind']} finding could not be saved ({doc['save_error']}); "
                             f"replay it with: {doc['replay']}")  # fmt: skip
        print(f"popek: could not save the {doc['kind']} finding ({doc['save_error']}); "
              f"it is:\n{doc['report']}", file=sys.stderr, flush=True)  # fmt: skip
    return entry


def worker_index() -> int:
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 0


def _long_run(case) -> bool:
    """Is the last chunk of ``case`` late enough in its run to be judged on
    its own for efficiency (`DirectLedger.add_late`)?"""
    from .strategies import LATE_FROM

    return len(case.chunks) > 1 and sum(case.chunks[:-1]) >= LATE_FROM


def _keep_late_witness(status: "_Status", rule, case, outcome, threshold: float) -> None:
    """A long run whose last chunk ran innocuous instructions emulated
    (below ``threshold`` of their executions there) is the witness of a
    late-efficiency verdict: no short guest can show it."""
    from .efficiency import declared_executions
    from .execute import Problem

    want = declared_executions(rule, outcome.reference.last)
    low = [
        (name, sum(modes.values()), outcome.run.last.get(name, 0)) for name, modes in sorted(want.items())
        if outcome.run.last.get(name, 0) < threshold * sum(modes.values())
    ]  # fmt: skip
    if low:
        at = sum(case.chunks[:-1])
        said = "; ".join(f"{n} ran directly in {min(d, k)} of {k} executions" for n, k, d in low[:3])
        status.late_witness = (case, Problem("efficiency", f"after guest step {at} (the last {case.chunks[-1]} "
                                                           f"steps of {sum(case.chunks)}): {said}"))  # fmt: skip


def _efficiency_finding(status: "_Status", vmm_cls, config: CampaignConfig, findings_dir: Path) -> None:
    """The campaign's cases judged an innocuous instruction emulated (its
    direct share below ``innocuous_share``): find a short guest that shows
    it and write it as a finding, like any other (`popek.fuzz.witness`)."""
    from .efficiency import DirectRule
    from .witness import describe_share

    low = status.ledger.emulated(config.innocuous_share)
    if not low:
        return
    worst = low[0]
    if worst.late and status.late_witness is not None:  # the long run itself is the witness
        found = status.late_witness
    else:
        found = _short_witness(status, vmm_cls, config, worst)
    verdict = (
        f"not efficient: {describe_share(worst)} over {status.ledger.cases} faithful cases "
        f"(needs {config.innocuous_share:.0%})"
    )
    _write_efficiency_finding(status, config, findings_dir, low, worst, found, verdict)


def _short_witness(status: "_Status", vmm_cls, config: CampaignConfig, worst):
    """A short guest in which ``worst``'s instruction ran emulated, or None."""
    from .efficiency import DirectRule
    from .witness import efficiency_witness

    try:
        rule = status.ledger.rule  # the witness is sought in the modes the share was judged in
        rule = DirectRule(rule.innocuous, frozenset(worst.modes), rule.paged)
        found = efficiency_witness(
            vmm_cls, config.profile, rule, worst.insn, steps=config.steps, seed=config.seed,
            label=config.vmm,
        )  # fmt: skip
    except Exception as e:  # a harness failure: said, and the verdict stands without a witness
        status.errors.append(f"efficiency witness search failed: {type(e).__name__}: {e}")
        found = None
    return found


def _write_efficiency_finding(status: "_Status", config: CampaignConfig, findings_dir: Path, low, worst, found,
                              verdict: str) -> None:  # fmt: skip
    """Write the efficiency verdict's finding (with its witness, if any)."""
    from .witness import describe_share

    entry = {
        "path": None, "kind": "efficiency", "requirement": "efficiency", "message": verdict,
        "instructions": None, "uses": [], "culprit": None, "emulated_insn": worst.insn,
        "seconds_to_detection": round(time.time() - status.started, 2), "cases_to_detection": status.cases,
        "emulated": [describe_share(e) for e in low[:5]],
    }  # fmt: skip
    if found is not None:
        case, problem = found
        problem.message = f"{problem.message}; campaign: {verdict}"
        tag = f"s{config.shard[0]}w{status.index}eff-{config.seed & 0xFFFF:04x}"
        path = _finding_path(findings_dir, config, "efficiency", tag, case)
        doc = fnd.write(
            path, vmm=config.vmm, case=case, problem=problem, seconds=entry["seconds_to_detection"],
            cases=status.cases, shrunk=not worst.late, reference="bare",  # a long run is kept whole
        )  # fmt: skip
        entry.update(path=str(path), message=doc["message"], instructions=doc["instructions"], uses=doc["uses"])
        if not doc.get("saved", True):
            saved = _status_entry(doc, str(path), "efficiency", None, status)
            entry.update({k: saved[k] for k in ("saved", "save_error", "report", "replay")})
    status.findings.append(entry)
    status.write(force=True)


class _OutOfTime(BaseException):
    """Raised from a case when the campaign's deadline has passed.  A
    `BaseException`, like KeyboardInterrupt, so that Hypothesis stops at
    once instead of treating it as a failure to shrink (its shrinker, run
    past the deadline, cost a --time 20s campaign another 7 s)."""


def _database_warnings(status: "_Status", database) -> None:
    """The example database's skipped entries, counted and named in the status."""
    status.db_skipped = getattr(database, "skipped", 0)
    for w in getattr(database, "warnings", ()):
        if w not in status.warnings:
            status.warnings.append(w)


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
    status = _Status(status_dir / f"worker-{index}.json", config, index)
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
        database = make_database(config.db)
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
                    if _long_run(case) and outcome.reference.last is not None and outcome.run.last is not None:
                        ledger.add_late(outcome.bare, outcome.reference.last, outcome.run.last)
                        if status.late_witness is None:
                            _keep_late_witness(status, ledger.rule, case, outcome, config.innocuous_share)
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
                        path = _finding_path(findings_dir, config, problem.kind, tag, case)
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
            except Exception as e:  # a harness bug: record it, do not spin
                status.errors.append(f"{type(e).__name__}: {e}")
                break
            concluded = []
            if current["path"] is not None:
                concluded.append(_conclude(
                    current, vmm_cls, config, reference, excluded, shrunk=found, status=status,
                ))  # fmt: skip
            for req, entry in pending.items():  # not shrunk by Hypothesis: by `minimize` only
                if req in done or req == current["req"]:
                    continue
                entry["tag"] = tag + "p"  # "p": seen while another finding was shrunk
                entry["path"] = _finding_path(findings_dir, config, entry["problem"].kind, entry["tag"],
                                              entry["case"])  # fmt: skip
                entry["path_kind"] = entry["problem"].kind
                concluded.append(_conclude(
                    entry, vmm_cls, config, reference, excluded, shrunk=False, status=status,
                ))  # fmt: skip
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
            _efficiency_finding(status, vmm_cls, config, findings_dir)
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



# --------------------------------------------------------------------------
# The parent
# --------------------------------------------------------------------------
def _efficiency_json(e) -> dict | None:
    if e is None:
        return None
    share = None if e.direct_share is None else round(e.direct_share, 4)
    return {"innocuous_steps": e.innocuous, "emulated_innocuous_at_least": e.emulated_innocuous,
            "direct_share_at_most": share}  # fmt: skip


@dataclass
class CampaignReport:
    config: CampaignConfig
    seconds: float
    cases: int
    workers: list[dict] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)
    coverage: Any = None  # IsaCoverage
    code_coverage: float | None = None
    interrupted: bool = False
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    db_skipped: int = 0  # example-database entries skipped as corrupt
    # the profile's innocuous instructions (from the proofs), when the caller
    # knows them: the summary then says what the counts prove about P&G's
    # efficiency (popek.fuzz.efficiency)
    innocuous: frozenset[str] | None = None

    @property
    def cases_per_second(self) -> float:
        """Sum over workers of each worker's own rate (start-up excluded)."""
        return sum(w["cases"] / w["elapsed"] for w in self.workers if w.get("elapsed"))

    @property
    def efficiency(self) -> float | None:
        steps = sum(w.get("guest_steps", 0) for w in self.workers)
        return sum(w.get("direct", 0) for w in self.workers) / steps if steps else None

    def direct_ledger(self):
        """The workers' `DirectLedger` s merged (efficiency per instruction), or None."""
        from .efficiency import DirectLedger, DirectRule

        if self.config.direct is None:
            return None
        ledger = DirectLedger(DirectRule.from_json(self.config.direct))
        for w in self.workers:
            if w.get("direct_ledger"):
                ledger.merge(DirectLedger.from_json(ledger.rule, w["direct_ledger"]))
        return ledger

    def efficiency_figures(self):
        """`popek.fuzz.efficiency.Figures`: the verdict and figures, named
        as the verdict table and the reports name them."""
        from .efficiency import figures

        return figures(
            ledger=self.direct_ledger(), threshold=self.config.innocuous_share,
            steps=sum(w.get("guest_steps", 0) for w in self.workers),
            direct=sum(w.get("direct", 0) for w in self.workers), bound=self.judged_efficiency(),
            inefficient_finding=any(f["kind"] == "efficiency" for f in self.findings),
        )  # fmt: skip

    def judged_efficiency(self):
        """`popek.fuzz.efficiency.Efficiency` over the campaign, or None."""
        from .efficiency import judge

        steps = sum(w.get("guest_steps", 0) for w in self.workers)
        if self.innocuous is None or not steps or self.coverage is None:
            return None
        direct = sum(w.get("direct", 0) for w in self.workers)
        return judge(self.coverage, steps=steps, direct=direct, innocuous=self.innocuous)

    @property
    def faithful_so_far(self) -> bool:
        return not any(requirement_of(f["kind"]) == "fidelity" for f in self.findings)

    @property
    def safe_so_far(self) -> bool:
        return not any(requirement_of(f["kind"]) == "safety" for f in self.findings)

    @property
    def budget(self) -> int | None:
        """The case budget asked for (None: a time budget)."""
        if self.config.cases is not None:
            return self.config.cases
        if self.config.max_cases is not None:
            return self.config.max_cases * self.config.workers
        return None

    @property
    def time_capped(self) -> bool:
        """The time cap stopped some worker short of its case budget."""
        return any(w.get("time_capped") for w in self.workers)

    def problem_cases(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for w in self.workers:
            for req, n in (w.get("problem_cases") or {}).items():
                out[req] = out.get(req, 0) + n
        return out

    def shortest(self, kinds=("fidelity",)) -> dict | None:
        fs = [f for f in self.findings if f["kind"] in kinds]
        return min(fs, key=lambda f: f["instructions"]) if fs else None

    def to_json(self) -> dict:
        from popek.spec import profiles

        prof = profiles.get(self.config.profile)
        cov = self.coverage
        return {
            "vmm": self.config.vmm,
            "profile": self.config.profile,
            "workers": self.config.workers,
            "shard": f"{self.config.shard[0] + 1}/{self.config.shard[1]}",
            "seed": self.config.seed,
            "database": self.config.db or str(Path(".popek") / "examples"),
            "seconds": round(self.seconds, 2),
            "cases": self.cases,
            "cases_per_second": round(self.cases_per_second, 1),
            "efficiency": None if self.efficiency is None else round(self.efficiency, 4),
            "innocuous_efficiency": _efficiency_json(self.judged_efficiency()),
            "efficiency_figures": self.efficiency_figures().to_json(),
            "direct_ledger": None if (ledger := self.direct_ledger()) is None else ledger.to_json(),
            "interrupted": self.interrupted,
            "budget": self.budget,
            "time_cap_seconds": self.config.seconds if self.budget is not None else None,
            "time_capped": self.time_capped,
            "refused": sum(w.get("refused", 0) for w in self.workers),
            "shrink_runs": sum(w.get("shrink_runs", 0) for w in self.workers),
            "problem_cases": self.problem_cases(),
            "findings": self.findings,
            "isa_coverage": {
                "fraction": round(cov.fraction(prof), 4),
                "unreached": [f"{n} ({m})" for n, m in cov.unreached(prof)],
                "table": cov.table(prof),
            },
            "situations": cov.situations_json(prof),
            "code_coverage": self.code_coverage,
            "errors": self.errors,
            "warnings": self.warnings,
            "db_skipped": self.db_skipped,
            "unsaved_findings": sum(1 for f in self.findings if f.get("saved") is False),
        }

    def summary(self) -> str:
        from popek.spec import profiles

        from . import situations

        prof = profiles.get(self.config.profile)
        cov = self.coverage
        lines = [
            f"campaign: VMM {self.config.vmm} on profile {self.config.profile}, "
            f"{self.config.workers} worker(s), shard {self.config.shard[0] + 1}/{self.config.shard[1]}, "
            f"seed {self.config.seed}",
            f"  {self.cases} cases in {self.seconds:.1f} s ({self.cases_per_second:.0f} cases/s)"
            + (f", budget {self.budget} cases" if self.budget is not None else "")
            + (", interrupted" if self.interrupted else ""),
            f"  ISA coverage: {cov.fraction(prof):.0%} of instruction x mode pairs reached",
        ]
        unreached = cov.unreached(prof)
        if unreached:
            lines.append("  NOT reached: " + ", ".join(f"{n} ({m})" for n, m in unreached))
        if cov.observed:
            lines.append("  " + situations.summary_line(dict(cov.situations), cov.observed, prof))
        if self.efficiency is not None:  # worded as the verdict table words it
            fig = self.efficiency_figures()
            lines.append(f"  efficiency: {fig.verdict_text()}; {fig.detail_text()}")
        judged = self.judged_efficiency()
        if judged is not None:
            lines.append(f"  innocuous steps: {judged.describe()}")
        ledger = self.direct_ledger()
        if ledger is not None:
            lines.append("  " + ledger.describe(self.config.innocuous_share))
        if self.code_coverage is not None:
            lines.append(f"  code coverage (popek packages): {self.code_coverage:.1f}%")
        refused = sum(w.get("refused", 0) for w in self.workers)
        if refused:
            lines.append(f"  refused: the VMM declined {refused} generated guests (GuestRefused)")
        if self.time_capped:
            lines.append(f"  TIME CAP: {self.config.seconds:g} s ran out after {self.cases} of {self.budget} "
                         "cases; the budget was cut short")  # fmt: skip
        counted = self.problem_cases()
        if counted:
            lines.append("  cases with problems, by requirement: "
                         + ", ".join(f"{r} {counted[r]}" for r in REQUIREMENTS if r in counted))  # fmt: skip
        if not self.findings:
            lines.append("  findings: none")
        for f in self.findings:
            c = f.get("culprit")
            at = f", first differs at step {c['step']}: {c['insn']} in {c['mode']} mode" if c else ""
            where = f"NOT SAVED ({f['save_error']})" if f.get("saved") is False else f["path"]
            lines.append(
                f"  finding: {f['kind']}: {f['message']} ({f['instructions']} instructions{at}, "
                f"after {f['seconds_to_detection']:.1f} s) -> {where}"
            )
            if f.get("saved") is False:  # printed in full: the terminal is the only copy
                lines += ["    " + line for line in f["report"].splitlines()]
        if self.db_skipped:
            lines.append(f"  example database: {self.db_skipped} corrupt entries skipped")
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        for e in self.errors:
            lines.append(f"  error: {e}")
        return "\n".join(lines)


def _read_statuses(status_dir: Path) -> list[dict]:
    out = []
    for p in sorted(status_dir.glob("worker-*.json")):
        try:
            out.append(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue  # being replaced this instant; the next poll sees it
    return out


def progress_line(statuses: list[dict], profile, started: float) -> str:
    """The live line, from the workers' status documents (local files, or a
    cluster's stream: `popek.cluster`), so both kinds of campaign print alike."""
    from .isa_coverage import IsaCoverage

    cov = IsaCoverage()
    for s in statuses:
        cov.merge(IsaCoverage.from_json(s["coverage"]))
    cases = sum(s["cases"] for s in statuses)
    rate = sum(s["cases"] / s["elapsed"] for s in statuses if s.get("elapsed"))
    nfind = sum(len(s["findings"]) for s in statuses)
    return (
        f"[{time.time() - started:6.1f}s] {cases} cases, {rate:.0f} cases/s, "
        f"ISA coverage {cov.fraction(profile):.0%}, findings {nfind}, workers {len(statuses)}"
    )


def report_from_statuses(config: CampaignConfig, elapsed: float, statuses: list[dict], *,
                         interrupted: bool = False) -> CampaignReport:
    """The report of a campaign from its workers' last status documents,
    wherever they ran (here, or on a cluster: `popek.cluster`)."""
    from .isa_coverage import IsaCoverage

    cov = IsaCoverage()
    for s in statuses:
        cov.merge(IsaCoverage.from_json(s["coverage"]))
        cov.add_situations(s.get("situations"))
    report = CampaignReport(
        config, elapsed, sum(s["cases"] for s in statuses), statuses,
        [f for s in statuses for f in s["findings"]], cov, interrupted=interrupted,
    )  # fmt: skip
    for s in statuses:
        report.errors += s.get("errors", [])
    return report


def run_campaign(
    config: CampaignConfig, *, progress: TextIO | None = sys.stderr, env: dict | None = None
) -> CampaignReport:
    """Run the campaign in pytest-xdist workers and gather the report."""
    from popek.spec import profiles

    prof = profiles.get(config.profile)
    if not config.seed:
        config.seed = random.SystemRandom().randrange(1, 1 << 31)
    own_tmp = None
    if not config.status_dir:
        own_tmp = tempfile.mkdtemp(prefix="popek-campaign-")
        config.status_dir = own_tmp
    status_dir = Path(config.status_dir)
    status_dir.mkdir(parents=True, exist_ok=True)
    config.findings_dir = str(Path(config.findings_dir).resolve())
    if config.db and not is_redis(config.db):
        config.db = str(Path(config.db).resolve())
    if not config.campaign_id:
        config.campaign_id = new_campaign_id()
    if config.deadline is None:  # the command may have started the clock earlier
        config.deadline = time.time() + config.seconds
    # before the first case: where findings and examples go must take them
    check_database(config.db)
    check_directory(Path(config.findings_dir), "findings directory")
    cfg_path = status_dir / "config.json"
    cfg_path.write_text(json.dumps(config.to_json()), encoding="utf-8")
    (status_dir / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    cmd = [
        sys.executable, "-m", "pytest", str(WORKER_FILE),
        "-c", str(status_dir / "pytest.ini"), "--rootdir", str(status_dir),
        "-p", "no:cacheprovider", "-q", "-x", "--no-header",
        "-n", str(config.workers), "--dist", "each",
    ]  # fmt: skip
    child_env = dict(os.environ if env is None else env)
    child_env[CONFIG_ENV] = str(cfg_path)
    started = time.time()
    interrupted = False
    log = open(status_dir / "pytest.log", "w", encoding="utf-8")
    proc = subprocess.Popen(cmd, env=child_env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    tty = progress is not None and progress.isatty()
    last_print = 0.0
    try:
        while proc.poll() is None:
            time.sleep(0.25)
            if progress is not None and time.time() - last_print >= (0.5 if tty else 5.0):
                last_print = time.time()
                line = progress_line(_read_statuses(status_dir), prof, started)
                progress.write(("\r" + line + "   ") if tty else line + "\n")
                progress.flush()
            if time.time() > started + config.seconds + 120:
                os.killpg(proc.pid, signal.SIGTERM)  # workers past their deadline: stuck
    except KeyboardInterrupt:
        interrupted = True
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    finally:
        log.close()
    if tty:
        progress.write("\n")
    elapsed = time.time() - started
    statuses = _read_statuses(status_dir)
    report = report_from_statuses(config, elapsed, statuses, interrupted=interrupted)
    for s in statuses:
        report.warnings += s.get("warnings", [])
        report.db_skipped += s.get("db_skipped", 0)
    if proc.returncode not in (0, None) and not report.findings and not interrupted:
        tail = (status_dir / "pytest.log").read_text(encoding="utf-8", errors="replace")[-2000:]
        report.errors.append(f"worker processes exited with {proc.returncode}:\n{tail}")
    if len(statuses) < config.workers and not interrupted:
        report.errors.append(f"only {len(statuses)} of {config.workers} workers reported")
    if config.code_coverage:
        report.code_coverage = _combine_code_coverage(status_dir)
    return report


def _combine_code_coverage(status_dir: Path) -> float | None:
    import coverage

    cov = coverage.Coverage(data_file=str(status_dir / ".coverage"))
    try:
        cov.combine([str(status_dir)])
        cov.save()
        import io

        return cov.report(file=io.StringIO())
    except coverage.exceptions.CoverageException:
        return None
