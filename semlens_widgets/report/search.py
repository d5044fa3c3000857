"""The search section (paper eq. 4): for each query (the vocabulary's concepts unless queries
are given) the best components over the layers, each with a strip of its concept examples."""
from __future__ import annotations

from ._context import ReportContext, Section
from ._html import e, label_text
from .labels import card

#: display height of the crops in a search strip (px)
HEIGHT = 48


def check_queries(queries) -> list[str]:
    """The report's queries: text only (image probes work in lens.search and the SearchBox)."""
    if queries is None:
        return []
    if isinstance(queries, str):
        queries = [queries]
    out = []
    for q in queries:
        if not isinstance(q, str):
            raise TypeError(
                f"report queries must be text strings, got {type(q).__name__} ({q!r:.60}); "
                "image probes work in lens.search() and the SearchBox widget"
            )
        out.append(q)
    return out


def search_section(ctx: ReportContext) -> Section | None:
    if not ctx.queries:
        return None
    sec = Section("search", "Search")
    where = "all layers" if ctx.search_layer is None else f"layer {ctx.search_layer}"
    what = ("the concepts of the vocabulary" if ctx.queries_from == "vocabulary" else "the given queries")
    sec.html(
        f"<p>Searches for {e(what)} over {e(where)}. Each query is embedded with the foundation "
        "model's text encoder (mean over prompt templates); components are ranked by the cosine of "
        "their semantic embedding to it minus the cosine of the empty prompt (SemanticLens paper, "
        f"eq. 4). The best {ctx.k} components of each query with a positive score are shown, best "
        "first; a component whose score is not positive matches the query no better than an empty "
        "caption and is left out.</p>"
    )
    rows, empty = [], []
    for q in ctx.queries:
        hits = ctx.lens.search(q, layer=ctx.search_layer, k=ctx.k)
        good = hits[hits["score"].astype(float) > 0]
        if not len(good):
            empty.append(q)
            continue
        cards = []
        for _, h in good.iterrows():  # hits come ranked
            layer, comp = str(h["layer"]), int(h["component"])
            lab = label_text(h.get("label"))
            cap = (f'{e(layer)} #{comp} &middot; <span class="num">{float(h["score"]):.3f}</span>'
                   f'<br><span class="label">{e(lab)}</span>')
            cards.append(card(ctx, layer, comp, cap, height=HEIGHT))
        dropped = len(hits) - len(good)
        note = f'<div class="small">{dropped} of the top {len(hits)} no better than the empty prompt</div>' if dropped else ""
        rows.append(
            f'<div class="qrow" data-testid="search-row"><div class="qname"><q class="query-text">{e(q)}</q>'
            f"{note}</div><div class=\"cards\">{''.join(cards)}</div></div>"
        )
    if rows:
        sec.html(f'<div class="strips">{"".join(rows)}</div>')
    if empty:
        sec.html('<p data-testid="search-empty">No component scores above the empty prompt for: '
                 + " ".join(f'<q class="query-text">{e(q)}</q>' for q in empty) + "</p>")
    return sec
