"""The readiness page's one chart: the catalog's data points by category, found or not, by PHI class.

Drawn with matplotlib's Agg canvas straight to SVG text for inlining in the HTML page: no file, no
external resource. Every label comes from the field catalog, never from the analyzed document.
"""

from __future__ import annotations

import io
from typing import Any

# One colour per PHI class (Okabe-Ito, readable with colour-blindness); PHI also hatched.
CLASS_COLOURS = {
    "phi": "#d55e00",
    "phi_adjacent": "#e69f00",
    "pii": "#0072b2",
    "financial": "#009e73",
    "internal": "#999999",
}
NOT_FOUND = "#eeeeee"


def data_point_counts(report: dict[str, Any]) -> dict[str, dict[str, tuple[int, int]]]:
    """Per category, per PHI class: (data points found in the document, data points in the catalog)."""
    counts: dict[str, dict[str, tuple[int, int]]] = {}
    for p in report["data_points"]:
        found, total = counts.setdefault(p["category"], {}).get(p["sensitivity"], (0, 0))
        counts[p["category"]][p["sensitivity"]] = (found + bool(p["catalog_fields"]), total + 1)
    return counts


def data_points_svg(report: dict[str, Any]) -> str:
    """A horizontal stacked bar per category: found data points coloured by PHI class, the rest grey."""
    # Imported here: matplotlib takes ~0.5 s to import and only the HTML format needs it.
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    counts = data_point_counts(report)
    categories = list(counts)
    fig = Figure(figsize=(7.5, 0.55 * max(len(categories), 3) + 1.3))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    y = list(range(len(categories)))[::-1]
    left = [0] * len(categories)
    for cls, colour in CLASS_COLOURS.items():
        widths = [counts[c].get(cls, (0, 0))[0] for c in categories]
        if any(widths):
            ax.barh(
                y, widths, left=left, color=colour, edgecolor="#333333",
                hatch="//" if cls == "phi" else None, label=cls.replace("_", " "),
            )  # fmt: skip
            left = [a + b for a, b in zip(left, widths, strict=True)]
    totals = [sum(t for _, t in counts[c].values()) for c in categories]
    missing = [t - f for t, f in zip(totals, left, strict=True)]
    ax.barh(y, missing, left=left, color=NOT_FOUND, edgecolor="#999999", label="not found")
    for yi, found, total in zip(y, left, totals, strict=True):
        ax.text(total, yi, f"  {found} of {total} found", va="center", fontsize=9)
    ax.set_yticks(y, categories, fontsize=10)
    ax.set_xlabel("data points in the field catalog")
    ax.set_xlim(0, max(totals, default=1) * 1.4)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=6, fontsize=8, frameon=False)
    buffer = io.StringIO()
    # Text as <text> (searchable, small); a fixed hash salt and no date: same data, same bytes.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "telecrm-readiness"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    return svg.replace(
        "<svg ", '<svg role="img" aria-labelledby="chart-caption" focusable="false" ', 1
    )
