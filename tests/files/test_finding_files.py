"""Finding files and case blobs read back: a damaged one is one line naming
the file and the field, never a traceback and never blamed on the VMM; an
intact one replays (issue 16, item 1)."""

from __future__ import annotations

import base64
import copy
import json
import os
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from popek.cli import main
from popek.fuzz import findings, properties
from popek.fuzz.guest import GuestCase, Op
from popek.spec import stored
from popek.spec.stored import StoredError

VMM = "trap-and-emulate"
# rdmode in supervisor mode: trap-and-emulate on x86 runs the guest kernel in
# user mode, so the guest reads the wrong mode (a fidelity finding)
CASE = GuestCase("x86", (Op("rdmode", 0), Op("li", 1, 0, 5)))


def _finding(tmp_path) -> tuple[str, dict]:
    problem = properties.check(__import__("popek.registry").registry.load(VMM), CASE).first()
    assert problem is not None and problem.kind == "fidelity"
    path = tmp_path / "f.json"
    doc = findings.write(path, vmm=VMM, case=CASE, problem=problem, seconds=0.1, cases=1, shrunk=True)
    assert doc.get("saved", True) and path.exists()
    return str(path), json.loads(path.read_text())


@pytest.fixture(scope="module")
def finding(tmp_path_factory):
    return _finding(tmp_path_factory.mktemp("finding"))


def replay(capsys, target: str) -> tuple[int, str, str]:
    rc = main(["fuzz", "--vmm", VMM, "--profile", "x86", "--replay", target])
    out, err = capsys.readouterr()
    return rc, out, err


def test_written_finding_is_versioned_and_replays(capsys, finding):
    path, doc = finding
    assert doc["format"] == findings.FORMAT and doc["version"] == findings.VERSION
    rc, out, _ = replay(capsys, path)
    assert rc == 1 and out.startswith("FIDELITY")
    rc, out, _ = replay(capsys, doc["blob"])
    assert rc == 1 and out.startswith("FIDELITY")


ROWS = {  # the rows and their like: mutate the document, expect the field named
    "steps-a-string": (lambda d: d["case"].update(steps="400"), "case.steps"),
    "steps-negative": (lambda d: d["case"].update(steps=-5), "case.steps"),
    "memsize-zero": (lambda d: d["case"].update(memsize=0), "case.memsize"),
    "memsize-huge": (lambda d: d["case"].update(memsize=1 << 40), "case.memsize"),
    "op-unknown": (lambda d: d["case"]["kernel"].__setitem__(0, ["nope"]), "case.kernel[0].name"),
    "op-register": (lambda d: d["case"]["kernel"][0].__setitem__(1, 99), "case.kernel[0].rd"),
    "kernel-a-dict": (lambda d: d["case"].update(kernel={"a": 1}), "case.kernel"),
    "chunks-wrong-sum": (lambda d: d["case"].update(chunks=[1, 2]), "case.chunks"),
    "unknown-field": (lambda d: d["case"].update(extra=1), "unknown field"),
    "no-case": (lambda d: d.pop("case"), "no 'case'"),
    "case-a-list": (lambda d: d.update(case=[1, 2]), "case"),
    "profile-unknown": (lambda d: d["case"].update(profile="zz"), "case.profile"),
    "bool-for-int": (lambda d: d["case"].update(trap_limit=True), "case.trap_limit"),
    "kind-unknown": (lambda d: d.update(kind="banana"), "kind"),
    "version-future": (lambda d: d.update(version=99), "version"),
    "format-other": (lambda d: d.update(format="snapshot"), "format"),
}


@pytest.mark.parametrize("row", sorted(ROWS))
def test_damaged_finding_is_one_line_naming_the_field(capsys, tmp_path, finding, row):
    mutate, field = ROWS[row]
    doc = copy.deepcopy(finding[1])
    mutate(doc)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    rc, out, err = replay(capsys, str(bad))
    assert rc == 2 and out == "", (out, err)
    assert err.startswith(f"popek: error: {bad}") and err.count("\n") == 1, err
    assert field in err


def test_replay_of_a_directory_is_one_line(capsys, tmp_path):
    rc, _, err = replay(capsys, str(tmp_path))
    assert rc == 2 and "is a directory" in err and err.count("\n") == 1, err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_replay_of_a_fifo_does_not_block(capsys, tmp_path):
    fifo = tmp_path / "f.json"
    os.mkfifo(fifo)
    rc, _, err = replay(capsys, str(fifo))
    assert rc == 2 and "not a regular file" in err, err


def _blob(raw: bytes) -> str:
    return findings.BLOB_PREFIX + base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode()


@pytest.mark.parametrize("blob, expected", [
    (_blob(b"[" * 10_000_000), "expands to more than"),  # a compression bomb: stops at the limit
    (_blob(b"[" * 100_000 + b"]" * 100_000), "nested"),  # was a RecursionError
    (_blob(b'{"profile": "x86", "kernel": [], "steps": ' + b"9" * 5000 + b"}"), "too long"),
    (findings.BLOB_PREFIX + "xyz", "not base64"),
    (findings.BLOB_PREFIX + base64.urlsafe_b64encode(zlib.compress(b"{}")[:-3]).decode(), "truncated"),
])  # fmt: skip
def test_bad_blob_is_one_line(capsys, blob, expected):
    rc, _, err = replay(capsys, blob)
    assert rc == 2 and expected in err and err.count("\n") == 1, err


# -- mutation: a clean error or a correct replay --------------------------------
def _mutations():
    scalar = hs.none() | hs.booleans() | hs.integers(-(1 << 70), 1 << 70) | hs.text(max_size=5) | hs.floats()
    value = hs.recursive(scalar, lambda v: hs.lists(v, max_size=3), max_leaves=5)
    path = hs.sampled_from([
        ("case", "steps"), ("case", "memsize"), ("case", "kernel"), ("case", "handler"), ("case", "user"),
        ("case", "user_bound"), ("case", "timer"), ("case", "kdata"), ("case", "page_perms"),
        ("case", "chunks"), ("case", "trap_limit"), ("case", "user_ie"), ("case", "profile"),
        ("case", "kernel", 0), ("case", "kernel", 0, 1), ("case", "kernel", 0, 3), ("case", "kernel", 0, 4),
        ("kind",), ("version",), ("format",), ("case",),
    ])  # fmt: skip
    return hs.lists(hs.tuples(path, value), min_size=1, max_size=3)


def _set(doc, path, value) -> None:
    """doc[path] = value where the path exists (else nothing)."""
    target = doc
    for k, key in enumerate(path):
        holds = isinstance(target, dict) and key in target or (
            isinstance(target, list) and isinstance(key, int) and key < len(target))
        if not holds:
            return
        if k == len(path) - 1:
            target[key] = value
            return
        target = target[key]


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(changes=_mutations(), cut=hs.none() | hs.integers(0, 4000), compress=hs.booleans())
def test_mutated_finding_is_clean_error_or_correct_replay(finding, tmp_path_factory, changes, cut, compress):
    doc = copy.deepcopy(finding[1])
    for path, value in changes:
        _set(doc, path, value)
    raw = json.dumps(doc).encode()
    if cut is not None:
        raw = raw[:cut]  # truncated, as by a crash or a full disk
    target = tmp_path_factory.mktemp("m") / "m.json"
    if compress:  # the same document as a blob (zlib, base64)
        text = _blob(raw)
        reader = findings.case_from_blob
    else:
        target.write_bytes(raw)
        text = str(target)
        reader = lambda p: findings.case_of(findings.read(p))  # noqa: E731
    try:
        case = reader(text)
    except StoredError as e:
        assert "\n" not in str(e)
        return
    # accepted: it must be a case that runs, bare and under the VMM, to a verdict
    outcome = properties.check(__import__("popek.registry").registry.load(VMM), case)
    assert all(p.kind in ("fidelity", "safety", "efficiency") for p in outcome.problems), outcome.problems


def test_unmutated_json_document_reads_back_equal(finding):
    doc = finding[1]
    assert findings.case_from_json(doc["case"], file="x") == GuestCase.from_json(doc["case"])
    assert findings.case_from_blob(doc["blob"]) == GuestCase.from_json(doc["case"])


# -- the reader's own bounds ------------------------------------------------------
def test_stored_loads_bounds():
    with pytest.raises(StoredError, match="nested"):
        stored.loads("[" * 1000 + "]" * 1000, file="f")
    with pytest.raises(StoredError, match="too long"):
        stored.loads("1" * 50, file="f")
    assert stored.loads('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', file="f")  # brackets in a string
    with pytest.raises(StoredError, match="bytes"):
        stored.loads("0" * 20, file="f", max_bytes=10)

