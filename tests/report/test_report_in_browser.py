"""The report opened in a real browser: headless Chromium (Debian's
``chromium``, which .ci/run installs when missing, as it does redis-server).

It checks what a person would see: the page loads with no error in the
console (nothing missing, nothing blocked, no script error), the verdict
table has one row per cell with the verdicts of report.json, and every plot
drew something on the page.  The screenshot is kept under the test's
temporary directory.  Without Chromium the test fails in CI (``CI=true``)
with the reason, and is skipped only on a developer's machine.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from devtools_pipe import Browser, find_chromium  # noqa: E402
from report_helpers import make_report  # noqa: E402


@pytest.fixture
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        message = ("headless Chromium is not installed (apt-get install chromium; .ci/run does it): "
                   "the report's browser test cannot run")  # fmt: skip
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def test_report_renders_in_chromium(chromium, tmp_path):
    doc, json_path, html_path = make_report(tmp_path)
    record = json.loads(json_path.read_text(encoding="utf-8"))
    with Browser(chromium, tmp_path / "chromium-profile") as browser:
        browser.open(html_path.resolve().as_uri())
        shot = tmp_path / "report.png"
        browser.screenshot(shot)
        rows = browser.evaluate(
            "[...document.querySelectorAll('table#verdicts tbody tr')].map(tr => ({"
            "design: tr.dataset.design, profile: tr.dataset.profile,"
            "verdict: tr.querySelector('td.verdict').textContent,"
            "cells: [...tr.children].map(td => td.textContent)}))"
        )
        plots = browser.evaluate(
            "[...document.querySelectorAll('svg.plot')].map(s => {const b = s.getBoundingClientRect();"
            "return {title: s.querySelector('title').textContent, width: b.width, height: b.height,"
            "marks: s.querySelectorAll('polyline, rect').length, points: +s.dataset.points}})"
        )
        errors = browser.errors()
    assert errors == [], errors
    assert len(rows) == len(record["rows"]) == 2
    for seen, row in zip(rows, record["rows"]):
        assert (seen["design"], seen["profile"], seen["verdict"]) == (row["design"], row["profile"], row["verdict"])
        assert seen["cells"][2:5] == [row["fidelity"]["text"], row["efficiency"]["text"], row["safety"]["text"]]
    titles = [p["title"] for p in plots]
    assert len(plots) == 4, titles
    for p in plots:  # drawn: laid out with a size, with marks in it
        assert p["width"] > 100 and p["height"] > 50 and p["marks"] > 1 and p["points"] > 0, p
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
