"""The audit section: a_valid vs a_spur per component, the per-category summary, and the samples
behind spurious components."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from semlens_widgets.results import AuditResult

from ._html import (AUDIT_COLORS, class_name, e, hover_template, img_tag, label_text, names_list, progress_bar,
                    scatter_figure, sizes, table)
from ._thumbs import png_strip

def resolve_audit(lens, audit, layer):
    if audit is None:
        return None
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


def audit_plot(res, lens, thumbs, n_thumbs, progress):
    from bokeh.models import ColumnDataSource, HoverTool, Span
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
        "label": [label_text(v) for v in t.get("label", pd.Series([None] * len(t)))],
        "best_valid": [label_text(v) for v in t.get("best_valid", pd.Series([None] * len(t)))],
        "best_spur": [label_text(v) for v in t.get("best_spur", pd.Series([None] * len(t)))],
    }
    data["size"] = sizes(data["relevance"])
    data["thumb"] = [
        thumbs.crops(res.layer, int(k), n_thumbs)
        for k in progress_bar(comps, len(comps), "audit thumbnails", progress)
    ]
    factors = [c for c in AUDIT_COLORS if c in set(data["category"])]
    src = ColumnDataSource(data)
    p = scatter_figure("semlens_audit", f"Audit of {class_name(lens, res.target)} in {res.layer}", len(comps))
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
            tooltips=hover_template(
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


def audit_html(res, lens, thumbs, n_thumbs, n_spurious, sample_px):
    summary = res.summary.copy()
    parts = [
        f"<p>Audited class: <b>{e(class_name(lens, res.target))}</b>, layer "
        f"<b>{e(res.layer)}</b>. Valid concepts: {names_list(res.valid)}. "
        f"Spurious concepts: {names_list(res.spurious)}.</p>",
        "<p>Each point is a component. x = how well it aligns with the best valid concept, "
        "y = with the best spurious concept (cosine minus the empty-prompt baseline, SemanticLens "
        "paper section 3.4); the size is its relevance for the class (CRP). Large red points are what the "
        "model relies on for the wrong reason.</p>",
        "<h3>Per-category summary</h3>",
        table(summary, ["category", "n_components", "relevance", "share"], css="data summary"),
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
                samples = img_tag(
                    png_strip(lens.images(idx_list), sample_px, len(idx_list)),
                    f"dataset samples behind component {k}",
                )
                ids = ", ".join(str(i) for i in idx_list)
                samples += f'<div class="small">dataset indices: {e(ids)}' + (
                    f" (+{len(idx) - len(idx_list)} more)" if len(idx) > len(idx_list) else ""
                ) + "</div>"
            parts.append(
                '<div class="spurious">'
                f"<div><b>{e(res.layer)} #{k}</b> &middot; {e(row['category'])} &middot; "
                f"label <span class=\"label\">{e(label_text(row.get('label')))}</span> &middot; "
                f"a_spur {float(row['a_spur']):.3f} ({e(label_text(row.get('best_spur')))}) "
                f"&middot; relevance {float(row['relevance']):.4f}</div>"
                f'<div class="small">concept examples</div>{img_tag(crops, f"concept examples of {k}")}'
                + (f'<div class="small">full samples</div>{samples}' if samples else "")
                + "</div>"
            )
    else:
        parts.append("<p><em>No component falls in the spurious or both categories.</em></p>")
    return "".join(parts)
