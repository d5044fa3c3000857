"""HTML and plot helpers of the report: escaping, tables, tooltips, point sizes, progress."""
from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

AUDIT_COLORS = {
    "valid": "#2ca02c",
    "spurious": "#d62728",
    "both": "#ff7f0e",
    "unexpected": "#7f7f7f",
}
UNLABELLED = "(unlabelled)"
OTHER = "(other labels)"
# 1x1 transparent PNG: the hover image of components without a thumbnail (never a broken icon).
BLANK_PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


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


def table(df: pd.DataFrame, columns: Sequence[str], *, css: str = "data", digits: int = 3) -> str:
    cols = [c for c in columns if c in df.columns]
    head = "".join(f"<th>{e(c)}</th>" for c in cols)
    rows = []
    for _, row in df.iterrows():
        cells = "".join(f"<td>{fmt(row[c], digits)}</td>" for c in cols)
        rows.append(f"<tr>{cells}</tr>")
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def names_list(names: Sequence[Any]) -> str:
    if not names:
        return "<em>none</em>"
    return ", ".join(f'<span class="concept">{e(n)}</span>' for n in names)


def class_name(lens: Any, target: int) -> str:
    names = lens.class_names
    if names is not None and 0 <= int(target) < len(names):
        return f"{names[int(target)]} (class {int(target)})"
    return f"class {int(target)}"


def hover_template(fields: Sequence[tuple[str, str]]) -> str:
    """Custom bokeh tooltip: a thumbnail plus (name, @field) rows. Bokeh HTML-escapes
    ``@field`` values (no ``{safe}`` anywhere), so labels in the data show as text."""
    rows = "".join(
        f'<div><span style="color:#666">{name}:</span> <span>{field}</span></div>'
        for name, field in fields
    )
    return (
        '<div style="max-width:320px">'
        '<img src="@thumb" style="display:block;max-height:64px;margin-bottom:4px" alt="">'
        f"{rows}</div>"
    )


def img_tag(uri: str, alt: str, css: str = "thumbs") -> str:
    return f'<img class="{css}" src="{e(uri)}" alt="{e(alt)}">'


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


def scatter_figure(name: str, title: str, n: int):
    """The bokeh figure of a scatter plot of ``n`` points (the map, the audit): pan and wheel
    zoom, WebGL above 5,000 points."""
    from bokeh.plotting import figure

    return figure(name=name, width=760, height=520, title=title, tools="pan,wheel_zoom,box_zoom,reset,save",
                  active_scroll="wheel_zoom", output_backend="webgl" if n > 5000 else "canvas")
