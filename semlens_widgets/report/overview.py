"""The head of the report: what was analysed, and the findings at a glance (one card each)."""
from __future__ import annotations

import os
from collections.abc import Mapping

import pandas as pd

from ._context import ReportContext
from ._html import class_name, e, pct, table
from .audit import _shares


def fm_text(fm) -> str:
    ident = getattr(fm, "identity", None)
    if not isinstance(ident, Mapping):  # the essentials only: the identity also holds long hashes
        return "–"
    parts = [str(ident.get("name", "?"))]
    pre = ident.get("pretrained")
    if pre:
        parts.append(f"pretrained={os.path.basename(str(pre))}")
    if ident.get("dim"):
        parts.append(f"dim={ident['dim']}")
    return ", ".join(parts)


def _card(title: str, big: str, text: str, href: str | None = None) -> str:
    link = f' <a href="#{e(href)}">more</a>' if href else ""
    return (f'<div class="glance" data-testid="glance"><div class="glance-title">{e(title)}</div>'
            f'<div class="glance-big">{big}</div><div class="small">{text}{link}</div></div>')


def overview_html(ctx: ReportContext) -> str:
    lens = ctx.lens
    n = {l: int(lens.num_components(l)) for l in ctx.layers}
    cards = [_card("components analysed", f"{sum(n.values())}",
                   f"in {len(ctx.layers)} layer{'s' if len(ctx.layers) > 1 else ''}: "
                   + ", ".join(f"{e(l)} ({c})" for l, c in n.items())
                   + f"; {int(lens.n_samples)} samples, m = {int(lens.m)} concept examples each")]
    res = ctx.labels.get(ctx.layer)
    if res is not None:
        lab = int(res.table["label"].notna().sum())
        cards.append(_card(f"labels of {ctx.layer}", pct(lab / max(1, n[ctx.layer])),
                           f"of the components carry one of {len(ctx.concepts or [])} concepts; "
                           f"{len(res.counts)} concepts found, {len(res.gaps)} gaps", "labels"))
    else:
        cards.append(_card("labels", "none", "no vocabulary: call lens.set_vocabulary(concepts) or pass "
                           "concepts=[...] to label components, search for concepts and find gaps"))
    for j, a in enumerate(ctx.audits):
        sh = _shares(a)
        cards.append(_card(f"audit of {class_name(lens, a.target)}", pct(sh["spurious"] + sh["both"]),
                           f"of its relevance in {e(a.layer)} is carried by components aligned with "
                           "spurious concepts", f"audit-{j}"))
    if not ctx.audits:
        cards.append(_card("audit", "not configured",
                           "pass audit=dict(valid=[...], spurious=[...], target=CLASS) to check what a class "
                           "relies on"))
    s = ctx.measures_summary().set_index("layer")
    if ctx.layer in s.index:
        cards.append(_card(f"measures of {ctx.layer}", f"{float(s.loc[ctx.layer, 'clarity']):.2f}",
                           f"mean clarity (paper eq. 7); redundancy {float(s.loc[ctx.layer, 'redundancy']):.2f} "
                           "(eq. 9)", "measures"))
    overview = pd.DataFrame([{"layer": l, "components": c} for l, c in n.items()])
    return f'<div class="glances">{"".join(cards)}</div>' + (
        table(overview, ["layer", "components"], css="data overview") if len(n) > 4 else "")
