"""The faithfulness section: how well each layer's labels describe what drives its components.

Shown when ``lens.faithfulness(layer, generator)`` was computed for a layer of the lens (the
report never runs a generator: it reads ``lens.stored_faithfulness(layer)``, the last table of
each layer); absent otherwise.
"""
from __future__ import annotations

import math

import pandas as pd

from ._html import e, table

#: components whose label AUC is below this are listed as "labels that do not hold"
WEAK_AUC = 0.6
#: at most this many rows per table
MAX_ROWS = 30


def faithfulness_tables(lens, layers) -> dict[str, pd.DataFrame]:
    """``{layer: stored faithfulness table}`` of the layers that have one."""
    out = {}
    for layer in layers:
        t = lens.stored_faithfulness(layer)
        if t is not None and len(t):
            out[str(layer)] = pd.DataFrame(t)
    return out


def faithfulness_section(lens, layers) -> str | None:
    """The section's HTML (summary per layer, per-label AUCs, labels that do not hold), or None
    when no layer has a faithfulness table."""
    tables = faithfulness_tables(lens, layers)
    if not tables:
        return None
    rows = []
    for layer, t in tables.items():
        auc = t["auc"].astype(float)
        scored = auc.notna()
        labelled = t["label"].notna()
        rows.append({
            "layer": layer,
            "components": len(t),
            "labelled": int(labelled.sum()),
            "scored": int(scored.sum()),
            "mean AUC": float(auc[scored].mean()) if scored.any() else math.nan,
            "median AUC": float(auc[scored].median()) if scored.any() else math.nan,
            "share AUC >= 0.9": float((auc[scored] >= 0.9).mean()) if scored.any() else math.nan,
            "not drawable": int((labelled & ~scored).sum()),
        })
    summary = pd.DataFrame(rows)
    html = [
        "<p><b>Label faithfulness</b> (the SemanticLens paper's evaluation of its labels, CoSy's AUC): "
        "for every labelled component, the AUC with which its activation separates images generated "
        "for its label from control images of the dataset. 0.5 means the label says nothing about what "
        "drives the component, 1.0 that the component always responds more to images of its label. "
        "The paper reports mean label AUCs of 0.84 (ResNet-50 neurons) to 0.94 (TopK sparse-autoencoder "
        "latents). <i>not drawable</i>: labels the generator could not draw.</p>",
        table(summary, list(summary.columns), css="data faithfulness"),
    ]
    for layer, t in tables.items():
        scored = t[t["auc"].notna()]
        if scored.empty:
            continue
        per_label = (scored.groupby("label")["auc"].agg(["size", "mean", "min"]).reset_index()
                     .rename(columns={"size": "components", "mean": "mean AUC", "min": "lowest AUC"})
                     .sort_values(["mean AUC", "label"], ascending=[False, True]))
        html.append(f"<h3>{e(layer)}: AUC per label</h3>")
        html.append(table(per_label.head(MAX_ROWS), ["label", "components", "mean AUC", "lowest AUC"]))
        weak = scored[scored["auc"] < WEAK_AUC].sort_values(["auc", "component"])
        html.append(f"<h3>{e(layer)}: labels that do not hold (AUC &lt; {WEAK_AUC})</h3>")
        if weak.empty:
            html.append("<p><em>none</em></p>")
        else:
            html.append(table(weak.head(MAX_ROWS), ["component", "label", "auc"]))
            if len(weak) > MAX_ROWS:
                html.append(f"<p class=\"small\">{len(weak) - MAX_ROWS} more not shown.</p>")
    return "".join(html)
