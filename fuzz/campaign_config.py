"""What a campaign is asked to do, as one value every process can read.

A campaign runs in several processes (pytest-xdist workers, a cluster's
tasks), so what it is asked for is one plain dataclass, `CampaignConfig`,
written to a JSON file the parent names in ``POPEK_CAMPAIGN_CONFIG``
(`CONFIG_ENV`) and read back by each worker: nothing else crosses the
process boundary on the way in.  The command-line spellings of its options
(``--shard 1/4``, ``--cases 2k``, ``--time 10m``) are parsed here, so
``popek fuzz``, ``check``, ``verify`` and ``equiv`` accept the same ones.

The requirements a campaign judges are here too: which requirement each
kind of problem breaks (`requirement_of`) and which ones a campaign can
break at all (`breakable`) decide when a worker may stop, how the verdict
table files a finding, and how the reports group them.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass

from . import findings as fnd

CONFIG_ENV = "POPEK_CAMPAIGN_CONFIG"


@dataclass
class CampaignConfig:
    """One campaign's settings, the same in the parent and in every worker
    (`to_json` and `from_json` carry it across processes and machines)."""

    vmm: str  # registry name or package.module:Class
    profile: str
    seconds: float = 60.0
    workers: int = 1
    db: str | None = None  # directory, or redis://host:port[/n]; None: .popek/examples
    shard: tuple[int, int] = (0, 1)  # (index, count), index from 0
    findings_dir: str = str(fnd.DEFAULT_DIR)
    status_dir: str = ""
    seed: int = 0
    efficiency: float | None = None  # threshold; None: measure only
    max_instructions: int = 24
    steps: int = 400
    code_coverage: bool = False
    reuse_only: bool = False  # only replay the example database
    # after a fidelity finding: exclude its culprit instruction and go on to
    # find the next distinct one (True), or count fidelity as found (False)
    distinct: bool = True
    # stop at the first finding of any kind (True), or go on until every
    # requirement the campaign can break has a finding (False: see
    # `run_worker`).  None: as before findings were kept per requirement, a
    # non-distinct campaign stops at its first finding (callers that predate
    # the change, e.g. tests/quality, rely on it; new callers say False)
    first: bool | None = None
    # compare against this VMM instead of the bare machine (popek equiv)
    reference: str | None = None
    # stop once every one of these has been a finding's culprit (tests use it)
    stop_culprits: tuple[str, ...] = ()
    # the case budget, per worker: the worker stops after exactly this many
    # cases (``seconds`` is then only a cap, reported when it cuts the run
    # short); None: until the deadline
    max_cases: int | None = None
    # the campaign's case budget, shared among its workers (`split_cases`);
    # when set, it decides each worker's ``max_cases``
    cases: int | None = None
    # efficiency per instruction: what the design's declaration promises
    # (`popek.fuzz.efficiency.DirectRule.to_json`), given by a caller that
    # knows the innocuous instructions (the proofs name them); None: not judged
    direct: dict | None = None
    innocuous_share: float = 0.5  # the direct share each innocuous instruction needs
    # in every finding's file name: unique across processes and machines, so
    # campaigns with the same seed never overwrite each other (`new_campaign_id`)
    campaign_id: str = ""
    # the wall-clock time (time.time()) at which the whole campaign ends, set
    # by `run_campaign` when it starts: the workers' own clocks start after
    # pytest has, and a budget counted from there ran seconds past --time
    deadline: float | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        d["shard"] = list(self.shard)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "CampaignConfig":
        d = dict(d)
        d["shard"] = tuple(d["shard"])
        d["stop_culprits"] = tuple(d.get("stop_culprits", ()))
        return cls(**d)


def new_campaign_id() -> str:
    """Random, not derived from the seed: two campaigns with ``--seed 7`` at
    once, or one after the other, still name their findings apart."""
    return uuid.uuid4().hex[:10]


def parse_shard(text: str) -> tuple[int, int]:
    """``i/n`` with 1 <= i <= n, as users write it; stored from 0."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected i/n, e.g. 1/4") from None
    if not 1 <= i <= n:
        raise ValueError(f"--shard {text!r}: need 1 <= i <= n")
    return i - 1, n


def parse_cases(text: str) -> int:
    """``--cases N``: a positive whole number of cases (``2000``, ``2k``)."""
    t = str(text).strip().lower()
    try:
        value = int(t[:-1]) * 1000 if t.endswith("k") else int(t)
    except ValueError:
        raise ValueError(f"--cases {text!r}: expected a whole number of cases, e.g. 2000") from None
    if value <= 0:
        raise ValueError(f"--cases {text!r} must be at least 1")
    return value


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``1h`` -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    t = text.strip().lower()
    try:
        if t and t[-1] in units:
            value = float(t[:-1]) * units[t[-1]]
        else:
            value = float(t)
    except ValueError:
        raise ValueError(f"--time {text!r}: expected seconds or e.g. 30s, 10m, 1h") from None
    if value <= 0:
        raise ValueError(f"--time {text!r} must be positive")
    return value


def split_cases(total: int, workers: int) -> list[int]:
    """A campaign's case budget shared among its workers, the first ones
    taking the remainder: the shares add up to ``total``."""
    return [total // workers + (1 if k < total % workers else 0) for k in range(workers)]


# Which requirement each kind of problem (`popek.fuzz.execute.Problem.kind`)
# breaks.  A crash or a broken contract means the VMM's answers cannot be
# trusted at all, so, as before safety had a verdict of its own, it counts
# against fidelity: the guest did not get what the bare machine gives it.
REQUIREMENT = {
    "fidelity": "fidelity",
    "crash": "fidelity",
    "contract": "fidelity",
    "safety": "safety",
    "efficiency": "efficiency",
}
REQUIREMENTS = ("fidelity", "efficiency", "safety")


def requirement_of(kind: str) -> str:
    """The requirement a problem of ``kind`` breaks (an unknown kind: fidelity,
    the cell's trust)."""
    return REQUIREMENT.get(kind, "fidelity")


def breakable(config: CampaignConfig) -> tuple[str, ...]:
    """The requirements a campaign's cases can break: fidelity and safety
    always; efficiency when it produces efficiency problems (a per-case
    threshold, ``popek fuzz --min-direct-share``)."""
    reqs = ["fidelity", "safety"]
    if config.efficiency is not None:
        reqs.append("efficiency")
    return tuple(reqs)
