"""HTML and plot helpers of the report: escaping, tables, bars, colours, point sizes, progress,
and the side panel ("peek") that shows the crops of the component under the mouse in a plot."""
from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

AUDIT_COLORS = {
    "valid": "#59a14f",
    "spurious": "#e15759",
    "both": "#edc948",
    "unexpected": "#9e9e9e",
}
# The categorical palette of the widgets (js/lib/theme.js): 30 colours that stay distinct on a
# light page; labels beyond it share OTHER_COLOR, components without a label UNLABELLED_COLOR.
PALETTE = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#7868e0",
    "#c82080", "#787000", "#f890f8", "#00e0b0", "#c8c080", "#a8d048", "#00c8f8", "#a8a8f8", "#307858", "#a85820",
    "#f8a878", "#a840b0", "#0078d8", "#b04868", "#7860a8", "#48d878", "#f878b0", "#98d098", "#788850", "#f0b0f0",
]
UNLABELLED_COLOR = "#c4c4c4"
OTHER_COLOR = "#6b6b6b"
UNLABELLED = "(unlabelled)"
OTHER = "(other labels)"


def e(value: Any) -> str:
    """HTML-escape any value shown in the page (quotes too: safe inside attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def label_text(value: Any) -> str:
    return UNLABELLED if is_missing(value) else str(value)


def fmt(value: Any, digits: int = 3) -> str:
    if is_missing(value):
        return "–"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}f}"
    return e(value)


def pct(value: float, digits: int = 0) -> str:
    """A share in [0, 1] as a percentage ("–" when missing)."""
    if is_missing(value):
        return "–"
    return f"{100.0 * float(value):.{digits}f}%"


def table(df: pd.DataFrame, columns: Sequence[str], *, css: str = "data", digits: int = 3) -> str:
    cols = [c for c in columns if c in df.columns]
    head = "".join(f"<th>{e(c)}</th>" for c in cols)
    rows = []
    for _, row in df.iterrows():
        cells = "".join(f"<td>{fmt(row[c], digits)}</td>" for c in cols)
        rows.append(f"<tr>{cells}</tr>")
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def bar(share: float, text: str, color: str = "#4c78a8") -> str:
    """A horizontal bar of ``share`` (0..1) with ``text`` beside it (not on it)."""
    w = 0.0 if is_missing(share) else max(0.0, min(1.0, float(share))) * 100.0
    return (f'<span class="bar"><span style="width:{w:.1f}%;background:{color}"></span></span>'
            f'<span class="num">{e(text)}</span>')


def names_list(names: Sequence[Any]) -> str:
    if not names:
        return "<em>none</em>"
    return " ".join(f'<span class="concept">{e(n)}</span>' for n in names)


def class_name(lens: Any, target: int) -> str:
    names = lens.class_names
    if names is not None and 0 <= int(target) < len(names):
        return f"{names[int(target)]} (class {int(target)})"
    return f"class {int(target)}"


def category_colors(labels: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """Colours of label categories: the ``len(PALETTE)`` most frequent labels get distinct
    colours, the rest are merged into :data:`OTHER`, :data:`UNLABELLED` is grey.
    Returns (group of each item, factors, palette)."""
    counts = pd.Series([t for t in labels if t != UNLABELLED]).value_counts()
    top = list(counts.index[: len(PALETTE)])
    keep = set(top)
    group = [t if (t in keep or t == UNLABELLED) else OTHER for t in labels]
    present = set(group)
    factors = top + [f for f in (OTHER, UNLABELLED) if f in present]
    palette = PALETTE[: len(top)] + [OTHER_COLOR if f == OTHER else UNLABELLED_COLOR for f in factors[len(top):]]
    return group, factors, palette


def sizes(relevance: np.ndarray) -> np.ndarray:
    r = np.clip(np.nan_to_num(np.asarray(relevance, dtype=float)), 0, None)
    top = r.max() if r.size else 0.0
    if top <= 0:
        return np.full(r.shape, 8.0)
    return 5.0 + 25.0 * np.sqrt(r / top)


def progress_bar(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


def shorten_gaps(values: np.ndarray, frac: float = 0.08) -> np.ndarray:
    """Display coordinates of one map axis: every empty gap between neighbouring values wider than
    ``frac`` of the central 90 % of the values is shortened to that width, distances inside a
    cluster are kept. UMAP places islands that share no neighbours at arbitrary distances; this
    keeps a far island in view without squeezing the rest into a corner (the SemanticMap widget
    draws its map the same way)."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return np.zeros_like(v)
    order = np.argsort(v, kind="stable")
    s = v[order]
    lo, hi = np.quantile(s, [0.05, 0.95])
    gap = frac * ((hi - lo) or (s[-1] - s[0]) or 1.0)
    out = np.empty_like(s)
    out[order] = np.concatenate([[0.0], np.cumsum(np.minimum(np.diff(s), gap))])
    return out


def padded(values: np.ndarray, pad: float = 0.06) -> tuple[float, float]:
    """The extent of ``values`` padded by ``pad`` of it on both sides."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return -1.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    d = (hi - lo) * pad or 0.5
    return lo - d, hi + d


def scatter_figure(name: str, title: str, n: int, height: int = 520, x_range=None, y_range=None):
    """The bokeh figure of a scatter plot of ``n`` points (the map, the audit): as wide as the
    page, pan and wheel zoom, WebGL above 5,000 points, fonts readable on a laptop screen."""
    from bokeh.plotting import figure

    kw = {}
    if x_range is not None:
        kw["x_range"] = x_range
    if y_range is not None:
        kw["y_range"] = y_range
    p = figure(name=name, height=height, sizing_mode="stretch_width", title=title,
               tools="pan,wheel_zoom,box_zoom,reset,save", active_scroll="wheel_zoom",
               output_backend="webgl" if n > 5000 else "canvas", **kw)
    style(p)
    return p


def style(p) -> None:
    """Fonts of a bokeh figure at sizes that read on a 1366x768 screen."""
    p.title.text_font_size = "13pt"
    for ax in (p.xaxis, p.yaxis):
        ax.axis_label_text_font_size = "11pt"
        ax.major_label_text_font_size = "10pt"
    p.toolbar.logo = None


# ---------------------------------------------------------------------------- the side panel
#: The hover callback of a plot with a side panel: fills the panel from the data source (text by
#: textContent, so labels stay text) and points its picture at the component's CSS class.
PEEK_JS = """
const idx = cb_data.index.indices;
if (!idx || !idx.length) return;
const el = document.getElementById(peek);
if (!el) return;
const d = src.data, i = idx[0];
el.querySelector('.peek-title').textContent = d.peek_title[i];
el.querySelector('.peek-text').textContent = d.peek_text[i];
const th = el.querySelector('.peek-thumbs');
const cls = d.thumb[i];
th.className = 'peek-thumbs th ' + cls;
th.style.display = cls ? '' : 'none';
el.classList.add('on');
"""


def peek_panel(peek_id: str, hint: str, n: int, px: int, width: int = 336) -> str:
    """The side panel next to a plot (``width`` px): empty until a point is hovered, then the
    component's name, its first ``n`` crops in one row and its numbers."""
    from ._thumbs import GAP, strip_width

    height = int((width - 26) / (n + (n - 1) * GAP / px))  # n tiles and their gaps inside the padding

    w = strip_width(n, height, px)
    return (f'<aside class="peek" id="{e(peek_id)}" data-testid="peek" style="width:{width}px">'
            f'<div class="peek-title">{e(hint)}</div>'
            f'<span class="peek-thumbs th" style="display:none;width:{w:.1f}px;height:{height}px"></span>'
            f'<div class="peek-text small"></div></aside>')


def attach_peek(p, src, peek_id: str, renderers=None) -> None:
    """Hovering a point of ``p`` fills the side panel ``peek_id`` (see :data:`PEEK_JS`)."""
    from bokeh.models import CustomJS, HoverTool

    p.add_tools(HoverTool(tooltips=None, renderers=renderers or "auto",
                          callback=CustomJS(args=dict(src=src, peek=peek_id), code=PEEK_JS)))
