"""The attribution section (the paper's attribution graphs): for an audited (or chosen) class, the
concepts of each layer that its relevance flows through, and the strongest flows between them,
as tables with the crops of each concept's most typical component (the Sankey is the widget's
job; this is its summary)."""
from __future__ import annotations

import numpy as np

from ._context import ReportContext, Section
from ._html import bar, class_name, e, pct
from .labels import card

#: concept nodes listed per layer, and flows listed per class
NODES = 6
FLOWS = 8


def _node_name(row) -> str:
    return f"{row['label']} ({len(row['components'])})" if row["layer"] != "output" else str(row["label"])


def graph_section(ctx: ReportContext) -> Section | None:
    if not ctx.graph_targets:
        return None
    sec = Section("attribution", "Attribution")
    sec.html(
        "<p>Where the relevance of a class comes from (concept relevance propagation, CRP): the "
        "components of each layer are grouped by label into concept nodes; a node's share is its "
        "part of the layer's relevance for the class (negative: it speaks against the class), a "
        "flow's share its part of all relevance flowing into the next layer. Computed on the "
        "class's own samples; the AttributionSankey widget draws the whole graph.</p>"
    )
    for target in ctx.graph_targets:
        g = ctx.lens.attribution_graph(target, concepts=ctx.concepts)
        nodes = g.nodes.set_index("id")
        sec.html(f"<h3>{e(class_name(ctx.lens, g.target))}</h3>")
        cols = []
        for layer in g.layers:
            nd = g.nodes[g.nodes["layer"] == layer]
            if nd.empty:
                continue
            rel = nd["relevance"].astype(float).to_numpy()
            total = float(np.abs(rel).sum()) or 1.0
            rows = []
            for _, row in nd.assign(_r=rel).sort_values("_r", ascending=False).head(NODES).iterrows():
                share = float(row["relevance"]) / total
                comps = list(row["components"])
                strip = card(ctx, layer, int(comps[0]), f"#{int(comps[0])}", n=4, height=40) if comps and (row["labelled"] or len(comps) == 1) else ""
                rows.append(f'<tr><td class="label">{e(_node_name(row))}</td><td>{bar(abs(share), pct(share), "#4c78a8" if share >= 0 else "#e15759")}</td>'
                            f"<td>{strip}</td></tr>")
            cols.append(f'<div class="gcol"><h4>{e(layer)}</h4><table class="data nodes"><thead><tr><th>concept (components)</th>'
                        f"<th>share</th><th>example</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>")
        sec.html(f'<div class="gcols">{"".join(cols)}</div>')
        ed = g.edges[g.edges["weight"].astype(float) > 0].copy()
        if len(ed):
            ed["into"] = [str(nodes.loc[t, "layer"]) if t in nodes.index else "" for t in ed["target"]]
            ed["share"] = ed["weight"].astype(float) / ed.groupby("into")["weight"].transform("sum").astype(float)
            rows = []
            for _, r in ed.sort_values("weight", ascending=False).head(FLOWS).iterrows():
                s, t = nodes.loc[r["source"]], nodes.loc[r["target"]]
                rows.append(f'<tr><td>{e(s["layer"])} <span class="label">{e(s["label"])}</span> &rarr; {e(t["layer"])} '
                            f'<span class="label">{e(t["label"])}</span></td><td>{bar(float(r["share"]), pct(float(r["share"])))}</td></tr>')
            sec.html("<h4>Strongest flows</h4><table class=\"data flows\"><thead><tr><th>from &rarr; to</th>"
                     f"<th>share of the flow into its layer</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
    return sec
