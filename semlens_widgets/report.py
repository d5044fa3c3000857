"""Standalone HTML report of a :class:`~semlens_widgets.Lens` (``lens.report(path)``).

One self-contained ``.html`` file that opens in any browser with no kernel and no network:

- the **semantic map** of a layer (UMAP of the semantic embeddings theta_k, DESIGN eq. 2),
  hover shows a concept-example thumbnail and the label of each component;
- **search results** for the given text queries (DESIGN eq. 4), ranked, with score bars and a
  strip of concept-example crops per hit;
- the **audit** of one class (DESIGN eq. 7): a_valid vs a_spur scatter sized by relevance and
  coloured by category, the per-category summary and the samples behind spurious components;
- the **measures per layer** (DESIGN eq. 7-10): clarity, polysemanticity and redundancy.

The plots are bokeh documents embedded with ``bokeh.resources.INLINE`` (BokehJS is written
into the file, nothing is fetched from a CDN); thumbnails are small PNGs embedded as
``data:`` URIs. Every user-provided string (labels, queries, concept and class names) is
HTML-escaped: a concept called ``<img src=x onerror=alert(1)>`` shows as that text.

This module draws only: every number comes from a :class:`Lens` method (``map``, ``search``,
``crops``, ``images``, ``label``, ``audit``, ``measures``, ``redundancy``).
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import inspect
import io
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["write_report", "render_report"]

AUDIT_COLORS = {
    "valid": "#2ca02c",
    "spurious": "#d62728",
    "both": "#ff7f0e",
    "unexpected": "#7f7f7f",
}
_UNLABELLED = "(unlabelled)"
_OTHER = "(other labels)"
# 1x1 transparent PNG: the hover image of components without a thumbnail (never a broken icon).
_BLANK_PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


def _e(value: Any) -> str:
    """HTML-escape any value shown in the page (quotes too: safe inside attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _label_text(value: Any) -> str:
    return _UNLABELLED if _is_missing(value) else str(value)


# --------------------------------------------------------------------------------------------
# thumbnails
# --------------------------------------------------------------------------------------------


def _to_uint8_hwc(images: Any) -> np.ndarray:
    """``images``: [n,3,H,W] uint8 (crops) or float in [0,1] (display images) -> [n,H,W,3] uint8."""
    arr = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape [n, 3, H, W], got {tuple(arr.shape)}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.nan_to_num(arr.astype(np.float32)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if arr.shape[1] == 1:
        arr = np.repeat(arr, 3, axis=1)
    return np.ascontiguousarray(arr.transpose(0, 2, 3, 1))


def _png_strip(images: Any, px: int, limit: int) -> str:
    """The first ``limit`` of ``images`` [n,3,H,W] side by side, each ``px`` x ``px``, as a
    ``data:image/png;base64`` URI (the blank pixel when there are none)."""
    from PIL import Image

    arr = _to_uint8_hwc(images)[: max(0, int(limit))]
    if arr.shape[0] == 0:
        return _BLANK_PNG
    gap = 2
    strip = Image.new("RGB", (arr.shape[0] * (px + gap) - gap, px), (255, 255, 255))
    for i, img in enumerate(arr):
        tile = Image.fromarray(img, "RGB").resize((px, px), Image.BILINEAR)
        strip.paste(tile, (i * (px + gap), 0))
    buf = io.BytesIO()
    strip.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class _Thumbs:
    """Caches the PNG strips of concept-example crops, one ``lens.crops`` call per component."""

    def __init__(self, lens: Any, px: int) -> None:
        self.lens = lens
        self.px = int(px)
        self._cache: dict[tuple[str, int, int], str] = {}
        self._crops: dict[tuple[str, int], Any] = {}
        try:  # ask the Lens for small crops directly when it can resize (Lens.crops(size=...))
            self._sized = "size" in inspect.signature(lens.crops).parameters
        except (TypeError, ValueError):
            self._sized = False

    def crops(self, layer: str, component: int, n: int) -> str:
        key = (str(layer), int(component), int(n))
        if key not in self._cache:
            ck = (str(layer), int(component))
            if ck not in self._crops:
                kw = {"size": self.px} if self._sized else {}
                self._crops[ck] = self.lens.crops(layer, int(component), **kw)
            self._cache[key] = _png_strip(self._crops[ck], self.px, n)
        return self._cache[key]


def _img_tag(uri: str, alt: str, css: str = "thumbs") -> str:
    return f'<img class="{css}" src="{_e(uri)}" alt="{_e(alt)}">'


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


# --------------------------------------------------------------------------------------------
# HTML helpers
# --------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    if _is_missing(value):
        return "–"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}f}"
    return _e(value)


def _table(df: pd.DataFrame, columns: Sequence[str], *, css: str = "data", digits: int = 3) -> str:
    cols = [c for c in columns if c in df.columns]
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    rows = []
    for _, row in df.iterrows():
        cells = "".join(f"<td>{_fmt(row[c], digits)}</td>" for c in cols)
        rows.append(f"<tr>{cells}</tr>")
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _names_list(names: Sequence[Any]) -> str:
    if not names:
        return "<em>none</em>"
    return ", ".join(f'<span class="concept">{_e(n)}</span>' for n in names)


def _class_name(lens: Any, target: int) -> str:
    names = getattr(lens, "class_names", None)
    if names is not None and 0 <= int(target) < len(names):
        return f"{names[int(target)]} (class {int(target)})"
    return f"class {int(target)}"


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------


def _hover_template(fields: Sequence[tuple[str, str]]) -> str:
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


def _map_section(lens, layer, labels, audit_table, thumbs, map_thumbs, progress):
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.palettes import Category20
    from bokeh.plotting import figure
    from bokeh.transform import factor_cmap

    coords = lens.map(layer)
    n = len(coords)
    components = coords["component"].astype(int).to_numpy()
    label_of = labels or {}
    text_labels = [_label_text(label_of.get(int(k))) for k in components]
    data: dict[str, Any] = {
        "x": coords["x"].astype(float).to_numpy(),
        "y": coords["y"].astype(float).to_numpy(),
        "component": components,
        "layer": [str(layer)] * n,
        "label": text_labels,
    }

    if audit_table is not None:
        by_k = audit_table.set_index(audit_table["component"].astype(int))
        cat = [str(by_k["category"].get(int(k), "unexpected")) for k in components]
        rel = np.array([float(by_k["relevance"].get(int(k), 0.0)) for k in components])
        data["group"] = cat
        data["relevance"] = rel
        factors = [c for c in AUDIT_COLORS if c in set(cat)]
        palette = [AUDIT_COLORS[c] for c in factors]
        legend_title = "audit category"
        data["size"] = _sizes(rel)
    else:
        counts = pd.Series([t for t in text_labels if t != _UNLABELLED]).value_counts()
        top = list(counts.index[:18])
        group = [t if (t in top or t == _UNLABELLED) else _OTHER for t in text_labels]
        factors = top + [f for f in (_OTHER, _UNLABELLED) if f in set(group)]
        base = list(Category20[20])
        palette = [base[i % 18] for i in range(len(top))]
        palette += ["#9aa7b8" if f == _OTHER else "#d0d0d0" for f in factors[len(top):]]
        data["group"] = group
        legend_title = "label"
        data["size"] = np.full(n, 9.0)

    order = np.arange(n)
    if audit_table is not None:
        order = np.argsort(-data["relevance"], kind="stable")
    with_thumb = set(order[: max(0, int(map_thumbs))].tolist())
    data["thumb"] = [
        thumbs.crops(layer, int(components[i]), 1) if i in with_thumb else _BLANK_PNG
        for i in _progress(range(n), n, f"map thumbnails {layer}", progress)
    ]

    src = ColumnDataSource(data)
    p = figure(
        name="semlens_map",
        width=760,
        height=520,
        title=f"Semantic map of {layer}: UMAP of the component embeddings",
        tools="pan,wheel_zoom,box_zoom,reset,save",
        active_scroll="wheel_zoom",
        output_backend="webgl" if n > 5000 else "canvas",
    )
    p.scatter(
        "x", "y", source=src, size="size", alpha=0.8, line_color="white", line_width=0.5,
        color=factor_cmap("group", palette=palette, factors=factors),
        legend_field="group",
    )
    fields = [("component", "@layer #@component"), ("label", "@label")]
    if audit_table is not None:
        fields += [("category", "@group"), ("relevance", "@relevance{0.000}")]
    p.add_tools(HoverTool(tooltips=_hover_template(fields)))
    p.legend.title = legend_title
    p.legend.label_text_font_size = "9pt"
    p.add_layout(p.legend[0], "right")
    p.xaxis.axis_label = "UMAP 1"
    p.yaxis.axis_label = "UMAP 2"
    return p


def _sizes(relevance: np.ndarray) -> np.ndarray:
    r = np.clip(np.nan_to_num(np.asarray(relevance, dtype=float)), 0, None)
    top = r.max() if r.size else 0.0
    if top <= 0:
        return np.full(r.shape, 8.0)
    return 5.0 + 25.0 * np.sqrt(r / top)


def _search_section(lens, queries, search_layer, k, thumbs, n_thumbs):
    parts = []
    for q in queries:
        if not isinstance(q, str):
            raise TypeError(
                f"report queries must be text strings, got {type(q).__name__} ({q!r:.60}); "
                "image probes work in lens.search() and the SearchBox widget"
            )
        hits = lens.search(q, layer=search_layer, k=k)
        rows = []
        smax = max([float(s) for s in hits["score"]] + [1e-12]) if len(hits) else 1.0
        for pos, (_, h) in enumerate(hits.iterrows(), start=1):  # hits come ranked
            score = float(h["score"])
            width = max(0.0, min(1.0, score / smax)) * 100.0
            strip = thumbs.crops(h["layer"], int(h["component"]), n_thumbs)
            rows.append(
                "<tr>"
                f'<td class="num">{pos}</td>'
                f'<td>{_e(h["layer"])} #{int(h["component"])}</td>'
                f'<td class="label">{_e(_label_text(h.get("label")))}</td>'
                f'<td><div class="bar"><div style="width:{width:.1f}%"></div></div>'
                f'<span class="num">{score:.3f}</span></td>'
                f"<td>{_img_tag(strip, 'concept examples of ' + str(h['layer']) + ' #' + str(int(h['component'])))}</td>"
                "</tr>"
            )
        body = "".join(rows) or '<tr><td colspan="5"><em>no results</em></td></tr>'
        parts.append(
            f'<div class="query"><h3>Query: <q class="query-text">{_e(q)}</q></h3>'
            '<table class="data search"><thead><tr><th>rank</th><th>component</th><th>label</th>'
            f"<th>score</th><th>concept examples</th></tr></thead><tbody>{body}</tbody></table></div>"
        )
    where = "all layers" if search_layer is None else f"layer {search_layer}"
    intro = (
        "<p>Each query is embedded with the foundation model's text encoder (mean over prompt "
        "templates); components are ranked by cosine similarity to their semantic embedding "
        "minus the similarity of the empty prompt (DESIGN eq. 4). "
        f"Searched: {_e(where)}. The strip shows each hit's top concept examples.</p>"
    )
    return intro + "".join(parts)


def _resolve_audit(lens, audit, layer):
    if audit is None:
        return None
    from .results import AuditResult

    if isinstance(audit, AuditResult):
        return audit
    if isinstance(audit, Mapping):
        kw = dict(audit)
        missing = [key for key in ("valid", "spurious", "target") if key not in kw]
        if missing:
            raise ValueError(
                f"audit= needs the keys valid, spurious and target; missing {missing} in {sorted(kw)}"
            )
        kw.setdefault("layer", layer)
        return lens.audit(**kw)
    raise TypeError(
        "audit= must be an AuditResult (from lens.audit) or a dict with valid, spurious, "
        f"target (and optionally layer); got {type(audit).__name__}"
    )


def _audit_plot(res, lens, thumbs, n_thumbs, progress):
    from bokeh.models import ColumnDataSource, HoverTool, Span
    from bokeh.plotting import figure
    from bokeh.transform import factor_cmap

    t = res.table
    comps = t["component"].astype(int).to_numpy()
    data = {
        "x": t["a_valid"].astype(float).to_numpy(),
        "y": t["a_spur"].astype(float).to_numpy(),
        "component": comps,
        "layer": [str(res.layer)] * len(t),
        "category": [str(c) for c in t["category"]],
        "relevance": t["relevance"].astype(float).to_numpy(),
        "label": [_label_text(v) for v in t.get("label", pd.Series([None] * len(t)))],
        "best_valid": [_label_text(v) for v in t.get("best_valid", pd.Series([None] * len(t)))],
        "best_spur": [_label_text(v) for v in t.get("best_spur", pd.Series([None] * len(t)))],
    }
    data["size"] = _sizes(data["relevance"])
    data["thumb"] = [
        thumbs.crops(res.layer, int(k), n_thumbs)
        for k in _progress(comps, len(comps), "audit thumbnails", progress)
    ]
    factors = [c for c in AUDIT_COLORS if c in set(data["category"])]
    src = ColumnDataSource(data)
    p = figure(
        name="semlens_audit",
        width=760,
        height=520,
        title=f"Audit of {_class_name(lens, res.target)} in {res.layer}",
        tools="pan,wheel_zoom,box_zoom,reset,save",
        active_scroll="wheel_zoom",
    )
    order = np.argsort(-data["size"], kind="stable")  # big points first, small ones on top
    src.data = {key: [v[i] for i in order] for key, v in data.items()}
    p.scatter(
        "x", "y", source=src, size="size", alpha=0.75, line_color="black", line_width=0.4,
        color=factor_cmap("category", palette=[AUDIT_COLORS[c] for c in factors], factors=factors),
        legend_field="category",
    )
    for dim in ("width", "height"):
        p.add_layout(Span(location=0, dimension=dim, line_color="#999", line_dash="dashed"))
    p.add_tools(
        HoverTool(
            tooltips=_hover_template(
                [
                    ("component", "@layer #@component"),
                    ("category", "@category"),
                    ("label", "@label"),
                    ("a_valid", "@x{0.000} (@best_valid)"),
                    ("a_spur", "@y{0.000} (@best_spur)"),
                    ("relevance", "@relevance{0.0000}"),
                ]
            )
        )
    )
    p.xaxis.axis_label = "a_valid: alignment with the valid concepts"
    p.yaxis.axis_label = "a_spur: alignment with the spurious concepts"
    p.legend.title = "category"
    p.add_layout(p.legend[0], "right")
    return p


def _audit_html(res, lens, thumbs, n_thumbs, n_spurious, sample_px):
    summary = res.summary.copy()
    parts = [
        f"<p>Audited class: <b>{_e(_class_name(lens, res.target))}</b>, layer "
        f"<b>{_e(res.layer)}</b>. Valid concepts: {_names_list(res.valid)}. "
        f"Spurious concepts: {_names_list(res.spurious)}.</p>",
        "<p>Each point is a component. x = how well it aligns with the best valid concept, "
        "y = with the best spurious concept (cosine minus the empty-prompt baseline, DESIGN "
        "eq. 7); the size is its relevance for the class (CRP). Large red points are what the "
        "model relies on for the wrong reason.</p>",
        "<h3>Per-category summary</h3>",
        _table(summary, ["category", "n_components", "relevance", "share"], css="data summary"),
    ]
    t = res.table
    spur = t[t["category"].isin(["spurious", "both"])].sort_values("relevance", ascending=False)
    if len(spur):
        parts.append("<h3>Samples behind the most relevant spurious components</h3>")
        for _, row in spur.head(n_spurious).iterrows():
            k = int(row["component"])
            idx = res.spurious_samples.get(k) if res.spurious_samples else None
            crops = thumbs.crops(res.layer, k, n_thumbs)
            samples = ""
            if idx is not None and len(idx):
                idx_list = [int(i) for i in list(idx)[:n_thumbs]]
                samples = _img_tag(
                    _png_strip(lens.images(idx_list), sample_px, len(idx_list)),
                    f"dataset samples behind component {k}",
                )
                ids = ", ".join(str(i) for i in idx_list)
                samples += f'<div class="small">dataset indices: {_e(ids)}' + (
                    f" (+{len(idx) - len(idx_list)} more)" if len(idx) > len(idx_list) else ""
                ) + "</div>"
            parts.append(
                '<div class="spurious">'
                f"<div><b>{_e(res.layer)} #{k}</b> &middot; {_e(row['category'])} &middot; "
                f"label <span class=\"label\">{_e(_label_text(row.get('label')))}</span> &middot; "
                f"a_spur {float(row['a_spur']):.3f} ({_e(_label_text(row.get('best_spur')))}) "
                f"&middot; relevance {float(row['relevance']):.4f}</div>"
                f'<div class="small">concept examples</div>{_img_tag(crops, f"concept examples of {k}")}'
                + (f'<div class="small">full samples</div>{samples}' if samples else "")
                + "</div>"
            )
    else:
        parts.append("<p><em>No component falls in the spurious or both categories.</em></p>")
    return "".join(parts)


def _measures(lens, layer) -> tuple[pd.DataFrame, float]:
    """The per-component measures of a layer and its redundancy, as computed by the Lens."""
    if hasattr(lens, "measures"):
        df = pd.DataFrame(lens.measures(layer)).copy()
    else:  # older Lens: assemble from the individual measures
        df = pd.DataFrame(
            {
                "layer": layer,
                "component": np.arange(lens.num_components(layer)),
                "clarity": _as_array(lens.clarity(layer), "clarity"),
                "polysemanticity": _as_array(lens.polysemanticity(layer), "polysemanticity"),
            }
        )
    if hasattr(lens, "redundancy"):
        red = lens.redundancy(layer)
    elif "redundancy" in df.columns:  # per component: max cosine to another component
        red = df["redundancy"]
    else:
        raise AttributeError("the lens has neither redundancy(layer) nor a 'redundancy' measures column")
    if isinstance(red, pd.DataFrame):
        red = red["redundancy"]
    if hasattr(red, "detach"):
        red = red.detach().cpu().numpy()
    red = np.asarray(red, dtype=float)
    # eq. 9 is the mean over components of the max similarity to another one: a per-component
    # result is averaged here, a scalar is taken as is.
    return df, float(np.nanmean(red)) if red.size else math.nan


def _as_array(value, name: str) -> np.ndarray:
    if isinstance(value, pd.DataFrame):
        value = value[name]
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=float)


def _measures_section(lens, layers, labels_by_layer):
    from bokeh.layouts import row
    from bokeh.models import ColumnDataSource, FactorRange, HoverTool
    from bokeh.palettes import Category10
    from bokeh.plotting import figure
    from bokeh.transform import factor_cmap

    frames, summary = [], []
    has_summary = hasattr(lens, "measures_summary")
    for layer in layers:
        if has_summary:  # the Lens summarises its own layers; only the per-component table here
            df = pd.DataFrame(lens.measures(layer)).copy()
        else:
            df, red = _measures(lens, layer)
            summary.append(
                {
                    "layer": str(layer),
                    "components": len(df),
                    "mean clarity": float(np.nanmean(df["clarity"])) if len(df) else math.nan,
                    "mean polysemanticity": float(np.nanmean(df["polysemanticity"]))
                    if len(df)
                    else math.nan,
                    "redundancy": red,
                }
            )
        df["layer"] = str(layer)
        labels = labels_by_layer.get(layer)
        if labels is not None:
            df["label"] = [_label_text(labels.get(int(k))) for k in df["component"]]
        elif "label" in df.columns:
            df["label"] = [_label_text(v) for v in df["label"]]
        else:
            df["label"] = _UNLABELLED
        frames.append(df)
    if has_summary:
        table = pd.DataFrame(lens.measures_summary(layers)).rename(
            columns={
                "n_components": "components",
                "clarity": "mean clarity",
                "polysemanticity": "mean polysemanticity",
            }
        )
        table["layer"] = table["layer"].astype(str)
        table = table.set_index("layer").loc[[str(l) for l in layers]].reset_index()
    else:
        table = pd.DataFrame(summary)

    metrics = ["mean clarity", "mean polysemanticity", "redundancy"]
    x = [(str(layer), m) for layer in layers for m in metrics]
    vals = [float(table.loc[i, m]) for i in range(len(table)) for m in metrics]
    bars = figure(
        name="semlens_measures_bars",
        x_range=FactorRange(*x),
        width=560,
        height=380,
        title="Measures per layer",
        tools="save",
        toolbar_location=None,
    )
    bsrc = ColumnDataSource({"x": x, "value": [0.0 if math.isnan(v) else v for v in vals],
                             "metric": [m for _, m in x]})
    bars.vbar(x="x", top="value", width=0.85, source=bsrc, line_color="white",
              fill_color=factor_cmap("x", palette=list(Category10[3]), factors=metrics, start=1, end=2))
    bars.add_tools(HoverTool(tooltips=[("", "@x"), ("value", "@value{0.000}")]))
    bars.xaxis.major_label_orientation = 0.9
    bars.y_range.start = 0

    allm = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    palette = list(Category10[10])
    sc = figure(
        name="semlens_measures_scatter",
        width=560,
        height=380,
        title="Clarity vs polysemanticity, one point per component",
        tools="pan,wheel_zoom,box_zoom,reset,save",
    )
    if len(allm):
        ssrc = ColumnDataSource(
            {
                "x": allm["clarity"].astype(float).to_numpy(),
                "y": allm["polysemanticity"].astype(float).to_numpy(),
                "layer": allm["layer"].astype(str).tolist(),
                "component": allm["component"].astype(int).to_numpy(),
                "label": allm["label"].tolist(),
            }
        )
        factors = [str(l) for l in layers]
        sc.scatter("x", "y", source=ssrc, size=7, alpha=0.7,
                   color=factor_cmap("layer", palette=[palette[i % 10] for i in range(len(factors))],
                                     factors=factors),
                   legend_field="layer")
        sc.add_tools(HoverTool(tooltips=[("component", "@layer #@component"), ("label", "@label"),
                                         ("clarity", "@x{0.000}"), ("polysemanticity", "@y{0.000}")]))
        sc.legend.title = "layer"
    sc.xaxis.axis_label = "clarity (eq. 7)"
    sc.yaxis.axis_label = "polysemanticity (eq. 10)"
    fig = row(bars, sc, name="semlens_measures")

    text = (
        "<p><b>Clarity</b> (eq. 7): how similar a component's concept examples are to each "
        "other in the foundation model's space (1 = one clear concept). <b>Polysemanticity</b> "
        "(eq. 10): its examples are split in two clusters (2-means); 1 minus the cosine of the "
        "two cluster means (high = the component mixes several concepts). <b>Redundancy</b> (eq. 9): mean over components of "
        "the cosine to their most similar other component (high = many near-duplicates).</p>"
        + _table(table, ["layer", "components", *metrics], css="data measures")
    )
    return fig, text


# --------------------------------------------------------------------------------------------
# page
# --------------------------------------------------------------------------------------------

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       margin: 0; padding: 0 24px 48px; background: #fff; }
header { border-bottom: 1px solid #ddd; margin-bottom: 12px; }
nav a { margin-right: 14px; }
h1 { font-size: 22px; margin: 18px 0 4px; } h2 { font-size: 18px; margin-top: 28px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
table.data { border-collapse: collapse; margin: 6px 0 14px; }
table.data th, table.data td { border-bottom: 1px solid #e4e4e4; padding: 3px 8px; text-align: left;
       vertical-align: middle; }
table.data th { background: #f4f4f4; }
.num { font-variant-numeric: tabular-nums; }
.bar { display: inline-block; width: 90px; height: 9px; background: #eee; margin-right: 6px; }
.bar > div { height: 100%; background: #4c78a8; }
img.thumbs { image-rendering: auto; border: 1px solid #ddd; vertical-align: middle; }
.small { color: #666; font-size: 12px; margin-top: 4px; }
.spurious { border-left: 3px solid #d62728; padding: 4px 10px; margin: 10px 0; }
.concept, .label { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
.plot { margin: 8px 0 16px; }
"""


def _page_template(sections: list[tuple[str, str, list[tuple[str, str]]]]) -> str:
    """Jinja template (extends bokeh's file template): per section, a heading and an ordered
    list of ("html", var) / ("plot", root name) pieces. All text goes in as variables that
    are escaped by the section builders; the template adds only fixed markup."""
    body = ["{{ header_html }}"]
    for sid, _title, pieces in sections:
        body.append(f'<section id="{sid}">{{{{ {sid}_title }}}}')
        for kind, ref in pieces:
            if kind == "html":
                body.append(f"{{{{ {ref} }}}}")
            else:
                body.append(f'<div class="plot" data-plot="{ref}">{{{{ embed(roots.{ref}) }}}}</div>')
        body.append("</section>")
    return (
        "{% block preamble %}<style>{{ css }}</style>{% endblock %}\n"
        "{% block contents %}\n" + "\n".join(body) + "\n{% endblock %}\n"
    )


def render_report(
    lens: Any,
    *,
    queries: Sequence[str] | None = None,
    layer: str | None = None,
    audit: Any = None,
    concepts: Any = None,
    search_layer: str | None = None,
    k: int = 8,
    n_thumbs: int = 5,
    thumb_px: int = 48,
    map_thumbs: int = 500,
    n_spurious: int = 3,
    title: str = "SemanticLens report",
    progress: bool = True,
) -> str:
    """Build the report page and return it as one HTML string (see :func:`write_report`)."""
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    layers = [str(l) for l in lens.layers]
    if not layers:
        raise ValueError("the lens has no layers; create it with layers=[...] and call lens.run()")
    layer = layers[-1] if layer is None else layer
    if layer not in layers:
        raise ValueError(f"layer={layer!r} is not one of the lens layers {layers}")
    if search_layer is not None and search_layer not in layers:
        raise ValueError(f"search_layer={search_layer!r} is not one of the lens layers {layers}")
    if isinstance(queries, str):
        queries = [queries]
    queries = list(queries or [])
    if int(k) < 1:
        raise ValueError(f"k={k!r}: the number of search hits per query must be >= 1")

    thumbs = _Thumbs(lens, thumb_px)
    res = _resolve_audit(lens, audit, layer)

    # labels of the components (for the map and the measures): from `concepts` or the audit.
    labels_by_layer: dict[str, dict[int, Any]] = {}
    gaps: list[str] | None = None
    label_res = None
    if concepts is None and getattr(lens, "vocabulary", None):
        concepts = list(lens.vocabulary)  # the vocabulary set with lens.set_vocabulary
    if concepts is not None:
        from .results import LabelResult

        label_res = concepts if isinstance(concepts, LabelResult) else lens.label(list(concepts), layer)
        lt = label_res.table
        labels_by_layer[layer] = dict(zip(lt["component"].astype(int), lt["label"]))
        gaps = list(label_res.gaps)
    audit_table = None
    if res is not None:
        if "label" in res.table.columns:
            labels_by_layer.setdefault(
                res.layer, dict(zip(res.table["component"].astype(int), res.table["label"]))
            )
        if res.layer == layer:
            audit_table = res.table

    roots = []
    sections: list[tuple[str, str, list[tuple[str, str]]]] = []
    variables: dict[str, str] = {"css": _CSS}

    # overview
    fm = getattr(lens, "fm", None)
    ident = getattr(fm, "identity", None) if fm is not None else None
    fm_text = "–"
    if isinstance(ident, Mapping):  # the essentials only: the identity also holds long hashes
        parts = [str(ident.get("name", "?"))]
        pre = ident.get("pretrained")
        if pre:
            parts.append(f"pretrained={os.path.basename(str(pre))}")
        if ident.get("dim"):
            parts.append(f"dim={ident['dim']}")
        fm_text = ", ".join(parts)
    overview = pd.DataFrame(
        [{"layer": l, "components": int(lens.num_components(l))} for l in layers]
    )
    nav = ['<a href="#map">Semantic map</a>']
    if queries:
        nav.append('<a href="#search">Search</a>')
    if res is not None:
        nav.append('<a href="#audit">Audit</a>')
    nav.append('<a href="#measures">Measures</a>')
    from . import __version__

    variables["header_html"] = (
        f"<header><h1>{_e(title)}</h1>"
        f'<div class="small">semlens_widgets {_e(__version__)} &middot; generated '
        f"{_e(_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))} &middot; "
        f"m = {_e(getattr(lens, 'm', '–'))} concept examples per component &middot; "
        f"crops: {_e(getattr(lens, 'crop_mode', '–'))} &middot; foundation model: {_e(fm_text)}</div>"
        f"<nav>{''.join(nav)}</nav></header>"
        "<p>SemanticLens maps every component (channel, unit) of the model to one vector in the "
        "embedding space of a foundation model (CLIP): the mean embedding of its most activating "
        "concept examples. These vectors make the model's knowledge searchable, labelable and "
        "auditable. This file is standalone: it needs no kernel and no network.</p>"
        + _table(overview, ["layer", "components"], css="data overview")
    )

    # map
    p_map = _map_section(lens, layer, labels_by_layer.get(layer), audit_table, thumbs, map_thumbs, progress)
    roots.append(p_map)
    colour = "audit category (size = relevance)" if audit_table is not None else "label"
    map_text = (
        f"<p>Each point is one component of <b>{_e(layer)}</b>, placed by a 2-D UMAP projection "
        "of its semantic embedding: components that encode similar concepts lie close together. "
        f"Colour: {_e(colour)}. Hover a point to see its top concept example and label.</p>"
    )
    if gaps is not None:
        map_text += f"<p>Concepts of the vocabulary that no component carries (gaps): {_names_list(gaps)}</p>"
    if label_res is not None:
        counts = label_res.counts
        if len(counts):
            cdf = pd.DataFrame({"concept": [str(c) for c in counts.index], "components": counts.values})
            map_text += "<h3>Components per concept</h3>" + _table(cdf.head(30), ["concept", "components"])
    variables["map_title"] = "<h2>Semantic map</h2>"
    variables["map_text"] = map_text
    sections.append(("map", "Semantic map", [("html", "map_text"), ("plot", "semlens_map")]))

    # search
    if queries:
        variables["search_title"] = "<h2>Search</h2>"
        variables["search_html"] = _search_section(lens, queries, search_layer, int(k), thumbs, n_thumbs)
        sections.append(("search", "Search", [("html", "search_html")]))

    # audit
    if res is not None:
        p_audit = _audit_plot(res, lens, thumbs, min(3, n_thumbs), progress)
        roots.append(p_audit)
        variables["audit_title"] = "<h2>Audit</h2>"
        variables["audit_html"] = _audit_html(res, lens, thumbs, n_thumbs, n_spurious, max(thumb_px, 64))
        sections.append(("audit", "Audit", [("plot", "semlens_audit"), ("html", "audit_html")]))

    # measures
    p_meas, meas_text = _measures_section(lens, layers, labels_by_layer)
    roots.append(p_meas)
    variables["measures_title"] = "<h2>Measures per layer</h2>"
    variables["measures_html"] = meas_text
    sections.append(("measures", "Measures", [("html", "measures_html"), ("plot", "semlens_measures")]))

    return file_html(
        roots,
        INLINE,
        title,
        template=_page_template(sections),
        template_variables=variables,
    )


def write_report(lens: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Write the standalone HTML report of ``lens`` to ``path`` (atomically) and return it.

    Keyword arguments (all optional):

    - ``queries``: text queries whose search results are listed (``lens.search``).
    - ``layer``: the layer of the semantic map and the audit (default: the last layer).
    - ``audit``: an :class:`~semlens_widgets.results.AuditResult` or a dict
      ``{"valid": [...], "spurious": [...], "target": int}`` passed to ``lens.audit``.
    - ``concepts``: a concept vocabulary (list of str) or a ``LabelResult``: labels the map
      (default: the lens vocabulary set with ``lens.set_vocabulary``, if any).
    - ``search_layer``: restrict the searches to one layer (default: all layers).
    - ``k`` hits per query, ``n_thumbs`` crops per hit, ``thumb_px`` thumbnail size,
      ``map_thumbs`` components of the map with a hover thumbnail (most relevant first),
      ``n_spurious`` spurious components whose samples are shown, ``title``, ``progress``.

    The file embeds BokehJS (about 1.3 MB) and PNG thumbnails; it opens offline.
    """
    page = render_report(lens, **kwargs)
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"report path {str(path)!r} is a directory; give a file name like report.html")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(page)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
