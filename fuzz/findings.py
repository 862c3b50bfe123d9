"""Findings on disk: one JSON file per counterexample, written the moment it
is found and rewritten as Hypothesis shrinks it.

A file holds everything needed to read and to replay the counterexample
without popek's strategies (the guest case *and* its image), so it stays
valid when the generator changes.  Writes are atomic (temporary file, then
rename): a campaign killed mid-write leaves the previous version whole.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
import zlib
from pathlib import Path

from popek.spec import profiles
from popek.spec.asm import disassemble

from .execute import Problem
from .guest import GuestCase
from .report import format_problem, replay_command

DEFAULT_DIR = Path(".popek") / "findings"
BLOB_PREFIX = "popek1:"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:60] or "vmm"


def finding_path(directory: Path, vmm: str, profile: str, kind: str, tag: str) -> Path:
    return Path(directory) / f"{_slug(vmm)}-{profile}-{kind}-{tag}.json"


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
) -> dict:
    prof = profiles.get(case.profile)
    image = case.image(prof)
    doc = {
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
        "blob": case_blob(case),  # the case in one word: popek fuzz --replay BLOB
        "case": case.to_json(),
        "image": {"entry": image.entry, "words": {str(a): w for a, w in sorted(image.words.items())}},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return doc


def case_blob(case: GuestCase) -> str:
    """The case as one printable word (zlib-compressed JSON, base64)."""
    raw = json.dumps(case.to_json(), separators=(",", ":"), sort_keys=True).encode()
    return BLOB_PREFIX + base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode()


def case_from_blob(blob: str) -> GuestCase:
    if not blob.startswith(BLOB_PREFIX):
        raise ValueError(f"a case blob starts with {BLOB_PREFIX!r}")
    raw = zlib.decompress(base64.urlsafe_b64decode(blob[len(BLOB_PREFIX) :].encode()))
    return GuestCase.from_json(json.loads(raw))


def read(path: str | Path) -> dict:
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or "case" not in doc:
        raise ValueError(f"{path}: not a popek finding (no 'case')")
    return doc


def case_of(doc: dict) -> GuestCase:
    return GuestCase.from_json(doc["case"])


def list_findings(directory: str | Path) -> list[Path]:
    d = Path(directory)
    return sorted(d.glob("*.json")) if d.is_dir() else []
