"""The semantic-map section: a UMAP of the component embeddings theta_k of one layer, coloured by
label, the names of the labels written where their components cluster, and a side panel with
the crops of the component under the mouse."""
from __future__ import annotations

from typing import Any

import numpy as np

from ._context import ReportContext, Section
from ._html import (UNLABELLED, attach_peek, category_colors, e, label_text, padded, peek_panel, scatter_figure,
                    shorten_gaps)

#: crops in the side panel
PEEK_N = 5
#: a label's name is written on the map when it has this many components ...
NAME_MIN = 3
#: ... and half of them lie within this fraction of the map's diagonal from their medoid
NAME_SPREAD = 0.12


def cluster_names(x: np.ndarray, y: np.ndarray, groups: list[str]) -> list[tuple[str, float, float, str]]:
    """(name, x, y) of each label whose components cluster: at its medoid, when the median
    distance of its members to the medoid is below ``NAME_SPREAD`` of the map's diagonal; a name
    that would cover one already placed (largest groups first) moves below its point, or is left
    to the legend. The 4th item is the text alignment: "right" (the name left of its point) near
    the right edge."""
    w, h = float(np.ptp(x)) or 1.0, float(np.ptp(y)) or 1.0
    diag = float(np.hypot(w, h))
    g = np.asarray(groups, dtype=object)
    names = [n for n in dict.fromkeys(groups) if n != UNLABELLED and not n.startswith("(")]
    names.sort(key=lambda n: -int(np.sum(g == n)))
    placed: list[tuple[str, float, float]] = []
    boxes: list[tuple[float, float, float, float]] = []
    for name in names:
        idx = np.nonzero(g == name)[0]
        if len(idx) < NAME_MIN:
            continue
        pts = np.stack([x[idx], y[idx]], 1)
        d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1))
        med = int(np.argmin(d.sum(1)))
        if np.median(d[med]) > NAME_SPREAD * diag:
            continue
        px, py = float(pts[med, 0]), float(pts[med, 1])
        bw, bh = (0.012 * len(name) + 0.01) * w, 0.045 * h  # the name's box, about 10pt on a ~1000 px map
        align = "right" if px + bw > x.max() + 0.03 * w else "left"
        x0 = px - bw if align == "right" else px
        for dy in (0.0, -1.2 * bh):
            box = (x0, py + dy, x0 + bw, py + dy + bh)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in boxes):
                boxes.append(box)
                placed.append((name, px, py + dy, align))
                break
    return placed


def map_section(ctx: ReportContext) -> Section:
    from bokeh.models import ColumnDataSource, HoverTool, LabelSet, Range1d
    from bokeh.transform import factor_cmap

    layer = ctx.layer
    coords = ctx.lens.map(layer)
    n = len(coords)
    comps = coords["component"].astype(int).to_numpy()
    x = shorten_gaps(coords["x"].astype(float).to_numpy())
    y = shorten_gaps(coords["y"].astype(float).to_numpy())
    label_of = ctx.label_of(layer)
    scores = ctx.label_scores(layer)
    labels = [label_text(label_of.get(int(k))) for k in comps]
    group, factors, palette = category_colors(labels)
    meas = ctx.measures(layer).set_index("component")

    # the components with pictures: labelled ones by score first, then the rest (at most map_thumbs)
    order = sorted(range(n), key=lambda i: (labels[i] == UNLABELLED, -scores.get(int(comps[i]), 0.0), i))
    with_thumb = set(order[: max(0, int(ctx.map_thumbs))])
    thumb = [ctx.sheet.component_class(layer, int(comps[i]), PEEK_N) if i in with_thumb else "" for i in range(n)]

    def text(i: int) -> str:
        k = int(comps[i])
        lines = [f"label: {labels[i]}" + (f" (score {scores[k]:.3f})" if k in scores and labels[i] != UNLABELLED else "")]
        if k in meas.index:
            lines.append(f"clarity {float(meas.loc[k, 'clarity']):.3f} · polysemanticity "
                         f"{float(meas.loc[k, 'polysemanticity']):.3f}")
        return "\n".join(lines)

    data: dict[str, Any] = {
        "x": x, "y": y, "component": comps, "layer": [layer] * n, "label": labels, "group": group,
        "thumb": thumb, "peek_title": [f"{layer} #{int(k)}" for k in comps], "peek_text": [text(i) for i in range(n)],
    }
    src = ColumnDataSource(data)
    xr, yr = padded(x), padded(y)
    p = scatter_figure(f"semlens_map_{layer}", f"Semantic map of {layer}: UMAP of the component embeddings", n,
                       height=560, x_range=Range1d(*xr), y_range=Range1d(*yr))
    r = p.scatter("x", "y", source=src, size=10, alpha=0.85, line_color="white", line_width=0.6,
                  color=factor_cmap("group", palette=palette, factors=factors), legend_field="group")
    names = cluster_names(x, y, group)
    if names:
        nsrc = ColumnDataSource({"name": [t[0] for t in names], "x": [t[1] for t in names], "y": [t[2] for t in names],
                                 "align": [t[3] for t in names], "dx": [6 if t[3] == "left" else -6 for t in names]})
        p.add_layout(LabelSet(x="x", y="y", text="name", source=nsrc, text_font_size="10pt", text_font_style="bold",
                              x_offset="dx", y_offset=4, text_align="align", background_fill_color="white", background_fill_alpha=0.65,
                              text_color="#222"))
    p.add_tools(HoverTool(renderers=[r], tooltips=[("", "@layer #@component"), ("label", "@label")]))
    attach_peek(p, src, f"peek-map-{layer}", renderers=[r])
    p.legend.title = "label"
    p.legend.label_text_font_size = "10pt"
    p.legend.glyph_height = p.legend.glyph_width = 14
    p.legend.spacing = 0
    if len(factors) > 18:
        p.legend.ncols = 2
    p.add_layout(p.legend[0], "right")
    p.xaxis.axis_label = "UMAP 1 (gaps shortened)"
    p.yaxis.axis_label = "UMAP 2 (gaps shortened)"

    sec = Section("map", "Semantic map")
    sec.html(
        f"<p>Each point is one of the {n} components of <b>{e(layer)}</b>, placed by a 2-D UMAP "
        "projection of its semantic embedding: components that encode similar concepts lie close "
        "together. Colour: the component's label; names are written where a label's components "
        "cluster. Empty gaps between distant islands are shortened (distances inside a cluster are "
        "kept), so the axes have no unit. Hover a point to see its concept examples in the panel "
        "beside the map.</p>"
    )
    sec.plot(p, peek_panel(f"peek-map-{layer}", "hover a point", PEEK_N, ctx.sheet.px))
    return sec
