"""Findings on disk: one JSON file per counterexample, written the moment it
is found and rewritten as Hypothesis shrinks it.

A file holds everything needed to read and to replay the counterexample
without popek's strategies (the guest case *and* its image), so it stays
valid when the generator changes.  Its format is versioned and documented
(docs/file-formats.md); `read` and `case_from_blob` check every field before
use and name the file and the field when one is wrong.  Writes are atomic
and durable (`popek.spec.stored.write_atomic`): a campaign killed mid-write
leaves the previous version whole, and a write that fails (a full disk) is
reported in the document it returns rather than raised, so the campaign
still reports, and prints, the finding it could not keep.

File names carry the campaign's id (unique across processes and machines)
and the case's digest, so campaigns with the same seed, at once or one after
the other, into one directory never overwrite each other's findings.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import zlib
from pathlib import Path
from typing import Any

from popek.spec import profiles, stored
from popek.spec.asm import disassemble
from popek.spec.stored import StoredError

from .execute import Problem
from .guest import SMALL_MEMSIZE, UNDEFINED, GuestCase, Op
from .report import format_problem, replay_command

DEFAULT_DIR = Path(".popek") / "findings"
BLOB_PREFIX = "popek1:"
FORMAT = "popek-finding"
VERSION = 1
VERSIONS = (1,)  # and 0: files written before the format had a header
KINDS = ("fidelity", "crash", "contract", "safety", "efficiency")
MAX_BLOB = 1 << 20  # characters of a case blob
MAX_CASE_JSON = 1 << 20  # bytes a blob expands to (a case is a few kB)
MAX_SECTION = 256  # instructions in one section (more than any layout has room for)
MAX_STEPS = 100_000  # as `popek fuzz --steps`


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:60] or "vmm"


def finding_path(
    directory: Path, vmm: str, profile: str, kind: str, tag: str, *, campaign: str = "", digest: str = ""
) -> Path:
    """Where a finding goes: readable parts first (VMM, profile, kind, the
    worker's batch tag), then the campaign id and the case digest that keep
    names apart across campaigns."""
    extra = "".join(f"-{_slug(x)}" for x in (campaign, digest[:8]) if x)
    return Path(directory) / f"{_slug(vmm)}-{_slug(profile)}-{kind}-{tag}{extra}.json"


def write(
    path: Path,
    *,
    vmm: str,
    case: GuestCase,
    problem: Problem,
    seconds: float,
    cases: int,
    shrunk: bool,
    culprit: dict | None = None,
    reference: str = "bare",
    durable: bool = True,
) -> dict:
    """Write the finding to ``path`` and return its document.  A write that
    fails is not raised: the document says ``saved: False`` and why
    (``save_error``), and its ``report`` replays from the blob, so whoever
    reports the finding can still print all of it."""
    prof = profiles.get(case.profile)
    image = case.image(prof)
    blob = case_blob(case)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "vmm": vmm,
        "profile": case.profile,
        "kind": problem.kind,
        "message": problem.message,
        "diffs": [[k, a, b] for k, a, b in problem.diffs],
        "instructions": case.instructions,
        "uses": sorted({op.name for sec in (case.kernel, case.handler, case.user) if sec for op in sec}),
        "shrunk": shrunk,
        # the first step at which the states differ, and what ran there
        "culprit": culprit,
        "seconds_to_detection": round(seconds, 3),
        "cases_to_detection": cases,
        "found_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "replay": replay_command(vmm, case, str(path)),
        "assembly": disassemble(image, prof),
        "reference": reference,
        "report": format_problem(problem, case, vmm, path=str(path), reference=reference),
        "blob": blob,  # the case in one word: popek fuzz --replay BLOB
        "case": case.to_json(),
        "image": {"entry": image.entry, "words": {str(a): w for a, w in sorted(image.words.items())}},
    }
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        stored.write_atomic(path, (json.dumps(doc, indent=1) + "\n").encode("utf-8"), durable=durable)
    except OSError as e:
        doc["saved"] = False
        doc["save_error"] = f"{path}: {e.strerror or e}"
        doc["replay"] = replay_command(vmm, case, blob)
        doc["report"] = format_problem(problem, case, vmm, path=blob, reference=reference)
    return doc


def case_blob(case: GuestCase) -> str:
    """The case as one printable word (zlib-compressed JSON, base64)."""
    raw = json.dumps(case.to_json(), separators=(",", ":"), sort_keys=True).encode()
    return BLOB_PREFIX + base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode()


def case_from_blob(blob: str) -> GuestCase:
    """The case a blob holds, checked like a finding file's; `StoredError`
    (naming the blob by its first characters) when it is not one."""
    name = blob[:24] + ("..." if len(blob) > 24 else "")
    if not blob.startswith(BLOB_PREFIX):
        raise StoredError(name, f"a case blob starts with {BLOB_PREFIX!r}")
    if len(blob) > MAX_BLOB:
        raise StoredError(name, f"a case blob is at most {MAX_BLOB} characters")
    try:
        packed = base64.urlsafe_b64decode(blob[len(BLOB_PREFIX) :].encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError) as e:
        raise StoredError(name, f"not base64: {e}") from None
    raw = stored.inflate(packed, limit=MAX_CASE_JSON, file=name)
    return case_from_json(stored.loads(raw, file=name), file=name)


def read(path: str | Path) -> dict:
    """A finding file, its header and fields checked (`StoredError` otherwise)."""
    doc = stored.read_json(path, what="popek finding")
    file = str(path)
    stored.check_header(doc, file=file, kind=FORMAT, versions=VERSIONS)
    if "case" not in doc:
        raise StoredError(file, "not a popek finding (no 'case')")
    if "kind" in doc and doc["kind"] not in KINDS:
        raise StoredError(file, f"{str(doc['kind'])[:40]!r} is not one of {', '.join(KINDS)}", "kind")
    for key in ("vmm", "message", "report", "replay"):
        if key in doc:
            stored.text(doc[key], file=file, field=key, max_len=1 << 20)
    doc["case"] = case_from_json(doc["case"], file=file).to_json()
    return doc


def case_of(doc: dict) -> GuestCase:
    return GuestCase.from_json(doc["case"])


def _ops(value: Any, *, file: str, field: str, prof, nullable: bool) -> tuple[Op, ...] | None:
    if value is None and nullable:
        return None
    mask, nregs = prof.arch.mask, prof.arch.nregs
    out = []
    for k, op in enumerate(stored.array(value, file=file, field=field, max_len=MAX_SECTION)):
        at = f"{field}[{k}]"
        op = stored.array(op, file=file, field=at, max_len=5)
        if len(op) < 1:
            raise StoredError(file, "an instruction is [name, rd, rs, imm, skip]", at)
        name = stored.text(op[0], file=file, field=at + ".name", max_len=40)
        if name not in prof.by_name and name != UNDEFINED:
            raise StoredError(file, f"profile {prof.name!r} has no instruction {name!r}", at + ".name")
        rd = stored.integer(op[1], 0, nregs - 1, file=file, field=at + ".rd") if len(op) > 1 else 0
        rs = stored.integer(op[2], 0, nregs - 1, file=file, field=at + ".rs") if len(op) > 2 else 0
        imm = stored.integer(op[3], -(mask + 1), mask, file=file, field=at + ".imm") if len(op) > 3 else 0
        skip = None
        if len(op) > 4 and op[4] is not None:
            skip = stored.integer(op[4], 0, MAX_SECTION, file=file, field=at + ".skip")
        out.append(Op(name, rd, rs, imm, skip))
    return tuple(out)


def case_from_json(d: Any, *, file: str, field: str = "case") -> GuestCase:
    """A `GuestCase` from its JSON form, every field's type and range checked
    first: a wrong one is a `StoredError` naming it, never a traceback from
    deep inside the layout or the machine."""
    if not isinstance(d, dict):
        raise StoredError(file, f"expected an object, got {type(d).__name__}", field)
    known = set(GuestCase.__dataclass_fields__)
    unknown = sorted(set(d) - known)
    if unknown:
        raise StoredError(file, f"unknown field {str(unknown[0])[:40]!r}", field)
    name = stored.text(d.get("profile"), file=file, field=f"{field}.profile", max_len=200)
    try:
        prof = profiles.get(name)
    except profiles.ProfileError as e:
        raise StoredError(file, str(e), f"{field}.profile") from None
    mask = prof.arch.mask

    def num(key: str, lo: int, hi: int, default: int) -> int:
        return stored.integer(d.get(key, default), lo, hi, file=file, field=f"{field}.{key}")

    def ints(key: str, lo: int, hi: int, max_len: int) -> tuple[int, ...]:
        items = stored.array(d.get(key, []), file=file, field=f"{field}.{key}", max_len=max_len)
        return tuple(stored.integer(v, lo, hi, file=file, field=f"{field}.{key}[{k}]") for k, v in enumerate(items))

    if "kernel" not in d:
        raise StoredError(file, "missing", f"{field}.kernel")
    memsize = num("memsize", SMALL_MEMSIZE, 1 << prof.arch.word, 0x400)
    steps = num("steps", 1, MAX_STEPS, 400)
    user_ie = d.get("user_ie", False)
    if not isinstance(user_ie, bool):
        raise StoredError(file, f"expected true or false, got {type(user_ie).__name__}", f"{field}.user_ie")
    perms = d.get("page_perms")
    chunks = ints("chunks", 1, MAX_STEPS, MAX_STEPS)
    if chunks and sum(chunks) != steps:
        raise StoredError(file, f"the chunks add up to {sum(chunks)}, not to steps ({steps})", f"{field}.chunks")
    case = GuestCase(
        profile=name,
        kernel=_ops(d["kernel"], file=file, field=f"{field}.kernel", prof=prof, nullable=False),
        handler=_ops(d.get("handler"), file=file, field=f"{field}.handler", prof=prof, nullable=True),
        user=_ops(d.get("user"), file=file, field=f"{field}.user", prof=prof, nullable=True),
        user_ie=user_ie,
        user_bound=num("user_bound", 0, mask, 0x100),
        trap_limit=num("trap_limit", 0, mask, 6),
        timer=num("timer", 0, mask, 0),
        kdata=ints("kdata", -(mask + 1), mask, 0x40),
        page_perms=None if perms is None else ints("page_perms", 0, mask, (1 << prof.arch.word) // prof.arch.page_size),
        memsize=memsize,
        steps=steps,
        chunks=chunks,
    )
    try:
        case.image(prof)  # what the layout and the encoder make of it
    except Exception as e:  # the fields are in range; anything left is the case's own inconsistency
        raise StoredError(file, f"does not lay out: {e}", field) from None
    return case


def list_findings(directory: str | Path) -> list[Path]:
    d = Path(directory)
    return sorted(d.glob("*.json")) if d.is_dir() else []
