"""Recursive virtualization (P&G's Theorem 2), checked by running it.

A *monitor in guest code* (examples/monitor/monitor.s) is a trap-and-emulate
VMM written in popek assembly: it runs as an ordinary guest kernel and
hosts an *inner* guest of its own in part of its storage.  `nest` puts an
inner guest into a monitor's image (and can do it again: a monitor hosting
a monitor), and this module checks the two claims of recursion:

(a) the inner guest under the monitor, on the bare machine, behaves as the
    inner guest alone on the bare machine (`run_under_monitor` against
    `popek.fuzz.execute.run_bare`), compared at the same *inner* step
    counts;
(b) the monitor with its guest, under a Python VMM, behaves as it does on
    the bare machine (`check_two_deep`): ordinary fidelity one level up,
    with safety watched as in every campaign.

Counting inner steps from outside needs no help from the monitor: on the
bare machine, every host step taken in user mode is one inner step (an
instruction the inner guest ran directly, or the trap that the monitor
then finishes as one emulated or reflected step), and every step in
supervisor mode is the monitor's own.  A comparison is made once the
monitor has finished the step (the host is back in user mode, or halted).

What the inner guest "sees" is the monitor's abstraction function,
`inner_view`: its registers, pc and flags are the machine's while it runs
(host in user mode) and the monitor's virtual CPU's otherwise; mode,
interrupt enable, R, page-table base, timer and halt always come from the
virtual CPU; its storage is the monitor's words from ``inner``.

The monitor virtualizes neither the timer nor paging (its header says
why), so inner guests are drawn without ``stimer`` and ``lptb``
(`inner_guests`), and a run where the monitor refused anyway is reported
as refused, never as faithful.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as hs

from popek.model.machine import Machine
from popek.session import Session, SessionError
from popek.spec import profiles
from popek.spec import state as st
from popek.spec.asm import assemble, disassemble
from popek.spec.image import Image
from popek.spec.profiles import Profile
from popek.vmm import GUEST_FIELDS, VMM, GuestRefused, GuestState

from . import guest as g
from .execute import Run, checkpoints, run_bare
from .minimize import minimize
from .report import assembly, diff_table
from .strategies import from_profile

# The symbols a monitor's source must define (see examples/monitor/monitor.s).
SYMBOLS = ("inner", "isize", "ientry", "refused", "vcpu")
# Instructions the monitor does not virtualize: inner guests never use them.
UNVIRTUALIZED = ("stimer", "lptb")
DEFAULT_MONITOR = Path(__file__).resolve().parents[1] / "examples" / "monitor" / "monitor.s"
# Host steps the monitor may take per inner step (plus a start-up allowance)
# before a run is called stuck: a trap costs the monitor about 60 steps.
MONITOR_STEPS_PER_INNER = 200
MONITOR_START = 2000
# A fresh machine per case: compiling a block (about 1 ms) pays only for
# code that runs this often, which a case's monitor rarely does.
HOT = 256


class NestingError(ValueError):
    """A monitor or an inner guest that cannot be nested (one line)."""


@dataclass(frozen=True)
class Monitor:
    """A monitor in guest code, assembled, with where its loader writes."""

    image: Image
    profile: Profile
    file: str = "<monitor>"

    @classmethod
    def from_source(cls, text: str, profile: Profile, *, file: str = "<monitor>") -> "Monitor":
        image = assemble(text, profile, file=file)
        missing = [s for s in SYMBOLS if s not in image.symbols]
        if missing:
            raise NestingError(f"{file}: a monitor must define the labels {', '.join(missing)}")
        top = max(image.words, default=0)
        if top >= image.symbols["inner"]:
            raise NestingError(f"{file}: words at {top:#x} lie in the inner guest's storage (from `inner`)")
        return cls(image, profile, file)

    @classmethod
    def load(cls, path: str | Path = DEFAULT_MONITOR, profile: Profile | str = "pg") -> "Monitor":
        prof = profiles.get(profile) if isinstance(profile, str) else profile
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise NestingError(f"cannot read monitor {path}: {e.strerror or e}") from None
        return cls.from_source(text, prof, file=str(path))

    def sym(self, name: str) -> int:
        return self.image.symbols[name]

    def memsize_for(self, inner_memsize: int) -> int:
        """The monitor's storage for an inner guest of ``inner_memsize``
        words, a whole number of pages."""
        page = self.profile.arch.page_size
        size = self.sym("inner") + inner_memsize
        size = -(-size // page) * page
        if size > 1 << self.profile.arch.word:
            raise NestingError(f"an inner guest of {inner_memsize} words does not fit in the monitor's storage")
        return size


def nest(monitor: Monitor, inner: Image, inner_memsize: int) -> tuple[Image, int]:
    """The monitor's image with ``inner`` placed at its ``inner`` label, and
    the monitor's storage size.  Nest the result again for one more level."""
    if inner_memsize < st.FIRST_FREE:
        raise NestingError(f"an inner guest needs at least {st.FIRST_FREE} words, not {inner_memsize}")
    base = monitor.sym("inner")
    words = dict(monitor.image.words)
    for addr, word in inner.words.items():
        if not 0 <= addr < inner_memsize:
            raise NestingError(f"inner guest word at {addr:#x} lies outside its {inner_memsize} words")
        words[base + addr] = word
    words[monitor.sym("isize")] = inner_memsize
    words[monitor.sym("ientry")] = inner.entry & monitor.profile.arch.mask
    code = set(monitor.image.code) | {base + a for a in inner.code}  # a rewriting VMM needs the code map
    lines = {**monitor.image.lines, **{base + a: where for a, where in inner.lines.items()}}
    image = Image(words, monitor.image.entry, dict(monitor.image.symbols), lines, code)
    return image, monitor.memsize_for(inner_memsize)


def inner_view(outer: GuestState, monitor: Monitor, inner_memsize: int) -> GuestState:
    """The inner guest's state as the monitor holds it (the module docstring)."""
    mem, vcpu = outer.memory, monitor.sym("vcpu")
    regs = {name: int(mem[vcpu + k]) for k, name in enumerate(GUEST_FIELDS)}
    if outer.regs["mode"] == st.USER and not outer.regs["halted"]:
        live = [*(st.FIELD_NAMES[i] for i in range(st.ARCH.nregs)), "pc", "flags"]
        regs.update({name: int(outer.regs[name]) for name in live})
    base = monitor.sym("inner")
    return GuestState(regs, tuple(mem[base : base + inner_memsize]), tuple(outer.out))


def refused(outer: GuestState, monitor: Monitor) -> bool:
    return bool(outer.memory[monitor.sym("refused")])


# --------------------------------------------------------------------------
# (a) the inner guest under the monitor, on the bare machine
# --------------------------------------------------------------------------
@dataclass
class MonitoredRun:
    """An inner guest run under the monitor on the bare machine."""

    states: list[GuestState]  # the inner view at each checkpoint
    steps: list[int]  # inner steps in each chunk
    halted: bool
    refused: bool = False
    host_steps: int = 0  # everything the machine ran: inner and monitor
    traps: int = 0  # times the monitor was entered
    stuck: str | None = None  # the monitor made no progress


def _enter_monitor(machine: Machine, cause: int, info: int) -> bool:
    machine.trap(cause, info)  # the bare machine's own trap mechanism
    return True  # ... and stop: the monitor runs next


def run_under_monitor(
    monitor: Monitor, inner: Image, inner_memsize: int, chunks: Sequence[int]
) -> MonitoredRun:
    """Run ``inner`` under ``monitor`` on a bare machine, pausing after each
    chunk of inner steps to take the inner view.

    The monitor returns to its guest only by the ``rti`` at its ``resume``
    label.  So that its own steps run at full speed (compiled, not stepped
    one by one), that word is an undecodable one in this machine (a
    breakpoint, planted before anything is decoded): its trap says the
    monitor is done, and the ``rti`` runs from a copy in one extra page of
    storage that nothing else touches.  The breakpoint's trap is not a step
    and is not counted; the inner view never looks at either word."""
    image, memsize = nest(monitor, inner, inner_memsize)
    resume = monitor.image.symbols.get("resume")
    spare = memsize  # the extra page
    if resume is not None:
        words = dict(image.words)
        words[spare], words[resume] = words[resume], 0  # opcode 0: never an instruction
        image = replace(image, words=words)
        memsize += monitor.profile.arch.page_size
    machine = Machine(monitor.profile, memsize)
    machine.hot = HOT
    machine.load(image)
    S = machine.S
    run = MonitoredRun([], [], False)
    cap = MONITOR_START + MONITOR_STEPS_PER_INNER * sum(chunks)

    def at_resume(m: Machine, cause: int, info: int) -> bool:
        if cause == st.Cause.ILLEGAL and info == resume and S[st.MODE] == st.SUPERVISOR:
            return True
        m.trap(cause, info)  # the monitor's own trap: as the machine takes it
        return False

    def settle() -> None:  # the monitor's own steps, until the guest runs again
        while S[st.MODE] == st.SUPERVISOR and not S[st.HALTED]:
            if resume is None:
                run.host_steps += machine.step().steps
            else:
                r = machine.run(cap + 1 - run.host_steps, at_resume)
                run.host_steps += r.steps
                if r.stopped:  # at the breakpoint: not a step; then the rti
                    run.host_steps -= 1
                    S[st.PC] = spare
                    run.host_steps += machine.step().steps
            if run.host_steps > cap:
                raise _Stuck(f"the monitor ran {run.host_steps} host steps without returning to its guest")

    try:
        settle()
        for chunk in chunks:
            done = 0
            while done < chunk and not S[st.HALTED]:
                r = machine.run(chunk - done, _enter_monitor)
                done += r.steps
                run.host_steps += r.steps
                run.traps += int(r.stopped)
                settle()
            run.steps.append(done)
            outer = GuestState.from_machine(machine)
            run.states.append(inner_view(outer, monitor, inner_memsize))
    except _Stuck as e:
        run.stuck = str(e)
    outer = GuestState.from_machine(machine)
    run.halted = bool(S[st.HALTED])
    run.refused = refused(outer, monitor)
    return run


class _Stuck(Exception):
    pass


@dataclass
class Finding:
    """A difference, with what it takes to read it."""

    kind: str  # fidelity | safety | crash | refused
    message: str
    case: g.GuestCase | None = None
    diffs: list = field(default_factory=list)
    image: Image | None = None  # a program that is no generated case
    profile: Profile | None = None

    def report(self) -> str:
        lines = [f"{self.kind.upper()}: {self.message}"]
        if self.diffs:
            lines += ["", diff_table(self.diffs, "bare", "nested")]
        if self.case is not None:
            lines += ["", "inner guest (assembly):", assembly(self.case).rstrip("\n")]
        elif self.image is not None and self.profile is not None:
            lines += ["", "inner guest (assembly):", disassemble(self.image, self.profile).rstrip("\n")]
        return "\n".join(lines)


def compare_inner(case: g.GuestCase, monitor: Monitor) -> Finding | None:
    """(a) for one case: None when the inner guest under the monitor ran as
    it does alone; a `Finding` otherwise (kind ``refused`` when the monitor
    declined it)."""
    return _compare(run_bare(case), case.image(monitor.profile), case.memsize, checkpoints(case), monitor, case)


def compare_program(image: Image, memsize: int, monitor: Monitor, chunks: Sequence[int]) -> Finding | None:
    """(a) for a program of one's own (``popek nest``): the bare run and
    the run under the monitor compared after each chunk of steps."""
    nest(monitor, image, memsize)  # a program that does not fit is a NestingError, first
    machine = Machine(monitor.profile, memsize)
    machine.load(image)
    states, steps = [], []
    for chunk in chunks:
        steps.append(machine.run(chunk).steps)
        states.append(GuestState.from_machine(machine))
    reference = Run(states, steps, bool(machine.S[st.HALTED]))
    found = _compare(reference, image, memsize, chunks, monitor, None)
    if found is not None:
        found.image, found.profile = image, monitor.profile
    return found


def _compare(
    reference: Run, image: Image, memsize: int, chunks: Sequence[int], monitor: Monitor, case: g.GuestCase | None
) -> Finding | None:
    nested = run_under_monitor(monitor, image, memsize, chunks)
    if nested.refused:
        return Finding("refused", "the monitor refused the guest (timer or paging)", case)
    if nested.stuck:
        return Finding("crash", nested.stuck, case)
    done = 0
    for want, got, n, m in zip(reference.states, nested.states, reference.steps, nested.steps):
        done += n
        if n != m:
            return Finding("fidelity", f"the inner guest ran {m} steps under the monitor, {n} alone", case)
        diffs = want.differences(got)
        if diffs:
            names = ", ".join(d[0] for d in diffs[:4])
            return Finding("fidelity", f"inner guest state differs after {done} steps: {names}", case, diffs)
    return None


def inner_guests(profile: Profile | str, **kw) -> hs.SearchStrategy[g.GuestCase]:
    """Guests the monitor is meant to host: `from_profile`'s, with every
    ``stimer`` and ``lptb`` (in any section) made a ``nop`` and no timer."""
    prof = profiles.get(profile) if isinstance(profile, str) else profile
    kw["exclude"] = tuple(sorted({*kw.get("exclude", ()), *(n for n in UNVIRTUALIZED if n in prof.by_name)}))
    return from_profile(prof, **kw).map(untimed)


def untimed(case: g.GuestCase) -> g.GuestCase:
    """The case with the instructions the monitor does not virtualize
    replaced one for one (jumps count instructions, so nothing moves)."""

    def clean(ops):
        if ops is None:
            return None
        return tuple(g.Op("nop") if op.name in UNVIRTUALIZED else op for op in ops)

    return replace(case, kernel=clean(case.kernel), handler=clean(case.handler), user=clean(case.user), timer=0)


# --------------------------------------------------------------------------
# (b) the monitor and its guest under a Python VMM
# --------------------------------------------------------------------------
@dataclass
class LevelRun:
    """One nested image run to the end on one host (bare or a VMM)."""

    state: GuestState | None
    steps: int  # the monitor's steps
    halted: bool
    seconds: float
    vmm_traps: int = 0  # traps the Python VMM took (level-1 traps)
    problems: list[str] = field(default_factory=list)


def run_bare_image(image: Image, memsize: int, profile: Profile, steps: int) -> LevelRun:
    t = time.perf_counter()
    machine = Machine(profile, memsize)
    machine.load(image)
    r = machine.run(steps)
    return LevelRun(GuestState.from_machine(machine), r.steps, r.halted, time.perf_counter() - t)


def run_vmm_image(
    vmm_cls: type[VMM], image: Image, memsize: int, profile: Profile, chunks: Sequence[int], *, safety: bool = True
) -> tuple[list[GuestState], LevelRun]:
    """The nested image as a guest of ``vmm_cls``, in a guarded session,
    state taken after each chunk; safety as every campaign watches it."""
    states: list[GuestState] = []
    label = getattr(vmm_cls, "name", vmm_cls.__name__)
    out = LevelRun(None, 0, False, 0.0)
    t = time.perf_counter()
    try:
        with Session(vmm_cls, profile, label=label, watch=safety, canary=safety) as s:
            try:
                s.load(image, memsize=memsize)
                for chunk in chunks:
                    r = s.run(chunk)
                    out.steps += r.steps
                    out.halted = r.halted
                    states.append(s.state())
                out.vmm_traps = sum(s.counters().traps.values())
                if safety:
                    out.problems += [f"safety: {v}" for v in s.safety_problems()]
            except SessionError as e:
                out.problems.append(f"{e.kind}: {e}")
    except GuestRefused as e:  # a declared answer: nothing to compare
        out.problems.append(f"refused: {e or type(e).__name__}")
    except SessionError as e:
        out.problems.append(f"{e.kind}: {e}")
    out.seconds = time.perf_counter() - t
    out.state = states[-1] if states else None
    return states, out


def check_two_deep(case: g.GuestCase, monitor: Monitor, vmm_cls: type[VMM], depth: int = 1) -> Finding | None:
    """(b): the inner guest nested ``depth`` monitors deep, run under
    ``vmm_cls``, against the same image on the bare machine, compared at
    the same monitor steps (three checkpoints and the end)."""
    return check_under_vmm(case.image(monitor.profile), case.memsize, case.steps, monitor, vmm_cls, depth, case)


def check_under_vmm(
    inner: Image,
    inner_memsize: int,
    inner_steps: int,
    monitor: Monitor,
    vmm_cls: type[VMM],
    depth: int = 1,
    case: g.GuestCase | None = None,
) -> Finding | None:
    """`check_two_deep` for any inner program: run for as many monitor
    steps as ``inner_steps`` of the inner guest take on the bare machine."""
    prof = monitor.profile
    image, memsize = inner, inner_memsize
    for _ in range(depth):
        image, memsize = nest(monitor, image, memsize)
    if depth == 1:  # as far as the inner guest's own budget takes the monitor
        alone = run_under_monitor(monitor, inner, inner_memsize, [inner_steps])
        budget = alone.host_steps if not alone.stuck else MONITOR_START + MONITOR_STEPS_PER_INNER * inner_steps
    else:
        budget = MONITOR_START + (MONITOR_STEPS_PER_INNER**depth) * inner_steps
    bare = run_bare_image(image, memsize, prof, budget)
    if refused(bare.state, monitor):
        return Finding("refused", "the monitor refused the guest (timer or paging)", case)
    total = bare.steps
    cuts = sorted({total // 3, 2 * total // 3, total} - {0}) or [0]
    chunks = [b - a for a, b in zip([0, *cuts], cuts)]
    states, run = run_vmm_image(vmm_cls, image, memsize, prof, chunks)
    if run.problems:
        kind = run.problems[0].partition(":")[0]
        kind = kind if kind in ("safety", "crash", "refused") else "contract"
        return Finding(kind, run.problems[0], case, image=None if case else inner, profile=prof)
    machine = Machine(prof, memsize)
    machine.load(image)
    done = 0
    for chunk, got in zip(chunks, states):
        machine.run(chunk)
        done += chunk
        diffs = GuestState.from_machine(machine).differences(got)
        if diffs:
            names = ", ".join(d[0] for d in diffs[:4])
            return Finding(
                "fidelity", f"monitor state differs after {done} monitor steps: {names}", case, diffs,
                image=None if case else inner, profile=prof,
            )  # fmt: skip
    return None


# --------------------------------------------------------------------------
# A bounded search, as a campaign does it (Hypothesis draws and shrinks)
# --------------------------------------------------------------------------
@dataclass
class SearchResult:
    cases: int = 0  # cases drawn and compared (shrinking not counted)
    refused: int = 0
    finding: Finding | None = None
    seconds: float = 0.0


class _Found(Exception):
    def __init__(self, finding: Finding):
        super().__init__(finding.message)
        self.finding = finding


def search(
    check: Callable[[g.GuestCase], Finding | None],
    profile: Profile,
    *,
    cases: int,
    seed_value: int = 0,
    max_instructions: int = 12,
    steps: int = 120,
    exclude: Sequence[str] = (),
    shrink_tries: int = 300,
) -> SearchResult:
    """Draw up to ``cases`` inner guests (of ``steps`` steps: every inner
    trap costs the monitor some 60 steps, so cases are shorter than a
    campaign's) and ``check`` each; the first finding is shrunk and
    returned.  Refusals are counted, never passed off as faithful.

    Shrinking spends a budget of ``shrink_tries`` runs, not of seconds, so
    that one seed gives one counterexample on a quiet and on a loaded
    machine (`popek nest` promises no end time, unlike `--time`)."""
    result = SearchResult()
    shrinking = [False]
    t = time.perf_counter()

    @seed(seed_value)
    @settings(
        max_examples=cases, database=None, deadline=None, derandomize=False,
        suppress_health_check=list(HealthCheck), report_multiple_bugs=False, phases=[Phase.generate],
    )  # fmt: skip
    @given(inner_guests(profile, max_instructions=max_instructions, steps=steps, exclude=tuple(exclude)))
    def probe(case: g.GuestCase) -> None:
        finding = check(case)
        if not shrinking[0]:
            result.cases += 1
            if finding is not None and finding.kind == "refused":
                result.refused += 1
        if finding is not None and finding.kind != "refused":
            shrinking[0] = True
            raise _Found(finding)

    try:
        probe()
    except _Found as e:
        result.finding = e.finding
    if result.finding is not None and result.finding.case is not None:
        kind = result.finding.kind

        tries = [0]

        def still_fails(case: g.GuestCase) -> bool:
            tries[0] += 1
            if tries[0] > shrink_tries:
                return False
            found = check(case)
            return found is not None and found.kind == kind

        small = minimize(result.finding.case, still_fails, seconds=math.inf)
        result.finding = check(small) or result.finding
    result.seconds = time.perf_counter() - t
    return result
