"""``index.html``: the report as a page, drawn from ``report.json`` alone.

One file that opens offline: the style is inline, the plots are inline SVG
(`popek.report.svg`), there is no script and no reference to anything
outside the file.  Sections in the order people read them: the verdict
table, the plots, the Z3 section, the counterexamples.  Every value is
escaped.  Elements the browser test looks for carry ids and classes:
``table#verdicts`` (one ``tr.row`` per row, ``td.verdict``), ``svg.plot``.
"""

from __future__ import annotations

from html import escape

from . import svg

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.MATCH{background:#e6f4ea}td.MISMATCH{background:#fde8e8}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:12px}code{font-size:12px}
.yes{color:#a61e4d}.no{color:#2b8a3e}.small{font-size:12px;color:#555}
.plots svg{display:block;margin:1em 0}
"""


def _e(v: object) -> str:
    return escape("" if v is None else str(v))


def render(doc: dict) -> str:
    """The page for one report document."""
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>popek {_e(doc['command'])} report</title>", f"<style>{STYLE}</style></head><body>",
        *_header(doc), *_verdicts(doc), *_plots(doc), *_proofs(doc), *_counterexamples(doc),
        "</body></html>",
    ]  # fmt: skip
    return "\n".join(parts) + "\n"


def _header(doc: dict) -> list[str]:
    s = doc["summary"]
    return [
        f"<h1>popek {_e(doc['command'])}: {s['match']} of {s['rows']} cells MATCH</h1>",
        f'<p class="small">popek {_e(doc["popek_version"])}, {_e(doc["created"])}, seed {_e(doc["seed"])}; '
        f"command: <code>popek {_e(' '.join(doc['argv']))}</code>. The record is report.json beside this page.</p>",
    ]  # fmt: skip


def _verdicts(doc: dict) -> list[str]:
    out = ["<h2>Verdict table</h2>",
           "<p>Each cell is one design on one profile: each requirement as observed by the campaign, "
           "against what the design declares. MATCH when all three agree.</p>",
           '<table id="verdicts"><thead><tr><th>design</th><th>profile</th><th>fidelity</th><th>efficiency</th>'
           "<th>safety</th><th>expected</th><th>verdict</th><th>cases</th></tr></thead><tbody>"]  # fmt: skip
    for r in doc["rows"]:
        kind = r["verdict"].split(" ")[0]
        out.append(
            f'<tr class="row" data-design="{_e(r["design"])}" data-profile="{_e(r["profile"])}">'
            f"<td>{_e(r['design'])}</td><td>{_e(r['profile'])}</td>"
            f"<td>{_e(r['fidelity']['text'])}</td><td>{_e(r['efficiency']['text'])}</td>"
            f"<td>{_e(r['safety']['text'])}</td><td>{_e(r['expected'])}</td>"
            f'<td class="verdict {_e(kind)}">{_e(r["verdict"])}</td><td>{_e(r["cases"])}</td></tr>'
        )
    out.append("</tbody></table>")
    return out


def _label(c: dict) -> str:
    return f"{c['design']} / {c['profile']}"


def _plots(doc: dict) -> list[str]:
    camps = doc["campaigns"]
    out = ['<h2>Plots</h2><div class="plots">']
    timed = [c for c in camps if c["timeline"]]
    if timed:
        out.append(svg.line_chart("ISA coverage over campaign time", [
            (_label(c), [(0.0, 0.0)] + [(p[0], p[2]) for p in c["timeline"]]) for c in timed], x_label="seconds",
            y_label="instruction x mode pairs reached"))  # fmt: skip
        out.append(svg.line_chart("Situation coverage over campaign time", [
            (_label(c), [(0.0, 0.0)] + [(p[0], p[3]) for p in c["timeline"]]) for c in timed], x_label="seconds",
            y_label="situations reached"))  # fmt: skip
    rates = [(_label(c), c["cases_per_second"]) for c in camps if c.get("cases_per_second")]
    if rates:
        out.append(svg.bar_chart("Cases per second", rates, percent=False))
    shared = [c for c in camps if c["direct_shares"]]
    if shared:
        names = sorted({n for c in shared for n in c["direct_shares"]})
        values = {(_label(c), n): v for c in shared for n, v in c["direct_shares"].items()}
        out.append(svg.heatmap("Direct-execution share per design and innocuous instruction",
                               [_label(c) for c in shared], names, values))  # fmt: skip
    if doc.get("migration"):
        m = doc["migration"]
        pages = m.get("pages_per_round") or []  # the pre-copy rounds, then the final copy (popek migrate --json)
        bars = [(f"round {k + 1}", float(n)) for k, n in enumerate(pages[:-1])] + \
            [("final copy", float(pages[-1]))] if pages else []
        out.append(svg.bar_chart(f"Migration of {m.get('vmm', 'the guest')}: pages sent per pre-copy round",
                                 bars, percent=False))  # fmt: skip
    if len(out) == 1:
        out.append("<p>No campaign data to plot.</p>")
    out.append("</div>")
    return out


def _proofs(doc: dict) -> list[str]:
    out = ["<h2>Z3: classification and theorems</h2>"]
    proofs = doc.get("proofs")
    if not proofs or not proofs.get("available"):
        out.append("<p>Not part of this command's run (<code>popek verify</code> and <code>popek prove</code> "
                   "run the proofs).</p>")  # fmt: skip
        return out
    for name, p in proofs["profiles"].items():
        out.append(f'<h3 id="proofs-{_e(name)}">profile {_e(name)}</h3>')
        if "error" in p:
            out.append(f"<p>The proofs failed to run: {_e(p['error'])}</p>")
            continue
        out.append(
            f"<ul><li>Theorem 1 (every sensitive instruction is privileged): <b>{_e(p['theorem1'])}</b>"
            f"{_offenders(p['theorem1_offenders'])}</li>"
            f"<li>Theorem 3 (every user-sensitive instruction is privileged): <b>{_e(p['theorem3'])}</b>"
            f"{_offenders(p['theorem3_offenders'])}</li>"
            f"<li>trap-and-emulate simulation: <b>{_e(p.get('simulation_text', p['trap_and_emulate_simulation']))}</b>"
            "</li></ul>"
        )
        for o in p.get("offenders", []):
            out.append(f"<p>Offender <code>{_e(o['insn'])}</code> ({_e(', '.join(o['kinds']))}; "
                       f"Theorem {_e(' and '.join(map(str, o['theorems'])))}):</p>")  # fmt: skip
            for what in ("sensitive", "unprivileged"):
                w = o.get(what)
                if w:
                    out.append(f'<p class="small">{_e(what)} witness {_e(w["id"])}: {_e(w["relation"])}</p>'
                               f"<pre>{_e(w['assembly'])}</pre>")  # fmt: skip
        classes = p.get("classification") or {}
        if classes:
            cols = list(next(iter(classes.values())))
            out.append('<table class="classification"><thead><tr><th>instruction</th>'
                       + "".join(f"<th>{_e(c)}</th>" for c in cols) + "</tr></thead><tbody>")
            for insn, facts in classes.items():
                out.append(f"<tr><td><code>{_e(insn)}</code></td>" + "".join(
                    f'<td class="{_e(facts[c])}">{_e(facts[c])}</td>' for c in cols) + "</tr>")
            out.append("</tbody></table>")
    return out


def _offenders(names: list[str]) -> str:
    return f" (offenders: {_e(', '.join(names))})" if names else ""


def _counterexamples(doc: dict) -> list[str]:
    out = ["<h2>Counterexamples</h2>"]
    if not doc["counterexamples"]:
        out.append("<p>None: no campaign found a counterexample.</p>")
    for k, c in enumerate(doc["counterexamples"], 1):
        out.append(f'<h3 id="cx-{k}">{k}. {_e(c["design"])} on {_e(c["profile"])}: {_e(c["kind"])}</h3>')
        out.append(f"<p>{_e(c['message'])}</p>")
        if c["diffs"]:
            out.append("<table><thead><tr><th>field</th><th>reference</th><th>vmm</th></tr></thead><tbody>"
                       + "".join(f"<tr><td>{_e(n)}</td><td>{_e(a)}</td><td>{_e(b)}</td></tr>" for n, a, b in c["diffs"])
                       + "</tbody></table>")  # fmt: skip
        if c["assembly"]:
            out.append(f"<pre>{_e(c['assembly'])}</pre>")
        out.append(f"<p>Replay: <code>{_e(c['replay'])}</code></p>")
    return out
