"""The measures section: clarity (paper eq. 7), polysemanticity (eq. 10) and redundancy (eq. 9)
per layer, one point per component, and the clearest and the most polysemantic components."""
from __future__ import annotations

import math

import pandas as pd

from ._context import ReportContext, Section
from ._html import PALETTE, e, label_text, style, table
from .labels import card

METRICS = ["mean clarity", "mean polysemanticity", "redundancy"]
#: components shown as the clearest / most polysemantic of the main layer
EXTREMES = 4


def measures_section(ctx: ReportContext) -> Section:
    from bokeh.layouts import row
    from bokeh.models import ColumnDataSource, FactorRange, HoverTool
    from bokeh.plotting import figure
    from bokeh.transform import factor_cmap

    layers = ctx.layers
    frames = []
    for layer in layers:
        df = ctx.measures(layer).copy()
        df["layer"] = str(layer)
        labels = ctx.label_of(layer)
        df["label"] = [label_text(labels.get(int(k)) if labels else v) for k, v in
                       zip(df["component"], df["label"] if "label" in df.columns else [None] * len(df))]
        frames.append(df)
    summary = ctx.measures_summary().rename(
        columns={"n_components": "components", "clarity": "mean clarity", "polysemanticity": "mean polysemanticity"})

    x = [(str(layer), m) for layer in layers for m in METRICS]
    vals = [float(summary.loc[i, m]) for i in range(len(summary)) for m in METRICS]
    bars = figure(name="semlens_measures_bars", x_range=FactorRange(*x), height=380, sizing_mode="stretch_width",
                  title="Measures per layer", tools="save", toolbar_location=None)
    bsrc = ColumnDataSource({"x": x, "value": [0.0 if math.isnan(v) else v for v in vals]})
    bars.vbar(x="x", top="value", width=0.85, source=bsrc, line_color="white",
              fill_color=factor_cmap("x", palette=PALETTE[:3], factors=METRICS, start=1, end=2))
    bars.add_tools(HoverTool(tooltips=[("", "@x"), ("value", "@value{0.000}")]))
    bars.xaxis.major_label_orientation = 0.6
    bars.y_range.start = 0
    style(bars)
    bars.xaxis.group_text_font_size = "11pt"

    allm = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    sc = figure(name="semlens_measures_scatter", height=380, sizing_mode="stretch_width",
                title="Clarity vs polysemanticity, one point per component", tools="pan,wheel_zoom,box_zoom,reset,save")
    style(sc)
    if len(allm):
        ssrc = ColumnDataSource({
            "x": allm["clarity"].astype(float).to_numpy(), "y": allm["polysemanticity"].astype(float).to_numpy(),
            "layer": allm["layer"].astype(str).tolist(), "component": allm["component"].astype(int).to_numpy(),
            "label": allm["label"].tolist(),
        })
        factors = [str(l) for l in layers]
        sc.scatter("x", "y", source=ssrc, size=7, alpha=0.7,
                   color=factor_cmap("layer", palette=[PALETTE[i % len(PALETTE)] for i in range(len(factors))],
                                     factors=factors), legend_field="layer")
        sc.add_tools(HoverTool(tooltips=[("", "@layer #@component"), ("label", "@label"),
                                         ("clarity", "@x{0.000}"), ("polysemanticity", "@y{0.000}")]))
        sc.legend.title = "layer"
    sc.xaxis.axis_label = "clarity (paper eq. 7)"
    sc.yaxis.axis_label = "polysemanticity (paper eq. 10)"
    fig = row(bars, sc, name="semlens_measures", sizing_mode="stretch_width")

    sec = Section("measures", "Measures")
    sec.html(
        "<p>How interpretable the components are, with the measures of the SemanticLens paper. "
        "<b>Clarity</b> (eq. 7): how similar a component's concept examples are to each other in the "
        "foundation model's space (1 = one clear concept). <b>Polysemanticity</b> (eq. 10): its "
        "examples split in two clusters (2-means); 1 minus the cosine of the two cluster means (high = "
        "the component mixes several concepts). <b>Redundancy</b> (eq. 9): the mean over components "
        "of the cosine to their most similar other component (high = many near-duplicates).</p>"
        + table(summary, ["layer", "components", *METRICS], css="data measures")
    )
    sec.plot(fig)
    main = next((f for f in frames if f["layer"].iloc[0] == ctx.layer), None) if frames else None
    if main is not None and len(main):
        for title, col, asc in (("clearest", "clarity", False), ("most polysemantic", "polysemanticity", False)):
            top = main.sort_values([col, "component"], ascending=[asc, True]).head(EXTREMES)
            cards = "".join(card(ctx, ctx.layer, int(r["component"]),
                                 f"#{int(r['component'])} &middot; {col} {float(r[col]):.3f}<br>"
                                 f'<span class="label">{e(r["label"])}</span>', height=48)
                            for _, r in top.iterrows())
            sec.html(f"<h4>The {title} components of {e(ctx.layer)}</h4><div class=\"cards\">{cards}</div>")
    return sec
