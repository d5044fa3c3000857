"""The measures section: clarity, polysemanticity and redundancy per layer, and one point per component."""
from __future__ import annotations

import math

import pandas as pd

from ._html import label_text, table



def measures_section(lens, layers, labels_by_layer):
    """The bars of the per-layer measures (``lens.measures_summary``), the clarity vs
    polysemanticity scatter (``lens.measures``) and the text; returns ``(figure, html)``."""
    from bokeh.layouts import row
    from bokeh.models import ColumnDataSource, FactorRange, HoverTool
    from bokeh.palettes import Category10
    from bokeh.plotting import figure
    from bokeh.transform import factor_cmap

    frames = []
    for layer in layers:
        df = pd.DataFrame(lens.measures(layer)).copy()
        df["layer"] = str(layer)
        labels = labels_by_layer.get(layer)
        if labels is not None:
            df["label"] = [label_text(labels.get(int(k))) for k in df["component"]]
        else:
            df["label"] = [label_text(v) for v in df["label"]]
        frames.append(df)
    summary = pd.DataFrame(lens.measures_summary(layers)).rename(
        columns={"n_components": "components", "clarity": "mean clarity", "polysemanticity": "mean polysemanticity"}
    )
    summary["layer"] = summary["layer"].astype(str)
    summary = summary.set_index("layer").loc[[str(l) for l in layers]].reset_index()

    metrics = ["mean clarity", "mean polysemanticity", "redundancy"]
    x = [(str(layer), m) for layer in layers for m in metrics]
    vals = [float(summary.loc[i, m]) for i in range(len(summary)) for m in metrics]
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
    sc.xaxis.axis_label = "clarity (paper eq. 7)"
    sc.yaxis.axis_label = "polysemanticity (paper eq. 10)"
    fig = row(bars, sc, name="semlens_measures")

    text = (
        "<p>The measures of the SemanticLens paper. <b>Clarity</b> (eq. 7): how similar a "
        "component's concept examples are to each other in the foundation model's space (1 = one "
        "clear concept). <b>Polysemanticity</b> (eq. 10): its examples are split in two clusters "
        "(2-means); 1 minus the cosine of the two cluster means (high = the component mixes several "
        "concepts). <b>Redundancy</b> (eq. 9): mean over components of the cosine to their most "
        "similar other component (high = many near-duplicates).</p>"
        + table(summary, ["layer", "components", *metrics], css="data measures")
    )
    return fig, text
