"""Charts for the plan sections and the live report: horizontal stacked or plain bars, drawn by
matplotlib's Agg canvas straight to SVG text for inlining (no file, nothing fetched). Labels come
from the catalog, the mapping files and counts, never from an analysed document's values."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

# Okabe-Ito colours (readable with colour-blindness), one per complexity term, plus hatches so a
# black-and-white print still tells them apart.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#999999")
HATCHES = ("", "//", "..", "xx", "\\\\", "--", "++")


def _svg(fig: Any, caption_id: str) -> str:
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "telecrm-report"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    # Ids unique on a page that holds several charts (matplotlib numbers each figure's from 1).
    prefix = caption_id.removesuffix("-caption")
    for old, new in (
        ('id="', f'id="{prefix}-'),
        ("url(#", f"url(#{prefix}-"),
        ('href="#', f'href="#{prefix}-'),
    ):
        svg = svg.replace(old, new)
    return svg.replace(
        "<svg ", f'<svg role="img" aria-labelledby="{caption_id}" focusable="false" ', 1
    )


def _figure(rows: int) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 0.45 * max(rows, 3) + 1.3))
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def stacked_bars_svg(
    labels: Sequence[str],
    parts: dict[str, Sequence[float]],
    *,
    xlabel: str,
    caption_id: str,
    totals_text: Sequence[str] | None = None,
) -> str:
    """One bar per label, stacked by `parts` (name -> value per label), with a legend."""
    fig, ax = _figure(len(labels))
    y = list(range(len(labels)))[::-1]
    left = [0.0] * len(labels)
    for i, (name, values) in enumerate(parts.items()):
        if not any(values):
            continue
        ax.barh(
            y, list(values), left=left, color=PALETTE[i % len(PALETTE)], edgecolor="#333333",
            hatch=HATCHES[i % len(HATCHES)] or None, label=name,
        )  # fmt: skip
        left = [a + b for a, b in zip(left, values, strict=True)]
    for yi, total, text in zip(y, left, totals_text or [f"{v:g}" for v in left], strict=True):
        ax.text(total, yi, f"  {text}", va="center", fontsize=9)
    ax.set_yticks(y, list(labels), fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_xlim(0, max(left, default=1) * 1.35 or 1)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)
    return _svg(fig, caption_id)


def bars_svg(
    labels: Sequence[str], values: Sequence[float], shown: Sequence[str], *, xlabel: str,
    caption_id: str,
) -> str:  # fmt: skip
    """Plain horizontal bars; `shown` is the text beside each bar (e.g. "<5" for a small cell)."""
    fig, ax = _figure(len(labels))
    y = list(range(len(labels)))[::-1]
    ax.barh(y, list(values), color=PALETTE[0], edgecolor="#333333")
    for yi, v, text in zip(y, values, shown, strict=True):
        ax.text(v, yi, f"  {text}", va="center", fontsize=9)
    ax.set_yticks(y, list(labels), fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_xlim(0, max(values, default=1) * 1.3 or 1)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig, caption_id)


def complexity_svg(plans: list[dict[str, Any]]) -> str:
    """Each CRM's complexity total, stacked by the counted work terms (points = count x weight)."""
    names = [t["work"] for t in plans[0]["complexity"]["terms"]] if plans else []
    parts: dict[str, Sequence[float]] = {
        n.replace("_", " "): [
            next(t["points"] for t in p["complexity"]["terms"] if t["work"] == n) for p in plans
        ]
        for n in names
    }
    return stacked_bars_svg(
        [p["title"] for p in plans],
        parts,
        xlabel="complexity points (count x weight)",
        caption_id="complexity-caption",
        totals_text=[f"{p['complexity']['total']} ({p['complexity']['band']})" for p in plans],
    )
