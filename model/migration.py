"""Pre-copy live migration (Clark et al., NSDI 2005), as the lecture tells it.

A guest moves from a VMM on one host to a fresh VMM of the same design on
another, over a `Link` that counts what crosses it and has a bandwidth in
words per guest step, so that sending takes guest time and the guest runs
on the source meanwhile:

1. start the source VMM's dirty log, then send every guest page (round 1)
   while the guest runs;
2. send the pages the guest dirtied during the previous round (rounds 2,
   3, ...), while it goes on running and dirtying;
3. stop when a round is short enough (its dirty set fits in
   ``stop_pages``), when ``max_rounds`` rounds have run, or when another
   round could take the traffic over ``link.cap``;
4. stop-and-copy: suspend the guest, send the last dirty pages and the CPU
   state (the downtime), start the guest on the target, and drop it from
   the source.

``max_rounds=0`` is stop-and-copy alone: the guest is suspended at once and
every page is sent while it waits (the degenerate case, for comparison).

The engine needs from a design only its dirty-page tracking (`DirtyLog`);
the rest is the lifecycle every `SoftwareVMM` has (suspend, snapshot of the
CPU state, an incoming guest on a fresh instance).  A plug-in with its own
``migrate_to`` must still send through the `Link` it is given: that is
what `popek check` counts (`popek.vmm.Lifecycle`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

DEFAULT_BANDWIDTH = 64  # words per guest step: a page of 64 words per step
DEFAULT_MAX_ROUNDS = 30  # Clark et al.'s round cap
DEFAULT_TRAFFIC = 3.0  # traffic cap, in guest storages (Clark et al.: 3x)


class LinkError(Exception):
    """A send the link refuses (a negative or absurd count)."""


class Link:
    """The wire between two hosts.  Every page and every word of CPU state a
    migration moves is sent here; the link carries each page's words (the
    last version of each page sent is kept: what the target must hold),
    counts pages and words, and says how many guest steps each send takes
    at ``bandwidth`` words per guest step (fractions carried over, so that
    small sends add up exactly).  ``cap``:
    the traffic cap in words (None: none), which the sender must respect;
    popek checks ``words <= cap`` after a migration.  ``max_rounds``: the
    round cap the caller asks for (0: stop-and-copy), a policy a sender
    reads from its link."""

    def __init__(self, bandwidth: int = DEFAULT_BANDWIDTH, cap: int | None = None,
                 max_rounds: int = DEFAULT_MAX_ROUNDS):  # fmt: skip
        if not isinstance(bandwidth, int) or bandwidth < 1:
            raise LinkError(f"bandwidth must be a positive number of words per guest step, got {bandwidth!r}")
        if cap is not None and (not isinstance(cap, int) or cap < 0):
            raise LinkError(f"traffic cap must be a non-negative number of words, got {cap!r}")
        if not isinstance(max_rounds, int) or max_rounds < 0:
            raise LinkError(f"the round cap must be a non-negative number of rounds, got {max_rounds!r}")
        self.bandwidth, self.cap, self.max_rounds = bandwidth, cap, max_rounds
        self.words = 0  # words sent, pages and state
        self.page_sends = 0  # pages sent (a page sent twice counts twice)
        self.pages: dict[int, tuple[int, ...]] = {}  # guest-physical page -> its words as last sent
        self.state_words = 0
        self._owed = 0  # words sent whose guest steps are not yet counted (< bandwidth)

    def _time(self, words: int) -> int:
        self._owed += words
        steps, self._owed = divmod(self._owed, self.bandwidth)
        return steps

    def send_page(self, page: int, words) -> int:
        """Guest page ``page`` crosses, holding ``words`` (a sequence of
        ints); returns the guest steps it took."""
        words = tuple(words)
        if not isinstance(page, int) or page < 0 or not all(isinstance(w, int) for w in words):
            raise LinkError(f"send_page({page!r}, ...): a non-negative page number and a page of ints")
        self.words += len(words)
        self.page_sends += 1
        self.pages[page] = words
        return self._time(len(words))

    def send_state(self, words: int) -> int:
        """``words`` words of CPU state and bookkeeping cross; returns guest steps."""
        if not isinstance(words, int) or words < 0:
            raise LinkError(f"send_state({words!r}): words must be a non-negative int")
        self.words += words
        self.state_words += words
        return self._time(words)

    def over_cap(self) -> bool:
        return self.cap is not None and self.words > self.cap


@dataclass
class MigrationReport:
    """What a migration did, in guest steps (the only clock the model has)."""

    rounds: int  # pre-copy rounds (0: stop-and-copy)
    pages_per_round: list[int]  # pages sent in each pre-copy round, then in the final copy
    words_sent: int  # everything, state included
    guest_words: int  # guest storage, for the ratio
    page_words: int  # words per page
    downtime: int  # guest steps the guest stood still (the final copy)
    total_time: int  # guest steps from the start to the guest running on the target
    guest_steps: int  # guest steps the guest ran on the source meanwhile
    stopped_by: str  # "short round", "round cap", "traffic cap", "stop-and-copy", "guest halted"
    halted: bool = False  # the guest halted on the source during pre-copy
    notes: list[str] = field(default_factory=list)

    @property
    def traffic_ratio(self) -> float:
        """Words sent / guest storage (1.0: each word once)."""
        return self.words_sent / self.guest_words if self.guest_words else 0.0

    @property
    def pages_sent(self) -> int:
        return sum(self.pages_per_round)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["traffic_ratio"] = round(self.traffic_ratio, 4)
        d["pages_sent"] = self.pages_sent
        d["guest_pages"] = -(-self.guest_words // self.page_words) if self.page_words else 0
        return d

    def text(self) -> str:
        """The report as `popek migrate` prints it."""
        rounds = ", ".join(str(n) for n in self.pages_per_round[:-1]) or "none"
        pages = -(-self.guest_words // self.page_words) if self.page_words else 0
        share = f"{100 * self.downtime / self.total_time:.1f}%" if self.total_time else "n/a"
        lines = [
            f"pre-copy rounds:   {self.rounds} (stopped by {self.stopped_by})",
            f"pages per round:   {rounds}; final copy {self.pages_per_round[-1] if self.pages_per_round else 0}",
            f"sent:              {self.words_sent} words = {self.traffic_ratio:.2f} x guest storage "
            f"({self.pages_sent} page sends for {pages} guest pages)",
            f"downtime:          {self.downtime} guest steps ({share} of the migration)",
            f"total time:        {self.total_time} guest steps ({self.guest_steps} run on the source)",
        ]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


class DirtyLog(Protocol):
    """What a design supplies for `precopy`: its own dirty-page tracking
    (write protection through its page tables, R, or the vtx extension)."""

    def start_dirty_log(self) -> None:
        """From now on, note every guest page written, by anyone."""

    def dirty_pages(self) -> set[int]:
        """The guest-physical pages written since the last call (or the
        start), forgotten once returned; the tracking goes on."""

    def stop_dirty_log(self) -> None:
        """Stop noting writes (and undo any write protection)."""

    def final_copy(self, last_round: set[int], since: set[int]) -> set[int]:
        """The pages stop-and-copy sends: those the last round found dirty
        (not sent yet) and those written since (`SoftwareVMM.final_copy`)."""


def traffic_cap(guest_words: int, state_words: int, factor: float = DEFAULT_TRAFFIC) -> int:
    """Clark et al.'s cap: ``factor`` times guest storage, plus the CPU state."""
    return int(factor * guest_words) + state_words


def precopy(
    source: Any,
    target: Any,
    link: Link,
    *,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    stop_pages: int | None = None,
) -> MigrationReport:
    """Move the guest of ``source`` (a `SoftwareVMM` with a `DirtyLog`) to
    ``target`` (a fresh instance of the same design) over ``link``; see the
    module docstring.  ``stop_pages``: a round that leaves at most this
    many dirty pages is short enough (default: the pages the link sends in
    one guest step, at least one)."""
    if max_rounds < 0:
        raise ValueError(f"max_rounds must be non-negative, got {max_rounds}")
    memsize = source.guest_memsize()
    size = source.host.arch.page_size
    npages = -(-memsize // size)
    state_words = source.state_words()
    cap = link.cap
    if cap is not None and cap < memsize + state_words:
        raise LinkError(
            f"traffic cap of {cap} words is less than one copy of the guest "
            f"({memsize} words of storage and {state_words} of state): it cannot move"
        )
    if stop_pages is None:
        stop_pages = max(1, link.bandwidth // size)
    target.prepare_incoming(memsize)
    counts: list[int] = []
    clock = ran = 0
    halted = False
    stopped_by = "stop-and-copy"

    def send(pages, *, live: bool) -> None:
        """Send ``pages``; while live, the guest runs as long as each takes."""
        nonlocal clock, ran, halted
        for p in sorted(pages):
            lo, hi = p * size, min(memsize, (p + 1) * size)
            words = source.guest_words(lo, hi)
            steps = link.send_page(p, words)
            target.receive_words(lo, words)
            clock += steps
            if live and steps and not halted:
                r = source.run(steps)
                ran += r.steps
                halted = r.halted

    def room_for(pages: int) -> bool:
        """Another round of ``pages`` pages, and a final copy of every page
        after it, stay within the cap."""
        return cap is None or link.words + (pages + npages) * size + state_words <= cap

    pending = set(range(npages))
    if max_rounds == 0:
        source.suspend()
        source.start_dirty_log()  # nothing will be written: the guest is frozen
    else:
        source.start_dirty_log()
        stopped_by = "round cap"
        for _ in range(max_rounds):
            if not room_for(len(pending)):
                stopped_by = "traffic cap"
                break
            send(pending, live=True)
            counts.append(len(pending))
            pending = source.dirty_pages()
            if halted:
                stopped_by = "guest halted"
                break
            if len(pending) <= stop_pages:
                stopped_by = "short round"
                break
        source.suspend()
    # stop-and-copy: the guest stands still from here
    rounds = len(counts)
    final = source.final_copy(pending, source.dirty_pages())
    start = clock
    send(final, live=False)
    counts.append(len(final))
    state = source.outgoing_state()
    clock += link.send_state(state_words)
    clock += 1 if link._owed else 0  # the last partial step of the transfer
    source.stop_dirty_log()
    target.accept_incoming(state)
    source.release_guest()
    notes = []
    if stopped_by == "round cap" and max_rounds:
        notes.append(f"the guest dirtied pages faster than the link sent them: round cap of {max_rounds} reached")
    if stopped_by == "traffic cap":
        notes.append(f"another round could have taken the traffic over the cap of {cap} words: stopped early")
    return MigrationReport(
        rounds=rounds,
        pages_per_round=counts,
        words_sent=link.words,
        guest_words=memsize,
        page_words=size,
        downtime=clock - start,
        total_time=clock,
        guest_steps=ran,
        stopped_by=stopped_by,
        halted=halted,
        notes=notes,
    )
