"""report.json against its schema, and index.html as a file that stands
alone: the verdict table, plots, the Z3 section, counterexamples with their
assembly and replay command, nothing fetched from anywhere."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import jsonschema
import pytest

from popek.cli import main
from popek.report import document, files, schema_path
from popek.report.page import render

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_helpers import make_report  # noqa: E402


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return make_report(tmp_path_factory.mktemp("report"))


def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_report_json_validates_against_its_schema(report):
    doc, json_path, _ = report
    on_disk = json.loads(json_path.read_text(encoding="utf-8"))
    assert on_disk == doc
    errors = [f"{e.json_path}: {e.message}" for e in validator().iter_errors(on_disk)]
    assert not errors, errors
    assert on_disk["version"] == 1 and on_disk["format"] == "popek-report"


def test_the_schema_rejects_what_it_should(report):
    doc = json.loads(report[1].read_text(encoding="utf-8"))
    v = validator()
    for broken in (
        {**doc, "version": 2},
        {**doc, "rows": [{**doc["rows"][0], "verdict": "PASS"}]},
        {**doc, "surprise": True},
        {k: doc[k] for k in doc if k != "rows"},
    ):
        assert not v.is_valid(broken)


def test_report_rows_are_the_verdict_table(report):
    doc, _, _ = report
    rows = {(r["design"], r["profile"]): r for r in doc["rows"]}
    te = rows[("trap-and-emulate", "x86")]
    assert te["fidelity"]["observed"] is False and te["fidelity"]["expected"] is False and te["match"] is True
    assert rows[("emulator", "x86")]["fidelity"]["observed"] is True
    assert doc["summary"] == {"rows": 2, "match": 2, "mismatch": 0}


def test_page_is_self_contained_and_shows_everything(report):
    doc, _, html_path = report
    html = html_path.read_text(encoding="utf-8")
    # nothing fetched: no script, no external reference of any kind
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:|//)""", html, re.I)
    assert "@import" not in html and "url(" not in html
    # the verdict table: one row per cell, with its verdict
    assert html.count('<tr class="row"') == len(doc["rows"])
    for r in doc["rows"]:
        assert f'data-design="{r["design"]}" data-profile="{r["profile"]}"' in html
    # plots: coverage over time (ISA and situations), cases per second, direct shares
    plots = re.findall(r'<svg class="plot"[^>]*data-points="(\d+)"', html)
    assert len(plots) == 4 and all(int(n) > 0 for n in plots), plots
    # the counterexample with its assembly and replay command
    cx = doc["counterexamples"][0]
    assert cx["design"] == "trap-and-emulate" and cx["assembly"].strip()
    assert f"popek fuzz --replay {cx['path']}" in html
    assert cx["assembly"].splitlines()[0].replace("&", "&amp;").replace("<", "&lt;") in html


def test_page_escapes_what_it_shows(report):
    doc = json.loads(report[1].read_text(encoding="utf-8"))
    doc["rows"][0]["design"] = "<img src=x onerror=alert(1)>"
    html = render(doc)
    assert "<img src=x" not in html and "&lt;img src=x" in html


def test_verify_proofs_read_as_expected_and_fill_the_z3_section(report, tmp_path):
    """One test for both, as the x86 proofs are the expensive part: a
    refutation the design table predicts reads as one (issue 14's "simulation
    FAILED"), and the report's Z3 section shows the offenders' witnesses."""
    from popek.commands.verify import proofs_section

    lines, record = proofs_section(["x86"])
    assert "simulation refuted, as expected (witness: " in lines[1] and "FAILED" not in lines[1]
    x86 = record["profiles"]["x86"]
    assert x86["simulation_expected"] == "failed" and x86["simulation_witness"]
    assert {o["insn"] for o in x86["offenders"]} >= {"popf", "pushf"}

    doc = json.loads(report[1].read_text(encoding="utf-8"))
    doc["proofs"] = record
    assert not list(validator().iter_errors(doc))
    html = render(doc)
    assert "refuted, as expected (witness: " in html
    assert "Offender <code>popf</code>" in html and "<pre>" in html
    assert html.count("<tr><td><code>") >= len(x86["classification"])


def test_report_dir_is_checked_before_any_work(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    rc = main(["fuzz", "--vmm", "emulator", "--profile", "pg", "--cases", "5", "--report", str(blocker)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--report" in err and "not a directory" in err


def test_fuzz_report_is_one_row_and_paths_are_printed_last(capsys, tmp_path, monkeypatch):
    from popek.commands import check

    from report_helpers import INNOCUOUS_X86

    # the innocuous set given, not classified again (the proofs' tests do that)
    monkeypatch.setattr(check, "innocuous_instructions", lambda profiles: {"x86": INNOCUOUS_X86})
    rc = main(["fuzz", "--vmm", "trap-and-emulate", "--profile", "x86", "--cases", "20", "-q", "--seed", "9",
               "--findings", str(tmp_path / "f"), "--db", str(tmp_path / "db"), "--report", str(tmp_path / "r")])
    out = capsys.readouterr().out.splitlines()
    assert rc in (0, 1)
    assert out[-2:] == [f"report: {tmp_path / 'r' / files.JSON_NAME}", f"report: {tmp_path / 'r' / files.HTML_NAME}"]
    doc = json.loads((tmp_path / "r" / files.JSON_NAME).read_text(encoding="utf-8"))
    assert not list(validator().iter_errors(doc))
    assert doc["command"] == "fuzz" and doc["seed"] == 9 and len(doc["rows"]) == 1
    assert doc["rows"][0]["fidelity"]["expected"] is False  # trap-and-emulate declares x86 unfaithful


def test_document_keeps_an_unreadable_finding_by_path(tmp_path):
    missing = tmp_path / "gone.json"
    cx = document.counterexample("d", "pg", str(missing))
    assert cx["path"] == str(missing) and "could not be read" in cx["message"]


def test_verify_report_paths_are_its_last_lines_and_make_verify_asks_for_them(capsys, tmp_path, monkeypatch):
    """What ``make verify`` relies on: ``popek verify --report DIR`` ends by
    printing the two paths.  (The innocuous set is given rather than
    classified: that is the proofs' job, tested in tests/proofs.)"""
    from popek.commands import verify

    from report_helpers import INNOCUOUS_X86

    monkeypatch.setattr(verify, "innocuous_instructions", lambda profiles: {"x86": INNOCUOUS_X86})
    rc = main(["verify", "--designs", "emulator", "--profiles", "x86", "--cases", "10", "--no-proofs", "-q",
               "--findings", str(tmp_path / "f"), "--report", str(tmp_path / "r")])  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert out[-2:] == [f"report: {tmp_path / 'r' / files.JSON_NAME}", f"report: {tmp_path / 'r' / files.HTML_NAME}"]
    doc = json.loads((tmp_path / "r" / files.JSON_NAME).read_text(encoding="utf-8"))
    assert not list(validator().iter_errors(doc)) and doc["rows"][0]["verdict"] == "MATCH"
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^verify:.*\n\t.*popek verify .*--report \$\(VERIFY_REPORT\)$", makefile, re.M)
    assert re.search(r"^VERIFY_REPORT \?= \.popek/report$", makefile, re.M)


def test_migration_rounds_are_plotted_when_the_report_has_them(report):
    doc = json.loads(report[1].read_text(encoding="utf-8"))
    doc["migration"] = {"vmm": "trap-and-emulate", "rounds": 3, "pages_per_round": [256, 21, 2, 0]}
    assert not list(validator().iter_errors(doc))
    html = render(doc)
    label = r'aria-label="Migration of trap-and-emulate[^"]*"'
    plot = re.search(rf'<svg class="plot"[^>]*{label}[^>]*data-points="(\d+)"', html)
    assert plot and plot.group(1) == "4" and "final copy" in html


def test_equiv_report_validates_and_names_both_vmms(capsys, tmp_path):
    rc = main(["equiv", "emulator", "trap-and-emulate", "--profile", "x86", "--cases", "30", "--seed", "2",
               "--findings", str(tmp_path / "f"), "--report", str(tmp_path / "r")])  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert rc == 1 and out[-1] == f"report: {tmp_path / 'r' / files.HTML_NAME}"
    doc = json.loads((tmp_path / "r" / files.JSON_NAME).read_text(encoding="utf-8"))
    assert not list(validator().iter_errors(doc))
    (row,) = doc["rows"]
    assert row["design"] == "trap-and-emulate vs emulator" and row["fidelity"]["observed"] is False
    assert row["verdict"] == "MISMATCH (fidelity)"
    assert doc["counterexamples"][0]["replay"].startswith("popek fuzz --replay ")


def test_check_report_validates(capsys, tmp_path, monkeypatch):
    """``popek check --report``: a plug-in without capabilities (the
    capability section is the costly part of check, and tested elsewhere)."""
    from popek.commands import check

    from report_helpers import INNOCUOUS_X86

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "fuzz"))  # tiny_vmms
    monkeypatch.setattr(check, "innocuous_instructions", lambda profiles: {"x86": INNOCUOUS_X86})
    rc = main(["check", "tiny_vmms:Interpreter", "--profile", "x86", "--cases", "20", "-q",
               "--findings", str(tmp_path / "f"), "--report", str(tmp_path / "r")])  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"report: {tmp_path / 'r' / files.HTML_NAME}", out
    doc = json.loads((tmp_path / "r" / files.JSON_NAME).read_text(encoding="utf-8"))
    assert not list(validator().iter_errors(doc))
    assert doc["command"] == "check" and [r["design"] for r in doc["rows"]] == ["tiny_vmms:Interpreter"]
    assert rc == (0 if doc["rows"][0]["match"] else 1)
