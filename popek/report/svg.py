"""Plots as inline SVG, drawn here: no plotting library, no script, no CDN.

Two kinds are enough for the report: a line chart (coverage over campaign
time, one line per campaign) and a horizontal bar chart (direct share per
instruction, cases per second per cell).  Each returns one ``<svg>``
element with ``class="plot"`` and a ``data-points`` count, so the browser
test can check that every plot drew something.  Text is escaped; sizes are
fixed so that the page lays out the same everywhere.
"""

from __future__ import annotations

from html import escape
from typing import Sequence

PALETTE = ("#1f6fb2", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285", "#c2255c", "#5c940d")


def _frame(width: int, height: int, title: str, points: int, body: list[str]) -> str:
    return (
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" data-points="{points}">'
        f"<title>{escape(title)}</title>" + "".join(body) + "</svg>"
    )


def line_chart(
    title: str, series: Sequence[tuple[str, Sequence[tuple[float, float]]]], *,
    x_label: str, y_label: str, y_max: float = 1.0, percent: bool = True,
) -> str:
    """Lines of (x, y) points, y from 0 to ``y_max``; a legend below."""
    width, left, right, top = 640, 56, 16, 28
    plot_h = 200
    legend_rows = (len(series) + 2) // 3
    height = top + plot_h + 40 + 18 * legend_rows
    x_max = max((x for _, pts in series for x, _ in pts), default=1.0) or 1.0
    pw = width - left - right

    def px(x: float) -> float:
        return left + pw * x / x_max

    def py(y: float) -> float:
        return top + plot_h * (1 - min(y, y_max) / y_max)

    body = [f'<text x="{left}" y="18" font-size="13" font-weight="bold">{escape(title)}</text>',
            f'<rect x="{left}" y="{top}" width="{pw}" height="{plot_h}" fill="none" stroke="#999"/>']
    for k in range(5):
        y = y_max * k / 4
        label = f"{y:.0%}" if percent else f"{y:g}"
        body.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#eee"/>')
        body.append(f'<text x="{left - 6}" y="{py(y) + 4:.1f}" font-size="10" text-anchor="end">{label}</text>')
    body.append(f'<text x="{left + pw / 2}" y="{top + plot_h + 28}" font-size="11" text-anchor="middle">'
                f"{escape(x_label)} (0 to {x_max:g})</text>")  # fmt: skip
    body.append(f'<text x="12" y="{top + plot_h / 2}" font-size="11" transform="rotate(-90 12 {top + plot_h / 2})" '
                f'text-anchor="middle">{escape(y_label)}</text>')  # fmt: skip
    points = 0
    for i, (name, pts) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        if pts:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
            body.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{path}"/>')
            points += len(pts)
        lx = left + (i % 3) * 200
        ly = top + plot_h + 48 + 18 * (i // 3)
        body.append(f'<rect x="{lx}" y="{ly - 9}" width="12" height="4" fill="{color}"/>')
        body.append(f'<text x="{lx + 16}" y="{ly - 4}" font-size="10">{escape(name)}</text>')
    return _frame(width, height, title, points, body)


def bar_chart(title: str, bars: Sequence[tuple[str, float]], *, maximum: float | None = None,
              percent: bool = True, mark: float | None = None) -> str:
    """Horizontal bars, one a row, labelled; ``mark``: a threshold line."""
    width, left, right, top, row = 640, 190, 70, 28, 16
    height = top + row * max(len(bars), 1) + 12
    top_value = maximum if maximum is not None else max((v for _, v in bars), default=1.0) or 1.0
    pw = width - left - right
    body = [f'<text x="4" y="18" font-size="13" font-weight="bold">{escape(title)}</text>']
    for i, (name, value) in enumerate(bars):
        y = top + i * row
        w = pw * max(0.0, min(value, top_value)) / top_value
        text = f"{value:.0%}" if percent else f"{value:.1f}"
        body.append(f'<text x="{left - 6}" y="{y + 11}" font-size="10" text-anchor="end">{escape(name)}</text>')
        body.append(f'<rect x="{left}" y="{y + 2}" width="{w:.1f}" height="{row - 5}" '
                    f'fill="{PALETTE[0]}"/>')  # fmt: skip
        body.append(f'<text x="{left + w + 4:.1f}" y="{y + 11}" font-size="10">{text}</text>')
    if mark is not None:
        x = left + pw * mark / top_value
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - 8}" stroke="#d9480f" '
                    f'stroke-dasharray="4 3"/>')  # fmt: skip
    return _frame(width, height, title, len(bars), body)


def heatmap(title: str, rows: Sequence[str], columns: Sequence[str],
            values: dict[tuple[str, str], float]) -> str:
    """A grid of shares (0..1): a row per campaign, a column per instruction;
    a cell blank where the row never executed the column's instruction."""
    left, top, cell, label_h = 190, 28, 22, 60
    width = left + cell * max(len(columns), 1) + 16
    height = top + label_h + cell * max(len(rows), 1) + 24
    body = [f'<text x="4" y="18" font-size="13" font-weight="bold">{escape(title)}</text>']
    for j, col in enumerate(columns):
        x = left + j * cell + cell / 2
        y = top + label_h - 4
        body.append(f'<text x="{x:.1f}" y="{y}" font-size="10" transform="rotate(-60 {x:.1f} {y})">'
                    f"{escape(col)}</text>")  # fmt: skip
    points = 0
    for i, row in enumerate(rows):
        y = top + label_h + i * cell
        body.append(f'<text x="{left - 6}" y="{y + 15}" font-size="10" text-anchor="end">{escape(row)}</text>')
        for j, col in enumerate(columns):
            v = values.get((row, col))
            if v is None:
                continue
            points += 1
            # white (0%) to blue (100%)
            shade = int(255 - 190 * max(0.0, min(v, 1.0)))
            body.append(f'<rect x="{left + j * cell}" y="{y}" width="{cell - 1}" height="{cell - 1}" '
                        f'fill="rgb({shade},{shade + 20 if shade < 235 else 255},255)" stroke="#ccc">'
                        f"<title>{escape(row)}: {escape(col)} {v:.0%} direct</title></rect>")  # fmt: skip
            ink = "#fff" if v > 0.6 else "#222"
            body.append(f'<text x="{left + j * cell + cell / 2:.1f}" y="{y + 14}" font-size="8" fill="{ink}" '
                        f'text-anchor="middle">{round(v * 100)}</text>')  # fmt: skip
    body.append(f'<text x="{left}" y="{height - 6}" font-size="10">numbers: % of executions run directly '
                "(blank: not executed)</text>")
    return _frame(width, height, title, points, body)
