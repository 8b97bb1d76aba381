"""A small SVG of equity and drawdown, for Markdown metadata in the Dagster UI.

No plotting library is needed: the plot is a polyline per strategy on a shared time axis, with
the drawdown below the equity, shipped to the UI as a Markdown image (see ``as_markdown_image``).
"""

from __future__ import annotations

import base64
from html import escape

import numpy as np

WIDTH, HEIGHT, PANEL_GAP = 640, 150, 30
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def _points(values: np.ndarray, top: float, height: float, low: float, high: float) -> str:
    span = high - low if high > low else 1.0
    x = np.linspace(0, WIDTH, num=len(values)) if len(values) > 1 else np.zeros(len(values))
    y = top + height * (1.0 - (values - low) / span)
    return " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(x, y, strict=True))


def _thin(values: np.ndarray, most: int = 600) -> np.ndarray:
    """At most ``most`` points: enough for 640 pixels, small enough for run metadata."""
    if len(values) <= most:
        return values
    return values[np.linspace(0, len(values) - 1, num=most).astype(int)]


def equity_drawdown_svg(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """Equity (normalised to 1 at the start) and drawdown of each named curve, as one <svg>."""
    equity = {name: _thin(e / e[0] if len(e) and e[0] else e) for name, (e, _) in curves.items()}
    drawdown = {name: _thin(d) for name, (_, d) in curves.items()}
    finite = [v[np.isfinite(v)] for v in equity.values() if len(v)]
    low = min((float(v.min()) for v in finite if len(v)), default=0.0)
    high = max((float(v.max()) for v in finite if len(v)), default=1.0)
    worst = max((float(np.nanmax(d)) for d in drawdown.values() if len(d)), default=0.0) or 0.01
    total = 2 * HEIGHT + PANEL_GAP + 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{total}" '
        f'viewBox="0 0 {WIDTH} {total}" font-family="sans-serif" font-size="11">',
        f'<text x="2" y="11">equity (start = 1): {low:.3f} .. {high:.3f}</text>',
        f'<text x="2" y="{HEIGHT + PANEL_GAP + 11}">drawdown: 0 .. {worst:.2%}</text>',
    ]
    for index, name in enumerate(curves):
        colour = COLOURS[index % len(COLOURS)]
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.2" '
            f'points="{_points(equity[name], 14, HEIGHT - 14, low, high)}"/>'
        )
        below = _points(-drawdown[name], HEIGHT + PANEL_GAP + 14, HEIGHT - 14, -worst, 0)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1" points="{below}"/>')
        parts.append(
            f'<text x="{8 + 150 * index}" y="{total - 4}" fill="{colour}">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def as_markdown_image(svg: str, title: str) -> str:
    """The SVG as a Markdown image with a data URI.

    Dagster's UI sanitises raw HTML out of Markdown metadata but allows ``data:`` image sources,
    so the plot must travel as an image, not as inline ``<svg>``.
    """
    encoded = base64.b64encode(svg.encode()).decode()
    return f"![{title}](data:image/svg+xml;base64,{encoded})"
