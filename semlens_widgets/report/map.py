"""The semantic-map section: a UMAP of the component embeddings, coloured by label or audit category."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ._html import AUDIT_COLORS, BLANK_PNG, OTHER, UNLABELLED, hover_template, label_text, progress_bar, scatter_figure, sizes

def map_section(lens, layer, labels, audit_table, thumbs, map_thumbs, progress):
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.palettes import Category20
    from bokeh.transform import factor_cmap

    coords = lens.map(layer)
    n = len(coords)
    components = coords["component"].astype(int).to_numpy()
    label_of = labels or {}
    text_labels = [label_text(label_of.get(int(k))) for k in components]
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
        data["size"] = sizes(rel)
    else:
        counts = pd.Series([t for t in text_labels if t != UNLABELLED]).value_counts()
        top = list(counts.index[:18])
        group = [t if (t in top or t == UNLABELLED) else OTHER for t in text_labels]
        factors = top + [f for f in (OTHER, UNLABELLED) if f in set(group)]
        base = list(Category20[20])
        palette = [base[i % 18] for i in range(len(top))]
        palette += ["#9aa7b8" if f == OTHER else "#d0d0d0" for f in factors[len(top):]]
        data["group"] = group
        legend_title = "label"
        data["size"] = np.full(n, 9.0)

    order = np.arange(n)
    if audit_table is not None:
        order = np.argsort(-data["relevance"], kind="stable")
    with_thumb = set(order[: max(0, int(map_thumbs))].tolist())
    data["thumb"] = [
        thumbs.crops(layer, int(components[i]), 1) if i in with_thumb else BLANK_PNG
        for i in progress_bar(range(n), n, f"map thumbnails {layer}", progress)
    ]

    src = ColumnDataSource(data)
    p = scatter_figure("semlens_map", f"Semantic map of {layer}: UMAP of the component embeddings", n)
    p.scatter(
        "x", "y", source=src, size="size", alpha=0.8, line_color="white", line_width=0.5,
        color=factor_cmap("group", palette=palette, factors=factors),
        legend_field="group",
    )
    fields = [("component", "@layer #@component"), ("label", "@label")]
    if audit_table is not None:
        fields += [("category", "@group"), ("relevance", "@relevance{0.000}")]
    p.add_tools(HoverTool(tooltips=hover_template(fields)))
    p.legend.title = legend_title
    p.legend.label_text_font_size = "9pt"
    p.add_layout(p.legend[0], "right")
    p.xaxis.axis_label = "UMAP 1"
    p.yaxis.axis_label = "UMAP 2"
    return p
