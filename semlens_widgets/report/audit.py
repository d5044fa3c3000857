"""The audit section (paper section 3.4): per audited class, a_valid vs a_spur per component sized
by relevance and coloured by category, the share of the class's relevance per category, and the
concept examples and dataset samples behind the most relevant spurious components."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from semlens_widgets.results import AuditResult

from ._context import ReportContext, Section
from ._html import (AUDIT_COLORS, attach_peek, bar, class_name, e, label_text, names_list, pct, peek_panel,
                    scatter_figure, sizes)
from .labels import card

#: crops in the side panel
PEEK_N = 5
ACCEPTED = ("an AuditResult (from lens.audit), a dict with the keys valid, spurious and target (and "
            "optionally layer) passed to lens.audit, or a list of those")


def resolve_audits(lens, audit, layer) -> list[AuditResult]:
    """``audit=`` of the report -> the audit results to show (computed before anything is drawn)."""
    if audit is None:
        return []
    items = audit if isinstance(audit, (list, tuple)) else [audit]
    out = []
    for item in items:
        if isinstance(item, AuditResult):
            out.append(item)
        elif isinstance(item, Mapping):
            kw = dict(item)
            missing = [key for key in ("valid", "spurious", "target") if key not in kw]
            if missing:
                raise ValueError(f"audit= needs the keys valid, spurious and target; missing {missing} in {sorted(kw)}")
            unknown = sorted(set(kw) - {"valid", "spurious", "target", "layer"})
            if unknown:
                raise ValueError(f"audit= has unknown keys {unknown}; accepted keys: valid, spurious, target, layer")
            kw.setdefault("layer", layer)
            out.append(lens.audit(**kw))
        else:
            raise TypeError(f"audit= must be {ACCEPTED}; got {type(item).__name__} ({item!r:.60})")
    return out


def _shares(res: AuditResult) -> dict[str, float]:
    s = res.summary.set_index("category")
    return {c: float(s.loc[c, "share"]) if c in s.index else 0.0 for c in AUDIT_COLORS}


def verdict(res: AuditResult, lens) -> str:
    """One sentence: how much of the class's relevance the spurious components carry."""
    sh = _shares(res)
    s = res.summary.set_index("category")
    n = {c: int(s.loc[c, "n_components"]) if c in s.index else 0 for c in AUDIT_COLORS}
    spur = sh["spurious"] + sh["both"]
    return (f"In {e(res.layer)}, {n['spurious'] + n['both']} components aligned with a spurious concept carry "
            f"<b>{pct(spur)}</b> of the positive relevance for {e(class_name(lens, res.target))}; "
            f"{n['valid']} valid ones carry {pct(sh['valid'])}, and {n['unexpected']} components that "
            f"match neither list carry {pct(sh['unexpected'])}.")


def audit_plot(ctx: ReportContext, res: AuditResult, name: str, peek_id: str):
    from bokeh.models import ColumnDataSource, HoverTool, Label, Range1d, Span
    from bokeh.transform import factor_cmap

    t = res.table
    comps = t["component"].astype(int).to_numpy()
    rel = t["relevance"].astype(float).to_numpy()
    total = float(np.clip(rel, 0, None).sum()) or 1.0
    cat = [str(c) for c in t["category"]]
    lab = [label_text(v) for v in t.get("label", pd.Series([None] * len(t)))]
    bv = [label_text(v) for v in t.get("best_valid", pd.Series([None] * len(t)))]
    bs = [label_text(v) for v in t.get("best_spur", pd.Series([None] * len(t)))]
    av, asp = t["a_valid"].astype(float).to_numpy(), t["a_spur"].astype(float).to_numpy()
    data = {
        "x": av, "y": asp, "component": comps, "layer": [str(res.layer)] * len(t), "category": cat,
        "label": lab, "share": [pct(max(r, 0.0) / total, 1) for r in rel], "size": sizes(rel),
        "thumb": [ctx.sheet.component_class(res.layer, int(k), PEEK_N) for k in comps],
        "peek_title": [f"{res.layer} #{int(k)} · {c}" for k, c in zip(comps, cat)],
        "peek_text": [f"label: {l}\na_valid {a:.3f} ({v})\na_spur {s:.3f} ({w})\nshare of the class's relevance: "
                      f"{pct(max(r, 0.0) / total, 1)}" for l, a, v, s, w, r in zip(lab, av, bv, asp, bs, rel)],
    }
    order = np.argsort(-data["size"], kind="stable")  # big points first, small ones on top
    src = ColumnDataSource({k: [v[i] for i in order] for k, v in data.items()})
    factors = [c for c in AUDIT_COLORS if c in set(cat)]
    x0, x1 = _extent(av)
    y0, y1 = _extent(asp)
    p = scatter_figure(name, f"Audit of {class_name(ctx.lens, res.target)} in {res.layer}", len(t), height=520,
                       x_range=Range1d(x0, x1), y_range=Range1d(y0, y1))
    r = p.scatter("x", "y", source=src, size="size", alpha=0.75, line_color="black", line_width=0.4,
                  color=factor_cmap("category", palette=[AUDIT_COLORS[c] for c in factors], factors=factors),
                  legend_field="category")
    for dim in ("width", "height"):
        p.add_layout(Span(location=0, dimension=dim, line_color="#999", line_dash="dashed"))
    # where each category lies: spurious up-left, valid down-right, both up-right
    for text, x, y, ax, ay in (("spurious", x0, y1, "left", "top"), ("valid", x1, y0, "right", "bottom"),
                               ("both", x1, y1, "right", "top")):
        p.add_layout(Label(x=x, y=y, text=text, text_color="#888", text_font_size="10pt", text_align=ax,
                           text_baseline=ay, x_offset=6 if ax == "left" else -6, y_offset=-4 if ay == "top" else 4))
    p.add_tools(HoverTool(renderers=[r], tooltips=[("", "@layer #@component"), ("category", "@category"),
                                                    ("share", "@share")]))
    attach_peek(p, src, peek_id, renderers=[r])
    p.xaxis.axis_label = "a_valid: alignment with the best valid concept"
    p.yaxis.axis_label = "a_spur: alignment with the best spurious concept"
    p.legend.title = "category (size = relevance)"
    p.legend.label_text_font_size = "10pt"
    p.add_layout(p.legend[0], "right")
    return p


def _extent(v: np.ndarray) -> tuple[float, float]:
    """Axis extent of alignment scores: the data and 0, padded by 8 %."""
    v = np.asarray(v, dtype=float)
    v = v[np.isfinite(v)]
    lo, hi = min(0.0, float(v.min()) if v.size else 0.0), max(0.0, float(v.max()) if v.size else 1.0)
    d = (hi - lo) * 0.08 or 0.05
    return lo - d, hi + d


def audit_section(ctx: ReportContext) -> Section | None:
    if not ctx.audits:
        return None
    sec = Section("audit", "Audit")
    sec.html(
        "<p>An audit asks which components a class relies on, and whether they encode concepts that "
        "should matter (<i>valid</i>) or should not (<i>spurious</i>). Each point is a component: x = "
        "its alignment with the best valid concept, y = with the best spurious concept (cosine minus "
        "the empty prompt's, SemanticLens paper section 3.4), size = its relevance for the class "
        "(CRP). Components above 0 on one axis only are <i>valid</i> or <i>spurious</i>, above on both "
        "<i>both</i>, on neither <i>unexpected</i>. Large red points are what the model relies on for "
        "the wrong reason.</p>"
    )
    for j, res in enumerate(ctx.audits):
        sid = f"audit-{j}"
        sec.html(
            f'<h3 id="{sid}">{e(class_name(ctx.lens, res.target))} in {e(res.layer)}</h3>'
            f'<p class="verdict" data-testid="audit-verdict">{verdict(res, ctx.lens)}</p>'
            f"<p class=\"small\">Valid concepts: {names_list(res.valid)}. Spurious concepts: {names_list(res.spurious)}.</p>"
        )
        peek_id = f"peek-{sid}"
        p = audit_plot(ctx, res, f"semlens_audit_{j}", peek_id)
        sec.plot(p, peek_panel(peek_id, "hover a point", PEEK_N, ctx.sheet.px))
        rows = []
        for _, s in res.summary.iterrows():
            c = str(s["category"])
            rows.append(f'<tr><td><span class="dot" style="background:{AUDIT_COLORS.get(c, "#999")}"></span>{e(c)}</td>'
                        f"<td class=\"num\">{int(s['n_components'])}</td>"
                        f"<td>{bar(float(s['share']), pct(float(s['share']), 1), AUDIT_COLORS.get(c, '#999'))}</td></tr>")
        sec.html('<table class="data summary"><thead><tr><th>category</th><th>components</th>'
                 f"<th>share of the class's relevance</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
        t = res.table
        spur = t[t["category"].isin(["spurious", "both"])].sort_values("relevance", ascending=False)
        if not len(spur):
            sec.html("<p><em>No component falls in the spurious or both categories.</em></p>")
            continue
        total = float(np.clip(t["relevance"].astype(float), 0, None).sum()) or 1.0
        sec.html("<h4>The most relevant spurious components and the samples behind them</h4>")
        for _, row in spur.head(ctx.n_spurious).iterrows():
            k = int(row["component"])
            idx = res.spurious_samples.get(k) if res.spurious_samples else None
            samples = ""
            if idx is not None and len(idx):
                idx_list = [int(i) for i in list(idx)[: ctx.n_thumbs]]
                samples = ctx.sheet.samples(idx_list, height=72, title=f"dataset samples behind component {k}")
                samples += f'<div class="small">dataset indices: {e(", ".join(map(str, idx_list)))}' + (
                    f" (+{len(idx) - len(idx_list)} more)" if len(idx) > len(idx_list) else "") + "</div>"
            cap = (f"<b>{e(res.layer)} #{k}</b> &middot; {e(row['category'])} &middot; label "
                   f"<span class=\"label\">{e(label_text(row.get('label')))}</span> &middot; a_spur "
                   f"{float(row['a_spur']):.3f} ({e(label_text(row.get('best_spur')))}) &middot; "
                   f"{pct(max(float(row['relevance']), 0.0) / total, 1)} of the class's relevance")
            sec.html(f'<div class="spurious" data-component="{k}"><div>{cap}</div><div class="pair">'
                     f'<div><div class="small">concept examples (crops)</div>{card(ctx, res.layer, k, "")}</div>'
                     + (f'<div><div class="small">full samples</div>{samples}</div>' if samples else "")
                     + "</div></div>")
    return sec
